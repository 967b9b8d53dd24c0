import Crypto
import Foundation

/// A signed tree head (STH): the log's signature over (tree size, timestamp, root hash).
///
/// The signed bytes are `"STOQ-CT-STH-v1" || size (u64 BE) || timestamp (u64 BE, ms since 1970) ||
/// root (32 bytes)`; the signature is P-256 ECDSA (SHA-256) in DER form, by the log key whose
/// SHA-256(SubjectPublicKeyInfo) is ``logID``.
public struct SignedTreeHead: Hashable, Sendable, Codable {
    /// SHA-256 of the log's public key (SPKI DER).
    public var logID: NexusHash
    /// The number of entries the head covers.
    public var treeSize: UInt64
    /// When the head was signed, in milliseconds since the Unix epoch.
    public var timestamp: UInt64
    /// `MTH` of the first ``treeSize`` entries.
    public var rootHash: NexusHash
    /// DER-encoded ECDSA P-256 signature over ``signedBytes``.
    public var signature: [UInt8]

    /// Creates a head from its parts (no signature check).
    public init(logID: NexusHash, treeSize: UInt64, timestamp: UInt64, rootHash: NexusHash, signature: [UInt8]) {
        self.logID = logID; self.treeSize = treeSize; self.timestamp = timestamp; self.rootHash = rootHash; self.signature = signature
    }

    /// The bytes the signature covers.
    public var signedBytes: [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.raw(Array("STOQ-CT-STH-v1".utf8))
        w.u64(treeSize); w.u64(timestamp); w.hash(rootHash)
        return w.bytes
    }

    /// Signs a head with the log key.
    public static func sign(treeSize: UInt64, timestamp: UInt64, rootHash: NexusHash, key: P256.Signing.PrivateKey) throws(NexusError) -> SignedTreeHead {
        var sth = SignedTreeHead(logID: TransparencyLog.logID(of: key.publicKey), treeSize: treeSize, timestamp: timestamp, rootHash: rootHash, signature: [])
        do { sth.signature = Array(try key.signature(for: sth.signedBytes).derRepresentation) } catch {
            throw NexusError(.badSignature, "could not sign the tree head: \(error)")
        }
        return sth
    }

    /// Checks the signature and that the head comes from the log with `publicKey`.
    /// - Throws: ``NexusError`` `.badSignature`.
    public func verify(publicKey: P256.Signing.PublicKey) throws(NexusError) {
        guard logID == TransparencyLog.logID(of: publicKey) else {
            throw NexusError(.badSignature, "tree head is from log \(logID.shortHex)…, not from the log whose key you gave (\(TransparencyLog.logID(of: publicKey).shortHex)…)")
        }
        guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature),
              publicKey.isValidSignature(sig, for: signedBytes) else {
            throw NexusError(.badSignature, "tree head of size \(treeSize) has an invalid signature: it was altered or not signed by this log")
        }
    }
}

/// An SCT-like receipt: the log's signed promise that an entry is at `index`.
///
/// Signed bytes: `"STOQ-CT-SCT-v1" || index (u64) || timestamp (u64 ms) || leaf hash`.
public struct LogReceipt: Hashable, Sendable, Codable {
    /// SHA-256 of the log's public key.
    public var logID: NexusHash
    /// The entry's index in the log.
    public var index: UInt64
    /// When the entry was appended (ms since 1970).
    public var timestamp: UInt64
    /// `SHA-256(0x00 || entry)`.
    public var leafHash: NexusHash
    /// DER ECDSA P-256 signature over ``signedBytes``.
    public var signature: [UInt8]

    /// The bytes the signature covers.
    public var signedBytes: [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.raw(Array("STOQ-CT-SCT-v1".utf8))
        w.u64(index); w.u64(timestamp); w.hash(leafHash)
        return w.bytes
    }

    /// Checks the signature under the log key.
    /// - Throws: ``NexusError`` `.badSignature`.
    public func verify(publicKey: P256.Signing.PublicKey) throws(NexusError) {
        guard logID == TransparencyLog.logID(of: publicKey),
              let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature),
              publicKey.isValidSignature(sig, for: signedBytes) else {
            throw NexusError(.badSignature, "receipt for entry \(index) does not verify under this log's key")
        }
    }
}

/// Everything a client needs to check offline that an entry is in the log: the head, the index,
/// the leaf hash and the inclusion path.
public struct InclusionBundle: Hashable, Sendable, Codable {
    /// The signed tree head the proof is against.
    public var head: SignedTreeHead
    /// The entry's index.
    public var index: UInt64
    /// The entry's leaf hash.
    public var leafHash: NexusHash
    /// `PATH(index, D[head.treeSize])`.
    public var proof: [NexusHash]

    /// Creates a bundle.
    public init(head: SignedTreeHead, index: UInt64, leafHash: NexusHash, proof: [NexusHash]) {
        self.head = head; self.index = index; self.leafHash = leafHash; self.proof = proof
    }

    /// Verifies the head signature, then the inclusion path against the head's root.
    /// - Parameter publicKey: the log's public key.
    /// - Throws: ``NexusError`` `.badSignature`, `.invalidProof`, `.rootMismatch` or `.invalidIndex`.
    public func verify(publicKey: P256.Signing.PublicKey) throws(NexusError) {
        try head.verify(publicKey: publicKey)
        try Merkle.verifyInclusion(leafHash: leafHash, index: index, size: head.treeSize, proof: proof, root: head.rootHash)
    }

    /// Like ``verify(publicKey:)``, and also checks that `entry` is the logged entry.
    public func verify(entry: [UInt8], publicKey: P256.Signing.PublicKey) throws(NexusError) {
        guard Merkle.leafHash(entry) == leafHash else {
            throw NexusError(.notLogged, "the certificate's leaf hash \(Merkle.leafHash(entry).shortHex)… differs from the proof's \(leafHash.shortHex)…")
        }
        try verify(publicKey: publicKey)
    }
}

/// A consistency proof between two signed heads of the same log.
public struct ConsistencyBundle: Hashable, Sendable, Codable {
    /// The older head.
    public var old: SignedTreeHead
    /// The newer head.
    public var new: SignedTreeHead
    /// `PROOF(old.treeSize, D[new.treeSize])`.
    public var proof: [NexusHash]

    /// Creates a bundle.
    public init(old: SignedTreeHead, new: SignedTreeHead, proof: [NexusHash]) { self.old = old; self.new = new; self.proof = proof }

    /// Verifies both signatures and the proof.
    public func verify(publicKey: P256.Signing.PublicKey) throws(NexusError) {
        try old.verify(publicKey: publicKey)
        try new.verify(publicKey: publicKey)
        try Merkle.verifyConsistency(oldSize: old.treeSize, newSize: new.treeSize, oldRoot: old.rootHash, newRoot: new.rootHash, proof: proof)
    }
}

extension NexusHash: Codable {
    /// Decodes from a 64-digit hex string.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let h = NexusHash(hex: s) else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected 64 hex digits") }
        self = h
    }
    /// Encodes as a 64-digit hex string.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}
