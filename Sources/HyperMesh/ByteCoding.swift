/// Big-endian writer used by the HyperMesh binary formats.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(s)) & 0xff)) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(s)) & 0xff)) } }
    mutating func raw<C: Collection>(_ v: C) where C.Element == UInt8 { bytes.append(contentsOf: v) }
    /// A u16 length then the bytes.
    mutating func blob16(_ v: [UInt8]) { u16(UInt16(v.count)); raw(v) }
}

/// Big-endian reader that never reads past the end; every read returns nil when short.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset == bytes.count }

    mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func u16() -> UInt16? {
        guard let a = take(2) else { return nil }
        return UInt16(a[0]) << 8 | UInt16(a[1])
    }
    mutating func u32() -> UInt32? {
        guard let a = take(4) else { return nil }
        return a.reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() -> UInt64? {
        guard let a = take(8) else { return nil }
        return a.reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, remaining >= n else { return nil }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
    /// A u16 length (at most `max`) then that many bytes.
    mutating func blob16(max: Int) -> [UInt8]? {
        guard let n = u16(), Int(n) <= max else { return nil }
        return take(Int(n))
    }
    mutating func digest() -> Digest256? { take(32).map(Digest256.init(unchecked:)) }
}
