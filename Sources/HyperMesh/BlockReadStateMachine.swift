/// One place a shard can be read from, with the holder's observed latency.
public struct ShardHolder: Hashable, Sendable {
    /// The shard index.
    public let shard: Int
    /// The node holding it.
    public let node: MeshNodeID
    /// Expected response time (e.g. smoothed RTT); lower is asked first.
    public let latency: Duration

    /// Creates a holder entry.
    public init(shard: Int, node: MeshNodeID, latency: Duration) {
        self.shard = shard
        self.node = node
        self.latency = latency
    }
}

/// Sans-IO read of one block with long-tail cutting.
///
/// It asks for k + `extra` distinct shards from the fastest holders at once, verifies each answer
/// against the manifest's SHA-256, and completes as soon as any k verify, cancelling the requests
/// still outstanding. A failed, late or tampered answer makes it ask another holder of that shard,
/// or the next-fastest untried shard. When fewer than k shards can still arrive it fails with an
/// error saying how many are missing and how many are needed.
public struct BlockReadStateMachine: Sendable {
    /// What the driver must do next.
    public enum Action: Hashable, Sendable {
        /// Ask `node` for shard `shard`.
        case request(shard: Int, node: MeshNodeID)
        /// Cancel the request for `shard` to `node` (the tail is no longer needed).
        case cancel(shard: Int, node: MeshNodeID)
        /// k shards verified: slots are the k + m shards with `nil` where not fetched; decode with `BlockCodec`.
        case complete([[UInt8]?])
        /// The block cannot be read.
        case failed(HyperMeshError)
    }

    /// The manifest of the block being read.
    public let manifest: BlockManifest
    private let requestTimeout: Duration
    private var untried: [ShardHolder]  // sorted by latency
    private var outstanding: [Int: (node: MeshNodeID, deadline: Duration)] = [:]
    private var verified: [[UInt8]?]
    private var verifiedCount = 0
    private var finished = false
    private var actions: [Action] = []
    /// Answers that failed their hash check: shard and node.
    public private(set) var tampered: [(shard: Int, node: MeshNodeID)] = []

    /// Starts a read.
    /// - Parameters:
    ///   - manifest: the block manifest.
    ///   - holders: every known (shard, node, latency).
    ///   - extra: how many shards beyond k to request at once (default 2).
    ///   - now: the injected clock.
    ///   - requestTimeout: how long one request may take before another holder is asked.
    public init(
        manifest: BlockManifest, holders: [ShardHolder], extra: Int = 2, now: Duration, requestTimeout: Duration = .seconds(5)
    ) {
        self.manifest = manifest
        self.requestTimeout = requestTimeout
        untried = holders.filter { (0..<manifest.totalShards).contains($0.shard) }
            .sorted { ($0.latency, $0.shard) < ($1.latency, $1.shard) }
        verified = Array(repeating: nil, count: manifest.totalShards)
        let target = min(manifest.dataShards + max(0, extra), manifest.totalShards)
        while outstanding.count < target, requestNext(now: now) {}
        checkFeasible()
    }

    /// Feeds an answer from `node` for `shard`.
    /// - Returns: whether the shard verified.
    @discardableResult
    public mutating func handleShard(_ shard: Int, from node: MeshNodeID, bytes: [UInt8], now: Duration) -> Bool {
        guard !finished, let request = outstanding[shard], request.node == node else { return false }
        outstanding[shard] = nil
        guard BlockCodec.verifyShard(bytes, index: shard, of: manifest) else {
            tampered.append((shard, node))
            _ = requestNext(now: now, preferring: shard)
            checkFeasible()
            return false
        }
        verified[shard] = bytes
        verifiedCount += 1
        if verifiedCount >= manifest.dataShards {
            finished = true
            for (s, r) in outstanding.sorted(by: { $0.key < $1.key }) { actions.append(.cancel(shard: s, node: r.node)) }
            outstanding.removeAll()
            actions.append(.complete(verified))
        }
        return true
    }

    /// A request failed (node down, shard not found).
    public mutating func handleFailure(_ shard: Int, from node: MeshNodeID, now: Duration) {
        guard !finished, let request = outstanding[shard], request.node == node else { return }
        outstanding[shard] = nil
        _ = requestNext(now: now, preferring: shard)
        checkFeasible()
    }

    /// Treats overdue requests as failed.
    public mutating func handleTimeout(now: Duration) {
        for (s, r) in outstanding.sorted(by: { $0.key < $1.key }) where r.deadline <= now {
            actions.append(.cancel(shard: s, node: r.node))
            handleFailure(s, from: r.node, now: now)
        }
    }

    /// The earliest request deadline.
    public var nextDeadline: Duration? { outstanding.values.map(\.deadline).min() }

    /// Takes the next action.
    public mutating func pollAction() -> Action? { actions.isEmpty ? nil : actions.removeFirst() }

    /// Requests the fastest untried holder, of `preferring` if possible, else of a shard not yet asked for.
    private mutating func requestNext(now: Duration, preferring: Int? = nil) -> Bool {
        let pick =
            untried.firstIndex { $0.shard == preferring }
            ?? untried.firstIndex { verified[$0.shard] == nil && outstanding[$0.shard] == nil }
        guard let pick else { return false }
        let holder = untried.remove(at: pick)
        outstanding[holder.shard] = (holder.node, now + requestTimeout)
        actions.append(.request(shard: holder.shard, node: holder.node))
        return true
    }

    private mutating func checkFeasible() {
        guard !finished else { return }
        let reachable = Set(untried.map(\.shard)).union(outstanding.keys).filter { verified[$0] == nil }.count
        if verifiedCount + reachable < manifest.dataShards {
            finished = true
            for (s, r) in outstanding.sorted(by: { $0.key < $1.key }) { actions.append(.cancel(shard: s, node: r.node)) }
            outstanding.removeAll()
            let available = verifiedCount + reachable
            let missing = manifest.totalShards - available
            let corrupt = tampered.isEmpty ? "" : " (\(Set(tampered.map(\.shard)).count) failed their SHA-256 check)"
            actions.append(
                .failed(
                    HyperMeshError(
                        .notEnoughShards,
                        "block \(manifest.blockID.short): \(missing) of \(manifest.totalShards) shards are missing\(corrupt); "
                            + "\(available) remain but \(manifest.dataShards) are needed"
                    )))
        }
    }
}

/// Rebuilding lost shards and choosing where they go.
public enum BlockRepair {
    /// Rebuilds the `lost` shards from the verified shards present, checking each against the manifest.
    /// - Parameters:
    ///   - manifest: the block manifest.
    ///   - shards: k + m slots with at least k verified shards (others nil).
    ///   - lost: indices to rebuild.
    ///   - coder: a coder with the manifest's k + m.
    /// - Returns: the rebuilt shards by index.
    public static func rebuild(
        manifest: BlockManifest, shards: [[UInt8]?], lost: [Int], coder: ErasureCoder
    ) throws(HyperMeshError) -> [Int: [UInt8]] {
        var slots = shards
        for i in slots.indices {
            if let s = slots[i], !BlockCodec.verifyShard(s, index: i, of: manifest) { slots[i] = nil }
        }
        for i in lost where slots.indices.contains(i) { slots[i] = nil }
        try coder.reconstruct(&slots, only: lost)
        var out: [Int: [UInt8]] = [:]
        for i in lost {
            guard let s = slots[i], BlockCodec.verifyShard(s, index: i, of: manifest) else {
                throw HyperMeshError(.shardCorrupted, "rebuilt shard \(i) does not match the manifest hash")
            }
            out[i] = s
        }
        return out
    }

    /// Chooses new nodes for the lost shards.
    /// - Parameters:
    ///   - lost: shard indices to re-place.
    ///   - manifest: the block manifest.
    ///   - holders: surviving holders (shard → node).
    ///   - planner: the placement planner.
    ///   - excluding: nodes not to use (dead ones, the nodes that lost the shards).
    public static func placements(
        for lost: [Int], manifest: BlockManifest, holders: [Int: MeshNodeID], planner: PlacementPlanner,
        excluding: Set<MeshNodeID>
    ) throws(HyperMeshError) -> [PlacementAssignment] {
        let surviving = holders.filter { !lost.contains($0.key) }.map(\.value)
        return try planner.replace(
            lost.sorted(), block: manifest.blockID, shardSize: manifest.shardSize, holders: surviving, excluding: excluding
        )
    }
}
