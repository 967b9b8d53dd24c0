import Crypto
import Foundation

/// A node that can hold shards, as placement sees it.
public struct StorageNode: Hashable, Sendable {
    /// The node's id.
    public let id: MeshNodeID
    /// Its region (e.g. `"eu-west"`); shards are spread across regions.
    public let region: String
    /// Bytes it can still accept.
    public var freeBytes: Int
    /// An operator weight multiplying the capacity weight (1 = normal, 0 = drain).
    public var weight: Double

    /// Creates a node description.
    public init(id: MeshNodeID, region: String, freeBytes: Int, weight: Double = 1) {
        self.id = id
        self.region = region
        self.freeBytes = freeBytes
        self.weight = weight
    }
}

/// Why a node got a shard (or a metadata replica): the facts `stoq block plan ID` prints.
public struct PlacementAssignment: Hashable, Sendable {
    /// How the node was chosen.
    public enum Reason: String, Hashable, Sendable {
        /// Highest-scoring eligible node of a region not yet used (regions first).
        case regionSeed = "first node of its region"
        /// Next by score while its region was under the quota.
        case withinQuota = "next by score, region under quota"
        /// Taken after raising the region quota, because too few regions had eligible nodes.
        case quotaRaised = "region quota raised: too few regions"
    }

    /// Shard index (or replica number for metadata).
    public let slot: Int
    /// The chosen node.
    public let node: MeshNodeID
    /// Its region.
    public let region: String
    /// Weighted rendezvous score (higher wins).
    public let score: Double
    /// Rank by score among the eligible nodes (0 = best).
    public let rank: Int
    /// Shards this block has in the region, counting this one.
    public let regionLoad: Int
    /// Most shards allowed per region when this one was chosen.
    public let regionQuota: Int
    /// The node's free bytes when planned.
    public let freeBytes: Int
    /// How it was chosen.
    public let reason: Reason

    /// One line: slot, node, region, score and reason.
    public var explanation: String {
        "\(slot): node \(node.short) region \(region) score \(String(format: "%.4f", score)) rank \(rank) "
            + "region load \(regionLoad)/\(regionQuota) free \(freeBytes) B — \(reason.rawValue)"
    }
}

/// Where a block's shards and manifest go, with the reasons.
public struct PlacementPlan: Hashable, Sendable {
    /// The block.
    public let blockID: BlockID
    /// One assignment per shard, in shard order; all on distinct nodes.
    public let shards: [PlacementAssignment]
    /// Nodes holding the manifest (metadata), usually 3.
    public let metadata: [PlacementAssignment]
    /// Nodes left out, and why (full, excluded, zero weight).
    public let skipped: [MeshNodeID: String]

    /// Distinct regions holding shards.
    public var regions: Set<String> { Set(shards.map(\.region)) }

    /// A human-readable report of the plan, as `stoq block plan ID` prints it.
    public func explain() -> String {
        var lines = ["block \(blockID.hex)", "shards (\(shards.count) on \(regions.count) regions):"]
        lines += shards.map { "  shard " + $0.explanation }
        lines.append("metadata (\(metadata.count) replicas):")
        lines += metadata.map { "  replica " + $0.explanation }
        if !skipped.isEmpty {
            lines.append("skipped:")
            lines += skipped.sorted { $0.key < $1.key }.map { "  \($0.key.short): \($0.value)" }
        }
        return lines.joined(separator: "\n")
    }
}

/// Sans-IO placement: weighted rendezvous hashing with region spreading and capacity awareness.
///
/// Every node gets a score for the block, `w / −ln(u)` where `u ∈ (0, 1)` comes from
/// SHA-256(tag ‖ block id ‖ node id) and `w` = operator weight × free GiB, so the choice is
/// stable (adding a node moves only the shards it wins) and fuller nodes win less often. Nodes
/// without room for a shard are skipped. Selection first takes the best node of each region (so
/// as many regions as possible are used), then continues by score while the region holds fewer
/// than ⌈n / regions⌉ shards, raising that quota only when regions run out of eligible nodes.
public struct PlacementPlanner: Sendable {
    /// The nodes known to placement (from Nexus once it exists; a list until then).
    public var nodes: [StorageNode]

    /// Creates a planner over `nodes`.
    public init(nodes: [StorageNode]) { self.nodes = nodes }

    /// Plans shards and manifest replicas for a block.
    /// - Parameters:
    ///   - block: the block id.
    ///   - shardCount: k + m.
    ///   - shardSize: bytes per shard (a node needs this much free).
    ///   - metadataReplicas: manifest copies, default 3.
    ///   - excluding: nodes not to use (dead, draining).
    /// - Throws: ``HyperMeshError/Code/placementImpossible`` when fewer eligible nodes than shards.
    public func plan(
        block: BlockID, shardCount: Int, shardSize: Int, metadataReplicas: Int = 3, excluding: Set<MeshNodeID> = []
    ) throws(HyperMeshError) -> PlacementPlan {
        var skipped: [MeshNodeID: String] = [:]
        let shardEligible = eligible(shardSize: shardSize, excluding: excluding, skipped: &skipped)
        let shards = try select(
            count: shardCount, from: shardEligible, tag: "shard", block: block, slots: Array(0..<shardCount), existing: [:]
        )
        var ignored: [MeshNodeID: String] = [:]
        let metaEligible = eligible(shardSize: 1, excluding: excluding, skipped: &ignored)
        let replicas = min(metadataReplicas, metaEligible.count)
        let metadata = try select(
            count: replicas, from: metaEligible, tag: "meta", block: block, slots: Array(0..<replicas), existing: [:]
        )
        return PlacementPlan(blockID: block, shards: shards, metadata: metadata, skipped: skipped)
    }

    /// Chooses new nodes for lost shards, away from the nodes that still hold the block's other shards.
    /// - Parameters:
    ///   - lost: shard indices to place.
    ///   - block: the block id.
    ///   - shardSize: bytes per shard.
    ///   - holders: current holders of the block's surviving shards (not reused; their regions count toward quotas).
    ///   - excluding: further nodes not to use (dead, already tried).
    public func replace(
        _ lost: [Int], block: BlockID, shardSize: Int, holders: [MeshNodeID], excluding: Set<MeshNodeID> = []
    ) throws(HyperMeshError) -> [PlacementAssignment] {
        try replace(lost, tag: "shard", block: block, shardSize: shardSize, holders: holders, excluding: excluding)
    }

    /// Chooses new nodes for lost manifest replicas, away from the surviving replica holders.
    /// - Parameters:
    ///   - replicas: replica numbers to place.
    ///   - block: the block id.
    ///   - holders: nodes still holding the manifest.
    ///   - excluding: further nodes not to use.
    public func replaceMetadata(
        _ replicas: [Int], block: BlockID, holders: [MeshNodeID], excluding: Set<MeshNodeID> = []
    ) throws(HyperMeshError) -> [PlacementAssignment] {
        try replace(replicas, tag: "meta", block: block, shardSize: 1, holders: holders, excluding: excluding)
    }

    private func replace(
        _ lost: [Int], tag: String, block: BlockID, shardSize: Int, holders: [MeshNodeID], excluding: Set<MeshNodeID>
    ) throws(HyperMeshError) -> [PlacementAssignment] {
        var skipped: [MeshNodeID: String] = [:]
        let avoid = excluding.union(holders)
        let candidates = eligible(shardSize: shardSize, excluding: avoid, skipped: &skipped)
        var existing: [String: Int] = [:]
        let byID = Dictionary(nodes.map { ($0.id, $0.region) }, uniquingKeysWith: { a, _ in a })
        for h in holders { if let r = byID[h] { existing[r, default: 0] += 1 } }
        return try select(count: lost.count, from: candidates, tag: tag, block: block, slots: lost, existing: existing)
    }

    private func eligible(shardSize: Int, excluding: Set<MeshNodeID>, skipped: inout [MeshNodeID: String]) -> [StorageNode] {
        var seen = Set<MeshNodeID>()
        var out: [StorageNode] = []
        for node in nodes {
            guard seen.insert(node.id).inserted else { continue }
            if excluding.contains(node.id) {
                skipped[node.id] = "excluded (down, tried or already holding a shard)"
            } else if node.freeBytes < shardSize {
                skipped[node.id] = "full: \(node.freeBytes) B free < shard \(shardSize) B"
            } else if !(node.weight > 0) {
                skipped[node.id] = "weight \(node.weight) (draining)"
            } else {
                out.append(node)
            }
        }
        return out
    }

    /// The weighted rendezvous score of `node` for `block`.
    public static func score(node: StorageNode, block: BlockID, tag: String) -> Double {
        var hasher = SHA256()
        hasher.update(data: Array(tag.utf8))
        hasher.update(data: block.bytes)
        hasher.update(data: node.id.bytes)
        let digest = Array(hasher.finalize())
        let x = digest[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let u = (Double(x >> 11) + 0.5) / 9_007_199_254_740_992.0  // 2^53; u in (0, 1)
        let weight = node.weight * max(Double(node.freeBytes), 1) / 1_073_741_824.0
        return weight / -Foundation.log(u)
    }

    private func select(
        count: Int, from candidates: [StorageNode], tag: String, block: BlockID, slots: [Int], existing: [String: Int]
    ) throws(HyperMeshError) -> [PlacementAssignment] {
        if count == 0 { return [] }
        guard candidates.count >= count else {
            throw HyperMeshError(
                .placementImpossible,
                "need \(count) distinct nodes with room for a shard but only \(candidates.count) are eligible "
                    + "(\(nodes.count) known); add nodes or free space"
            )
        }
        let ranked = candidates.map { ($0, Self.score(node: $0, block: block, tag: tag)) }
            .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0.id < $1.0.id }
        var regionLoad = existing
        let regions = Set(candidates.map(\.region)).union(existing.keys)
        let total = count + existing.values.reduce(0, +)
        var quota = (total + regions.count - 1) / max(regions.count, 1)
        var taken = [Bool](repeating: false, count: ranked.count)
        var picks: [(rank: Int, reason: PlacementAssignment.Reason, quota: Int, load: Int)] = []

        // Regions first: the best node of each region without shards yet, by score.
        for (rank, entry) in ranked.enumerated() where picks.count < count {
            if regionLoad[entry.0.region, default: 0] == 0 {
                taken[rank] = true
                regionLoad[entry.0.region] = 1
                picks.append((rank, .regionSeed, quota, 1))
            }
        }
        // Then by score within the quota, raising it only when no one fits.
        var raised = false
        while picks.count < count {
            var progressed = false
            for (rank, entry) in ranked.enumerated() where !taken[rank] && picks.count < count {
                let load = regionLoad[entry.0.region, default: 0]
                if load < quota {
                    taken[rank] = true
                    regionLoad[entry.0.region] = load + 1
                    picks.append((rank, raised ? .quotaRaised : .withinQuota, quota, load + 1))
                    progressed = true
                }
            }
            if picks.count < count {
                // Every remaining candidate sits in a region at its quota.
                _ = progressed
                quota += 1
                raised = true
            }
        }
        // Highest score gets the lowest slot.
        picks.sort { $0.rank < $1.rank }
        return zip(slots, picks).map { slot, pick in
            let (node, score) = ranked[pick.rank]
            return PlacementAssignment(
                slot: slot, node: node.id, region: node.region, score: score, rank: pick.rank,
                regionLoad: pick.load, regionQuota: pick.quota, freeBytes: node.freeBytes, reason: pick.reason
            )
        }
    }
}
