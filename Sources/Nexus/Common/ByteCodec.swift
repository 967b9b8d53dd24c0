/// Appends big-endian integers and length-prefixed fields to a byte array.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes.append(contentsOf: b) }
    mutating func hash(_ h: NexusHash) { u64(h.w0); u64(h.w1); u64(h.w2); u64(h.w3) }
    /// A field with a one-byte length prefix; the caller guarantees `b.count <= 255`.
    /// (Audit, issue 11: every caller passes a bounded field — a region cut to 32 bytes, a `NexusName`
    /// of at most 253 — and decoded values were checked against the same bounds, so a peer cannot
    /// reach the precondition; nor `medium`'s: DHT messages, values and keys are capped far below 65,535.)
    mutating func short<C: Collection>(_ b: C) where C.Element == UInt8 { precondition(b.count <= 255); u8(UInt8(b.count)); raw(b) }
    /// A field with a two-byte length prefix; the caller guarantees `b.count <= 65535`.
    mutating func medium<C: Collection>(_ b: C) where C.Element == UInt8 { precondition(b.count <= 65535); u16(UInt16(b.count)); raw(b) }
}

/// Reads big-endian integers and length-prefixed fields, bounds-checking every read.
///
/// Every failure is a ``NexusError`` (`.malformedInput` or `.lengthLimitExceeded`), never a trap,
/// so it is safe on arbitrary bytes.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset == bytes.count }

    private mutating func take(_ n: Int, _ what: String) throws(NexusError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else {
            throw NexusError(.malformedInput, "truncated input while reading \(what): needed \(n) bytes, \(remaining) left")
        }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    mutating func u8(_ what: String) throws(NexusError) -> UInt8 { try take(1, what).first! }
    mutating func u16(_ what: String) throws(NexusError) -> UInt16 {
        let s = try take(2, what); return UInt16(s[s.startIndex]) << 8 | UInt16(s[s.startIndex + 1])
    }
    mutating func u32(_ what: String) throws(NexusError) -> UInt32 {
        try take(4, what).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64(_ what: String) throws(NexusError) -> UInt64 {
        try take(8, what).reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func raw(_ n: Int, _ what: String) throws(NexusError) -> [UInt8] { Array(try take(n, what)) }
    mutating func hash(_ what: String) throws(NexusError) -> NexusHash {
        NexusHash(try u64(what), try u64(what), try u64(what), try u64(what))
    }
    /// A one-byte-length field of at most `max` bytes.
    mutating func short(max: Int, _ what: String) throws(NexusError) -> [UInt8] {
        let n = Int(try u8(what))
        guard n <= max else { throw NexusError(.lengthLimitExceeded, "\(what) is \(n) bytes; at most \(max) allowed") }
        return try raw(n, what)
    }
    /// A two-byte-length field of at most `max` bytes.
    mutating func medium(max: Int, _ what: String) throws(NexusError) -> [UInt8] {
        let n = Int(try u16(what))
        guard n <= max else { throw NexusError(.lengthLimitExceeded, "\(what) is \(n) bytes; at most \(max) allowed") }
        return try raw(n, what)
    }
    /// A count byte of at most `max`.
    mutating func count(max: Int, _ what: String) throws(NexusError) -> Int {
        let n = Int(try u8(what))
        guard n <= max else { throw NexusError(.lengthLimitExceeded, "\(what) count is \(n); at most \(max) allowed") }
        return n
    }
    func expectEnd(_ what: String) throws(NexusError) {
        guard isAtEnd else { throw NexusError(.malformedInput, "\(remaining) trailing bytes after \(what)") }
    }
}
