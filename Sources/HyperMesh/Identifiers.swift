import Foundation
import Crypto

/// A 32-byte SHA-256 digest with hex and short display forms.
public struct Digest256: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let bytes: [UInt8]

    /// Wraps 32 bytes; returns nil for any other length.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    init(unchecked bytes: [UInt8]) { self.bytes = bytes }

    /// SHA-256 of `data`.
    public static func hashing<D: DataProtocol>(_ data: D) -> Digest256 {
        Digest256(unchecked: Array(SHA256.hash(data: data)))
    }

    /// Lower-case hex of all 32 bytes.
    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }
    /// The first 8 hex digits, for logs and tables.
    public var short: String { String(hex.prefix(8)) }
    public var description: String { hex }

    /// Parses 64 hex digits.
    public init?(hex: String) {
        let chars = Array(hex.utf8)
        guard chars.count == 64 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = Self.nibble(chars[i]), let lo = Self.nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        bytes = out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    public static func < (lhs: Digest256, rhs: Digest256) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}

/// A block's identity: SHA-256 of its sealed (encrypted) bytes, before padding and coding.
///
/// Reading a block checks the rebuilt ciphertext against it, so the id is also an end-to-end
/// integrity check that does not reveal the plaintext.
public typealias BlockID = Digest256

/// A storage node's identity: SHA-256 of its P-256 public key's SubjectPublicKeyInfo DER —
/// the same bytes as `STOQIdentity.NodeID`.
public typealias MeshNodeID = Digest256

extension Digest256 {
    /// The node id of a P-256 signing public key (SHA-256 of its SPKI DER).
    public init(nodeKey: P256.Signing.PublicKey) {
        self = Digest256.hashing(nodeKey.derRepresentation)
    }
}
