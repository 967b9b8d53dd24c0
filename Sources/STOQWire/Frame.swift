import NIOCore

/// One frame on a STOQ stream: `type: varint, length: varint, payload`.
///
/// Bulk bytes (chunk contents) do not travel in frames: a response header frame is followed by the raw
/// bytes until the stream's FIN, so nothing is copied into frames on the data path.
public struct Frame: Hashable, Sendable {
    /// The frame type (see ``FrameType``).
    public var type: FrameType
    /// The payload bytes.
    public var payload: ByteBuffer

    /// Creates a frame.
    public init(type: FrameType, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// Appends the encoded frame to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        VarInt.write(type.rawValue, to: &buffer)
        VarInt.write(UInt64(payload.readableBytes), to: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
    }
}

/// A frame type number.
///
/// Types are grouped by layer: `0x00–0x3f` STOQ core, `0x40–0x7f` Nexus, `0x80–0xbf` HyperMesh.
/// A type whose low two bits are `0b11` and that is at least `0x1000` is an optional extension that a
/// receiver ignores when it does not know it; any other unknown type is a protocol error.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Whether a receiver that does not know this type may skip it.
    public var isIgnorableWhenUnknown: Bool { rawValue >= 0x1000 && rawValue & 0x3 == 0x3 }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Incremental, bounded frame decoder: feed it bytes as they arrive, take whole frames out.
///
/// Sans-IO: it never reads a socket. It holds at most one partial frame.
public struct FrameDecoder: Sendable {
    /// The largest payload accepted; longer frames are refused before their bytes arrive.
    public let maximumPayloadLength: Int
    private var buffer = ByteBuffer()

    /// Creates a decoder.
    /// - Parameter maximumPayloadLength: the bound for every frame's payload (default 4 MiB).
    public init(maximumPayloadLength: Int = 4 << 20) {
        self.maximumPayloadLength = maximumPayloadLength
    }

    /// Appends received bytes.
    public mutating func handle(bytes: ByteBuffer) {
        var bytes = bytes
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            buffer.writeBuffer(&bytes)
        }
    }

    /// The next whole frame, `nil` if more bytes are needed.
    /// - Throws: ``WireError`` when the frame's length exceeds the bound.
    public mutating func pollFrame() throws(WireError) -> Frame? {
        let bound = maximumPayloadLength
        return try pollFrame(limit: { _ in bound })
    }

    /// The next whole frame, `nil` if more bytes are needed, with a bound that depends on the
    /// frame's type (a server's request types have different limits): a frame whose declared
    /// length exceeds `limit(type)` (or ``maximumPayloadLength``) is refused as soon as its
    /// type and length are read, before any of its payload is waited for.
    /// - Throws: ``WireError`` `.tooLong` when the declared length exceeds the bound.
    public mutating func pollFrame(limit: (FrameType) -> Int) throws(WireError) -> Frame? {
        var view = buffer
        guard let type = VarInt.read(from: &view), let length = VarInt.read(from: &view) else { return nil }
        let bound = min(maximumPayloadLength, limit(FrameType(rawValue: type)))
        guard length <= UInt64(max(0, bound)) else {
            throw WireError(.tooLong, "frame \(FrameType(rawValue: type)) declares \(length) bytes; the limit is \(bound)")
        }
        guard let payload = view.readSlice(length: Int(length)) else { return nil }
        buffer = view
        if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
        return Frame(type: FrameType(rawValue: type), payload: payload)
    }

    /// Bytes received after the last whole frame (e.g. the raw body that follows a response header).
    public mutating func takeRemainingBytes() -> ByteBuffer {
        defer { buffer = ByteBuffer() }
        return buffer
    }

    /// Whether a partial frame is pending.
    public var hasPartialFrame: Bool { buffer.readableBytes > 0 }
}
