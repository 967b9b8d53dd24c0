import Crypto
import Foundation
import STOQIdentity

/// A storing node's signed statement that it holds one shard of a block.
///
/// The node signs, with its P-256 ECDSA node key, the message
/// `"stoq-hypermesh-receipt-v1" ‖ block id ‖ shard index (u16) ‖ shard SHA-256`. The receipt carries
/// the node's public key (SPKI DER); the signer's node id is SHA-256 of that DER, as in STOQIdentity.
///
/// Binary form: `"HMRC"` · version u8 · block id [32] · index u16 · shard hash [32] ·
/// u16 length + key DER (≤ 200) · u16 length + signature DER (≤ 80).
public struct StorageReceipt: Hashable, Sendable {
    /// The block.
    public let blockID: BlockID
    /// The shard index in 0..<k+m.
    public let shardIndex: Int
    /// SHA-256 of the stored shard.
    public let shardHash: Digest256
    /// The storing node's P-256 signing public key, SPKI DER.
    public let nodeKey: [UInt8]
    /// ECDSA-SHA256 signature, DER.
    public let signature: [UInt8]

    /// The signer's node id (SHA-256 of ``nodeKey``).
    public var node: MeshNodeID { Digest256.hashing(nodeKey) }

    /// Creates a receipt from its parts (as received); call ``verify(against:expectedNode:)`` before trusting it.
    public init(blockID: BlockID, shardIndex: Int, shardHash: Digest256, nodeKey: [UInt8], signature: [UInt8]) {
        self.blockID = blockID
        self.shardIndex = shardIndex
        self.shardHash = shardHash
        self.nodeKey = nodeKey
        self.signature = signature
    }

    /// Signs a receipt as the storing node.
    /// - Parameters:
    ///   - blockID: the block.
    ///   - shardIndex: the shard index.
    ///   - shardHash: SHA-256 of the shard as stored.
    ///   - key: the node's signing key.
    public static func sign(
        blockID: BlockID, shardIndex: Int, shardHash: Digest256, key: P256.Signing.PrivateKey
    ) throws -> StorageReceipt {
        try sign(blockID: blockID, shardIndex: shardIndex, shardHash: shardHash, key: SoftwareSigner(key))
    }

    /// Signs a receipt as the storing node, with its key in memory or in a token.
    public static func sign(
        blockID: BlockID, shardIndex: Int, shardHash: Digest256, key: any CertificateSigner
    ) throws -> StorageReceipt {
        guard let publicKey = key.p256PublicKey else {
            throw HyperMeshError(.invalidParameters, "the node key is not a P-256 key; storage receipts are signed with P-256")
        }
        let signature = try key.signSHA256(message(blockID, shardIndex, shardHash))
        return StorageReceipt(
            blockID: blockID, shardIndex: shardIndex, shardHash: shardHash,
            nodeKey: Array(publicKey.derRepresentation), signature: signature
        )
    }

    static func message(_ block: BlockID, _ index: Int, _ hash: Digest256) -> [UInt8] {
        var w = ByteWriter()
        w.raw(Array("stoq-hypermesh-receipt-v1".utf8))
        w.raw(block.bytes)
        w.u16(UInt16(truncatingIfNeeded: index))
        w.raw(hash.bytes)
        return w.bytes
    }

    /// The outcome of checking a receipt (an expected failure is a result, not a throw).
    public enum Verdict: Hashable, Sendable {
        /// Signature, signer and content all check out.
        case valid
        /// Refused, with the reason.
        case invalid(String)
    }

    /// Checks the receipt against the block manifest.
    /// - Parameters:
    ///   - manifest: the block's manifest (gives the expected shard hash).
    ///   - expectedNode: the node the shard was sent to; nil to accept any signer.
    public func verify(against manifest: BlockManifest, expectedNode: MeshNodeID? = nil) -> Verdict {
        guard blockID == manifest.blockID else { return .invalid("receipt is for block \(blockID.short), not \(manifest.blockID.short)") }
        guard manifest.shardHashes.indices.contains(shardIndex) else { return .invalid("shard index \(shardIndex) out of range") }
        guard shardHash == manifest.shardHashes[shardIndex] else {
            return .invalid("shard \(shardIndex) hash \(shardHash.short) differs from the manifest's \(manifest.shardHashes[shardIndex].short)")
        }
        if let expectedNode, node != expectedNode {
            return .invalid("signed by \(node.short) but shard \(shardIndex) was sent to \(expectedNode.short)")
        }
        return verifySignature() ? .valid : .invalid("signature by \(node.short) does not verify")
    }

    /// Whether the signature verifies under the embedded node key.
    public func verifySignature() -> Bool {
        guard let key = try? P256.Signing.PublicKey(derRepresentation: nodeKey),
            let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature)
        else { return false }
        return key.isValidSignature(sig, for: Self.message(blockID, shardIndex, shardHash))
    }

    /// The binary form.
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Array("HMRC".utf8))
        w.u8(1)
        w.raw(blockID.bytes)
        w.u16(UInt16(shardIndex))
        w.raw(shardHash.bytes)
        w.blob16(nodeKey)
        w.blob16(signature)
        return w.bytes
    }

    /// Decodes a receipt; safe on arbitrary bytes. Decoding does not verify the signature.
    public init(decoding bytes: [UInt8]) throws(HyperMeshError) {
        var r = ByteReader(bytes)
        guard r.take(4) == Array("HMRC".utf8), r.u8() == 1, let block = r.digest(), let index = r.u16(),
            Int(index) < ErasureCoder.maximumTotalShards, let hash = r.digest(),
            let key = r.blob16(max: 200), let sig = r.blob16(max: 80), r.isAtEnd
        else { throw HyperMeshError(.malformedReceipt, "storage receipt is malformed or truncated") }
        self.init(blockID: block, shardIndex: Int(index), shardHash: hash, nodeKey: key, signature: sig)
    }

    /// Fuzz entry point: decodes arbitrary bytes, re-encodes what decodes, and checks a signature.
    public static func fuzz(_ data: [UInt8]) {
        guard let receipt = try? StorageReceipt(decoding: data) else { return }
        precondition(receipt.encoded() == data, "receipt encoding is not canonical")
        _ = receipt.verifySignature()
    }
}

/// The proof that a block is stored: its verified receipts.
public struct BlockProof: Hashable, Sendable {
    /// The block.
    public let blockID: BlockID
    /// Verified receipts, at most one per shard index.
    public let receipts: [StorageReceipt]

    /// Creates a proof from receipts (not checked here; see ``verify(against:)``).
    public init(blockID: BlockID, receipts: [StorageReceipt]) {
        self.blockID = blockID
        self.receipts = receipts
    }

    /// The number of receipts a commit needs: k + 2.
    public static func required(for manifest: BlockManifest) -> Int {
        min(manifest.dataShards + 2, manifest.totalShards)
    }

    /// Whether at least k + 2 distinct shards have receipts that verify, each from a distinct node.
    public func verify(against manifest: BlockManifest) -> Bool {
        var shards = Set<Int>()
        var nodes = Set<MeshNodeID>()
        for r in receipts where r.verify(against: manifest) == .valid {
            if shards.insert(r.shardIndex).inserted { nodes.insert(r.node) }
        }
        return min(shards.count, nodes.count) >= Self.required(for: manifest)
    }
}
