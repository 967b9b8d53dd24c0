import Foundation

/// An IPv6 socket address (16-byte address and UDP port). IPv4 and v4-mapped addresses are refused.
public struct NexusAddress: Hashable, Sendable, CustomStringConvertible {
    /// The high 64 bits of the address.
    public var high: UInt64
    /// The low 64 bits of the address.
    public var low: UInt64
    /// The UDP port.
    public var port: UInt16

    /// Creates an address from its two halves and a port.
    public init(high: UInt64, low: UInt64, port: UInt16) throws(NexusError) {
        // ::ffff:0:0/96 (v4-mapped) is IPv4 in disguise: STOQ is IPv6 only.
        guard !(high == 0 && low >> 32 == 0xFFFF) else {
            throw NexusError(.invalidAddress, "IPv4-mapped addresses are not allowed; STOQ is IPv6 only")
        }
        (self.high, self.low, self.port) = (high, low, port)
    }

    /// Whether a node could be reached here: a port other than 0, and an address that is neither
    /// unspecified (`::`) nor multicast (`ff00::/8`). Records carry addresses their senders chose;
    /// the DHT dials only these (a dial to `[::1]:0` or `[ff02::1]` reached the transport's socket).
    public var isDialable: Bool {
        port != 0 && !(high == 0 && low == 0) && high >> 56 != 0xFF
    }

    /// Parses `[addr]:port` or a bare IPv6 address (port 0).
    /// - Throws: ``NexusError`` `.invalidAddress`, e.g. for an IPv4 address.
    public init(parsing text: String) throws(NexusError) {
        var addr = Substring(text), port: UInt16 = 0
        if addr.hasPrefix("[") {
            guard let close = addr.firstIndex(of: "]") else { throw NexusError(.invalidAddress, "missing ']' in \(text)") }
            let rest = addr[addr.index(after: close)...]
            addr = addr[addr.index(after: addr.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = UInt16(rest.dropFirst()) else { throw NexusError(.invalidAddress, "bad port in \(text); write [addr]:port") }
                port = p
            }
        }
        guard !addr.contains(".") else { throw NexusError(.invalidAddress, "\(text) looks like IPv4; STOQ is IPv6 only (use an address such as fd00::1)") }
        let halves = addr.components(separatedBy: "::")
        guard halves.count <= 2 else { throw NexusError(.invalidAddress, "\(text) has more than one '::'") }
        func groups(_ s: String) throws(NexusError) -> [UInt16] {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for g in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(g.count), let v = UInt16(g, radix: 16) else { throw NexusError(.invalidAddress, "\(text) is not an IPv6 address (bad group '\(g)')") }
                out.append(v)
            }
            return out
        }
        let head = try groups(halves[0])
        let tail = halves.count == 2 ? try groups(halves[1]) : []
        var all: [UInt16]
        if halves.count == 2 {
            guard head.count + tail.count <= 7 else { throw NexusError(.invalidAddress, "\(text) has too many groups") }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { throw NexusError(.invalidAddress, "\(text) needs 8 groups or '::'") }
            all = head
        }
        let hi = all[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let lo = all[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        try self.init(high: hi, low: lo, port: port)
    }

    /// The 16 address bytes.
    public var addressBytes: [UInt8] {
        var out: [UInt8] = []
        for i in 0..<16 {
            let word: UInt64 = i < 8 ? high : low
            let shift = UInt64(56 - 8 * (i % 8))
            out.append(UInt8(truncatingIfNeeded: word >> shift))
        }
        return out
    }

    /// `[addr]:port` with the longest zero run compressed (RFC 5952 style).
    public var description: String {
        var g: [UInt16] = []
        for i in 0..<8 {
            let word: UInt64 = i < 4 ? high : low
            g.append(UInt16(truncatingIfNeeded: word >> UInt64(48 - 16 * (i % 4))))
        }
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i; while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        let hex = g.map { String($0, radix: 16) }
        let text: String
        if bestStart >= 0 {
            text = hex[0..<bestStart].joined(separator: ":") + "::" + hex[(bestStart + bestLen)...].joined(separator: ":")
        } else { text = hex.joined(separator: ":") }
        return "[\(text)]:\(port)"
    }

    func encode(_ w: inout ByteWriter) { w.u64(high); w.u64(low); w.u16(port) }
    static func decode(_ r: inout ByteReader) throws(NexusError) -> NexusAddress {
        try NexusAddress(high: try r.u64("address"), low: try r.u64("address"), port: try r.u16("port"))
    }
}
