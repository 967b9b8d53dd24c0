import Crypto
import Foundation
import STOQIdentity

/// A 256-bit value: a SHA-256 digest, a DHT node id or a DHT record key.
///
/// Stored as four big-endian 64-bit words so that XOR distance, prefix length and ordering
/// are a handful of integer operations and a value costs 32 bytes inline (no heap).
public struct NexusHash: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The four 64-bit words, most significant first.
    public var w0, w1, w2, w3: UInt64

    /// Creates a value from its four words, most significant first.
    public init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// The all-zero value.
    public static let zero = NexusHash(0, 0, 0, 0)

    /// Creates a value from exactly 32 bytes.
    /// - Parameter bytes: 32 bytes, big-endian.
    /// - Returns: `nil` if `bytes` is not 32 bytes long.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 32 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, b) in bytes.enumerated() { words[i / 8] = (words[i / 8] << 8) | UInt64(b) }
        self.init(words[0], words[1], words[2], words[3])
    }

    /// Parses 64 hexadecimal digits.
    public init?(hex: String) {
        guard let decoded = Hex.decode(hex), decoded.count == 32 else { return nil }
        self.init(bytes: decoded)
    }

    /// SHA-256 of `data`.
    public static func sha256<D: DataProtocol>(_ data: D) -> NexusHash {
        NexusHash(bytes: Array(SHA256.hash(data: data)))!
    }

    /// The 32 bytes, big-endian.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(shift))) }
        }
        return out
    }

    /// Lower-case hexadecimal, 64 digits.
    public var hex: String { Hex.encode(bytes) }

    /// The first 8 hex digits, for logs.
    public var shortHex: String { String(hex.prefix(8)) }

    /// Hex form.
    public var description: String { hex }

    /// Bitwise XOR: the Kademlia distance between two ids.
    public static func ^ (a: NexusHash, b: NexusHash) -> NexusHash {
        NexusHash(a.w0 ^ b.w0, a.w1 ^ b.w1, a.w2 ^ b.w2, a.w3 ^ b.w3)
    }

    /// Unsigned big-endian ordering (so XOR distances compare as numbers).
    public static func < (a: NexusHash, b: NexusHash) -> Bool {
        if a.w0 != b.w0 { return a.w0 < b.w0 }
        if a.w1 != b.w1 { return a.w1 < b.w1 }
        if a.w2 != b.w2 { return a.w2 < b.w2 }
        return a.w3 < b.w3
    }

    /// The number of leading zero bits (256 for zero).
    public var leadingZeroBitCount: Int {
        if w0 != 0 { return w0.leadingZeroBitCount }
        if w1 != 0 { return 64 + w1.leadingZeroBitCount }
        if w2 != 0 { return 128 + w2.leadingZeroBitCount }
        if w3 != 0 { return 192 + w3.leadingZeroBitCount }
        return 256
    }

    /// The bit at position `i` (0 = most significant).
    public func bit(_ i: Int) -> Bool {
        let w: UInt64
        switch i >> 6 { case 0: w = w0; case 1: w = w1; case 2: w = w2; default: w = w3 }
        return (w >> UInt64(63 - (i & 63))) & 1 == 1
    }

    /// This value with bit `i` (0 = most significant) flipped.
    public func flippingBit(_ i: Int) -> NexusHash {
        let m: UInt64 = 1 << UInt64(63 - (i & 63))
        var r = self
        switch i >> 6 { case 0: r.w0 ^= m; case 1: r.w1 ^= m; case 2: r.w2 ^= m; default: r.w3 ^= m }
        return r
    }

    /// A mask with the first `bits` bits (0…256) set.
    public static func prefixMask(_ bits: Int) -> NexusHash {
        func word(_ n: Int) -> UInt64 { n <= 0 ? 0 : n >= 64 ? .max : ~(UInt64.max >> UInt64(n)) }
        return NexusHash(word(bits), word(bits - 64), word(bits - 128), word(bits - 192))
    }

    /// Bitwise AND.
    public static func & (a: NexusHash, b: NexusHash) -> NexusHash { NexusHash(a.w0 & b.w0, a.w1 & b.w1, a.w2 & b.w2, a.w3 & b.w3) }
    /// Bitwise OR.
    public static func | (a: NexusHash, b: NexusHash) -> NexusHash { NexusHash(a.w0 | b.w0, a.w1 | b.w1, a.w2 | b.w2, a.w3 | b.w3) }
    /// Bitwise NOT.
    public static prefix func ~ (a: NexusHash) -> NexusHash { NexusHash(~a.w0, ~a.w1, ~a.w2, ~a.w3) }

    /// Returns true if `a` is closer to `self` than `b` in the XOR metric.
    @inline(__always)
    public func isCloser(_ a: NexusHash, than b: NexusHash) -> Bool { (a ^ self) < (b ^ self) }
}

/// A DHT node id or record key: 256 bits, SHA-256 of a public key or of a name/content id.
public typealias NexusID = NexusHash
