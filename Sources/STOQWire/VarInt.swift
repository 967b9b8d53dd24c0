import NIOCore

/// QUIC variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, values up to 2^62 − 1.
public enum VarInt {
    /// The largest encodable value.
    public static let max: UInt64 = (1 << 62) - 1

    /// The number of bytes `value` takes.
    @inlinable
    public static func length(of value: UInt64) -> Int {
        switch value {
        case ..<(1 << 6): 1
        case ..<(1 << 14): 2
        case ..<(1 << 30): 4
        default: 8
        }
    }

    /// Appends `value`.
    /// - Precondition: `value <= VarInt.max` (a programming error otherwise: callers bound their values).
    ///
    /// Peer input never reaches the trap (audit, issue 11): every varint a node writes is either one
    /// it decoded as a varint (so at most `max`), a local count or size, or a value bounded where it
    /// entered — a name record's 8-byte version is refused above `max` by `NameRecord.decode`, and
    /// routing gossip caps versions with `min(_, max)` when it encodes. A new field that copies a
    /// fixed-width integer from a peer into a varint must be bounded the same way.
    @inlinable
    public static func write(_ value: UInt64, to buffer: inout ByteBuffer) {
        precondition(value <= max, "varint out of range")
        switch length(of: value) {
        case 1: buffer.writeInteger(UInt8(value))
        case 2: buffer.writeInteger(UInt16(value) | 0x4000)
        case 4: buffer.writeInteger(UInt32(value) | 0x8000_0000)
        default: buffer.writeInteger(value | 0xC000_0000_0000_0000)
        }
    }

    /// Reads a varint, or returns `nil` (consuming nothing) if the buffer ends first.
    @inlinable
    public static func read(from buffer: inout ByteBuffer) -> UInt64? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        switch first >> 6 {
        case 0:
            buffer.moveReaderIndex(forwardBy: 1)
            return UInt64(first)
        case 1:
            return buffer.readInteger(as: UInt16.self).map { UInt64($0 & 0x3FFF) }
        case 2:
            return buffer.readInteger(as: UInt32.self).map { UInt64($0 & 0x3FFF_FFFF) }
        default:
            return buffer.readInteger(as: UInt64.self).map { $0 & 0x3FFF_FFFF_FFFF_FFFF }
        }
    }
}
