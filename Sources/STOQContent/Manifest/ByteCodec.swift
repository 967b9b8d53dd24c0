/// Big-endian writer for the manifest formats.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes += b }
    mutating func id(_ i: ChunkID) { bytes += i.bytes }
}

/// Bounds-checked big-endian reader: every read checks the remaining length and throws `.malformed`.
struct ByteReader {
    let bytes: [UInt8]
    var pos = 0
    let what: String
    init(_ bytes: [UInt8], what: String) { self.bytes = bytes; self.what = what }

    var remaining: Int { bytes.count - pos }

    func fail(_ reason: String) -> ContentError {
        ContentError(.malformed, "\(what): \(reason) at byte \(pos) of \(bytes.count)")
    }
    mutating func need(_ n: Int) throws {
        guard n >= 0, remaining >= n else { throw fail("truncated (needs \(n) more bytes, \(remaining) left)") }
    }
    mutating func u8() throws -> UInt8 { try need(1); defer { pos += 1 }; return bytes[pos] }
    mutating func u16() throws -> UInt16 { try need(2); defer { pos += 2 }; return UInt16(bytes[pos]) << 8 | UInt16(bytes[pos + 1]) }
    mutating func u32() throws -> UInt32 {
        try need(4); defer { pos += 4 }
        return (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[pos + $1]) }
    }
    mutating func u64() throws -> UInt64 {
        try need(8); defer { pos += 8 }
        return (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[pos + $1]) }
    }
    mutating func raw(_ n: Int) throws -> ArraySlice<UInt8> { try need(n); defer { pos += n }; return bytes[pos..<(pos + n)] }
    mutating func id() throws -> ChunkID { ChunkID(bytes: try raw(32))! }
    func end() throws { guard remaining == 0 else { throw fail("\(remaining) trailing bytes") } }
}

/// RFC 4648 base32, lowercase, without padding.
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
    static func encode(_ data: [UInt8]) -> String {
        var out = [UInt8]()
        var buffer: UInt32 = 0, bits = 0
        for b in data {
            buffer = buffer << 8 | UInt32(b); bits += 8
            while bits >= 5 { bits -= 5; out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)]) }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }
    static func decode(_ s: String) -> [UInt8]? {
        var out = [UInt8]()
        var buffer: UInt32 = 0, bits = 0
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 97...122: v = UInt32(c - 97)
            case 65...90: v = UInt32(c - 65)
            case 50...55: v = UInt32(c - 50 + 26)
            default: return nil
            }
            buffer = buffer << 5 | v; bits += 5
            if bits >= 8 { bits -= 8; out.append(UInt8((buffer >> UInt32(bits)) & 0xFF)) }
        }
        // Leftover bits must be zero padding (canonical form only).
        if bits >= 5 || (buffer & ((1 << UInt32(bits)) - 1)) != 0 { return nil }
        return out
    }
}

/// A content id: the ``ChunkID`` of a root manifest, printed as `stoq:` + lowercase base32 (52 characters).
public struct ContentID: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    /// The manifest chunk's id.
    public let manifest: ChunkID
    /// Wraps a manifest id.
    public init(_ manifest: ChunkID) { self.manifest = manifest }
    /// `stoq:` + base32.
    public var description: String { "stoq:" + Base32.encode(manifest.bytes) }
    /// Parses `stoq:<base32>` (also accepts the 64-hex form of the manifest id, with or without `stoq:`).
    public init?(_ text: String) {
        var t = Substring(text.trimmingWhitespace)
        if t.hasPrefix("stoq:") { t = t.dropFirst(5) }
        if t.count == 64, let id = ChunkID(hex: String(t)) { self.manifest = id; return }
        guard t.count == 52, let b = Base32.decode(String(t)), let id = ChunkID(bytes: b) else { return nil }
        self.manifest = id
    }
    /// Orders by manifest id.
    public static func < (a: ContentID, b: ContentID) -> Bool { a.manifest < b.manifest }
}

extension String {
    var trimmingWhitespace: String {
        let u = Array(utf8)
        var lo = 0, hi = u.count
        while lo < hi, u[lo] == 32 || u[lo] == 9 || u[lo] == 10 || u[lo] == 13 { lo += 1 }
        while hi > lo, u[hi - 1] == 32 || u[hi - 1] == 9 || u[hi - 1] == 10 || u[hi - 1] == 13 { hi -= 1 }
        return String(decoding: u[lo..<hi], as: UTF8.self)
    }
}
