import NIOCore

/// Bounded field reader over one frame payload. Every read checks the remaining length.
///
/// Message codecs of every layer (STOQ, Nexus, HyperMesh) use it so that all decoders share one
/// audited set of bounds checks.
public struct WireReader {
    private var buffer: ByteBuffer
    /// What is being decoded, for error messages.
    public let context: String

    /// Reads from `payload`.
    public init(_ payload: ByteBuffer, context: String) {
        self.buffer = payload
        self.context = context
    }

    /// Bytes left.
    public var remaining: Int { buffer.readableBytes }

    /// A varint.
    public mutating func varint(_ field: String) throws(WireError) -> UInt64 {
        guard let value = VarInt.read(from: &buffer) else { throw truncated(field) }
        return value
    }

    /// A varint that must fit `bound`.
    public mutating func varint(_ field: String, max bound: UInt64) throws(WireError) -> UInt64 {
        let value = try varint(field)
        guard value <= bound else { throw WireError(.malformed, "\(context).\(field) = \(value) exceeds \(bound)") }
        return value
    }

    /// A fixed-width big-endian integer.
    public mutating func integer<T: FixedWidthInteger>(_ field: String, as: T.Type = T.self) throws(WireError) -> T {
        guard let value = buffer.readInteger(as: T.self) else { throw truncated(field) }
        return value
    }

    /// An IEEE-754 double (big-endian bit pattern); NaN and infinities are refused.
    public mutating func double(_ field: String) throws(WireError) -> Double {
        let value = Double(bitPattern: try integer(field, as: UInt64.self))
        guard value.isFinite else { throw WireError(.malformed, "\(context).\(field) is not a finite number") }
        return value
    }

    /// An IEEE-754 single (big-endian bit pattern); NaN and infinities are refused.
    public mutating func float(_ field: String) throws(WireError) -> Float {
        let value = Float(bitPattern: try integer(field, as: UInt32.self))
        guard value.isFinite else { throw WireError(.malformed, "\(context).\(field) is not a finite number") }
        return value
    }

    /// A finite single within `range`.
    public mutating func float(_ field: String, in range: ClosedRange<Float>) throws(WireError) -> Float {
        let value = try float(field)
        guard range.contains(value) else {
            throw WireError(.malformed, "\(context).\(field) = \(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// Exactly `count` bytes.
    public mutating func bytes(_ field: String, count: Int) throws(WireError) -> [UInt8] {
        guard count >= 0, let bytes = buffer.readBytes(length: count) else { throw truncated(field) }
        return bytes
    }

    /// A varint length followed by at most `max` bytes.
    public mutating func lengthPrefixedBytes(_ field: String, max bound: Int) throws(WireError) -> [UInt8] {
        let length = try varint(field)
        guard length <= UInt64(bound) else {
            throw WireError(.tooLong, "\(context).\(field) has \(length) bytes; the limit is \(bound)")
        }
        return try bytes(field, count: Int(length))
    }

    /// A varint length followed by at most `max` bytes of UTF-8.
    public mutating func string(_ field: String, max bound: Int) throws(WireError) -> String {
        let raw = try lengthPrefixedBytes(field, max: bound)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw WireError(.malformed, "\(context).\(field) is not UTF-8")
        }
        return text
    }

    /// The rest of the payload, as a slice (no copy).
    public mutating func rest() -> ByteBuffer {
        buffer.readSlice(length: buffer.readableBytes)!
    }

    /// Fails unless every byte was consumed.
    public func finish() throws(WireError) {
        guard buffer.readableBytes == 0 else {
            throw WireError(.trailingBytes, "\(context) has \(buffer.readableBytes) unexpected trailing bytes")
        }
    }

    private func truncated(_ field: String) -> WireError {
        WireError(.truncated, "\(context) ends inside \(field)")
    }
}

/// The writing counterpart of ``WireReader``.
public struct WireWriter {
    /// The bytes written so far.
    public private(set) var buffer: ByteBuffer

    /// Starts an empty payload.
    public init(capacity: Int = 64) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Appends a varint.
    public mutating func varint(_ value: UInt64) { VarInt.write(value, to: &buffer) }
    /// Appends a fixed-width big-endian integer.
    public mutating func integer<T: FixedWidthInteger>(_ value: T) { buffer.writeInteger(value) }
    /// Appends a double's bit pattern.
    public mutating func double(_ value: Double) { buffer.writeInteger(value.bitPattern) }
    /// Appends a single's bit pattern.
    public mutating func float(_ value: Float) { buffer.writeInteger(value.bitPattern) }
    /// Appends raw bytes.
    public mutating func bytes(_ bytes: some Sequence<UInt8>) { buffer.writeBytes(bytes) }
    /// Appends a varint length and the bytes.
    public mutating func lengthPrefixedBytes(_ bytes: some Collection<UInt8>) {
        varint(UInt64(bytes.count))
        buffer.writeBytes(bytes)
    }
    /// Appends a varint length and the UTF-8 bytes.
    public mutating func string(_ text: String) { lengthPrefixedBytes(Array(text.utf8)) }
}
