import Foundation
import Crypto
import STOQIdentity

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
    public var hex: String { Hex.encode(bytes) }
    /// The first 8 hex digits, for logs and tables.
    public var short: String { String(hex.prefix(8)) }
    public var description: String { hex }

    /// Parses 64 hex digits.
    public init?(hex: String) {
        guard let decoded = Hex.decode(hex), decoded.count == 32 else { return nil }
        bytes = decoded
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
