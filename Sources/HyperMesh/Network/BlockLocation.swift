import Foundation
import STOQNode

/// What one storage node said about a block when a reader without the block's record asked it:
/// the manifest replica it keeps (GET_MANIFEST) and its receipts for the shards it holds
/// (HOLDINGS_REQUEST). Nothing here is trusted yet; see ``BlockLocation/choose(block:answers:asked:)``.
public struct HoldingsAnswer: Sendable {
    /// Where the node was reached.
    public let address: PeerAddress
    /// The node id of its certificate (the TLS handshake proved it): its receipts must be signed by this key.
    public let node: MeshNodeID
    /// The manifest it sent, if any.
    public let manifest: BlockManifest?
    /// The receipts it sent for the shards it says it holds.
    public let receipts: [StorageReceipt]

    /// Creates an answer.
    public init(address: PeerAddress, node: MeshNodeID, manifest: BlockManifest?, receipts: [StorageReceipt]) {
        self.address = address
        self.node = node
        self.manifest = manifest
        self.receipts = receipts
    }
}

/// One shard's holder, as found on the network.
public struct LocatedHolder: Hashable, Sendable {
    /// The shard index.
    public let shard: Int
    /// The holder's node id (its certificate's, and its receipt's signer).
    public let node: MeshNodeID
    /// Where it was reached.
    public let address: PeerAddress

    /// Creates an entry.
    public init(shard: Int, node: MeshNodeID, address: PeerAddress) {
        self.shard = shard
        self.node = node
        self.address = address
    }
}

/// A block found without its record: a manifest and the holders whose signed receipts match it.
///
/// How a reader on another machine (or with another block directory) reads a block from its id
/// alone. The manifest replicas and holders are untrusted peers, so nothing is taken on their word:
/// - a manifest counts only if it names the asked block id (the id is SHA-256 of the sealed
///   bytes, which the reader checks after decoding, so a forged manifest can only fail the read);
/// - a holder counts only if its receipt for the shard verifies: the shard hash is the manifest's,
///   the signature verifies, and the signer is the node the TLS handshake authenticated;
/// - when replicas disagree, the manifest backed by receipts for the most distinct shards (then by
///   the most replicas) is tried first, since honest holders sign the real shard hashes;
/// - every shard read is checked against the manifest's SHA-256, and the rebuilt block against its id.
public struct BlockLocation: Sendable {
    /// The manifest.
    public let manifest: BlockManifest
    /// Holders with a verified receipt, one entry per (shard, node), fastest not known yet.
    public let holders: [LocatedHolder]
    /// The verified receipts, in shard order.
    public var receipts: [StorageReceipt] { receiptsByHolder.sorted { $0.shardIndex < $1.shardIndex } }
    /// The receipt of each entry of ``holders``, in the same order.
    let receiptsByHolder: [StorageReceipt]
    /// Nodes that sent this manifest.
    public let manifestReplicas: [PeerAddress]
    /// Distinct shards with at least one verified holder.
    public var shardsFound: Int { Set(holders.map(\.shard)).count }

    /// A block record of what was found: the manifest, one holder per shard (the first found) with
    /// its receipt, the manifest replicas; no known nodes and no prepared challenges.
    public func record() -> BlockRecord {
        var byShard: [Int: (LocatedHolder, StorageReceipt)] = [:]
        for (h, r) in zip(holders, receiptsByHolder) where byShard[h.shard] == nil { byShard[h.shard] = (h, r) }
        let kept = byShard.sorted { $0.key < $1.key }.map(\.value)
        return BlockRecord(
            block: manifest.blockID.hex, manifest: Data(manifest.encoded()).base64EncodedString(),
            receipts: kept.map { Data($0.1.encoded()).base64EncodedString() },
            holders: kept.map { BlockRecord.Holder(shard: $0.0.shard, node: $0.0.node.hex, address: $0.0.address.description) },
            manifestReplicas: manifestReplicas.map { BlockRecord.Holder(shard: -1, node: "", address: $0.description) },
            nodes: [], challenges: [], committed: Date())
    }

    /// Chooses, among the answers, the manifests a read can start from, best first.
    /// - Parameters:
    ///   - block: the block id asked for.
    ///   - answers: what the nodes that answered said.
    ///   - asked: how many nodes were asked (for the error message).
    /// - Returns: each distinct manifest naming `block` whose verified holders cover at least k
    ///   shards, ordered by shards covered, then by replicas.
    /// - Throws: ``HyperMeshError/Code/notFound`` when no node sent the manifest;
    ///   ``HyperMeshError/Code/notEnoughShards`` when the holders found cover fewer than k shards.
    public static func choose(block: BlockID, answers: [HoldingsAnswer], asked: Int) throws(HyperMeshError) -> [BlockLocation] {
        var manifests: [BlockManifest] = []
        var replicas: [BlockManifest: [PeerAddress]] = [:]
        for a in answers {
            guard let m = a.manifest, m.blockID == block else { continue }
            if replicas[m] == nil { manifests.append(m) }
            replicas[m, default: []].append(a.address)
        }
        guard !manifests.isEmpty else {
            throw HyperMeshError(
                .notFound,
                "none of the \(asked) storage nodes asked (\(answers.count) answered) keeps the manifest of block \(block.short); "
                    + "give the storage nodes the block was stored on")
        }
        var locations: [BlockLocation] = []
        for m in manifests {
            var holders: [LocatedHolder] = []
            var receipts: [StorageReceipt] = []
            var seen = Set<LocatedHolder>()
            for a in answers {
                for r in a.receipts where r.blockID == block && r.verify(against: m, expectedNode: a.node) == .valid {
                    let h = LocatedHolder(shard: r.shardIndex, node: a.node, address: a.address)
                    guard seen.insert(h).inserted else { continue }
                    holders.append(h)
                    receipts.append(r)
                }
            }
            let order = holders.indices.sorted { (holders[$0].shard, holders[$0].address.description) < (holders[$1].shard, holders[$1].address.description) }
            locations.append(BlockLocation(
                manifest: m, holders: order.map { holders[$0] }, receiptsByHolder: order.map { receipts[$0] }, manifestReplicas: replicas[m] ?? []))
        }
        locations.sort { ($0.shardsFound, $0.manifestReplicas.count) > ($1.shardsFound, $1.manifestReplicas.count) }
        let usable = locations.filter { $0.shardsFound >= $0.manifest.dataShards }
        guard !usable.isEmpty else {
            let best = locations[0]
            throw HyperMeshError(
                .notEnoughShards,
                "found the manifest of block \(block.short) on \(best.manifestReplicas.count) of the \(asked) storage nodes asked, "
                    + "but verified holders of only \(best.shardsFound) of its \(best.manifest.totalShards) shards "
                    + "(\(best.manifest.dataShards) needed); give more of the storage nodes the block was stored on")
        }
        return usable
    }
}
