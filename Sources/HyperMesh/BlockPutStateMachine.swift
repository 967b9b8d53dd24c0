/// Sans-IO state machine for storing one block's shards and collecting its receipts.
///
/// The driver performs each ``Action/store(shard:node:)``, feeds back receipts and failures with
/// an injected clock, and polls actions until ``Action/completed(_:unplaced:)`` or
/// ``Action/failed(_:)``. A shard whose node fails or times out is re-placed on another node
/// (the planner's next choice, away from the block's other holders). The block is committed once
/// k + 2 receipts from distinct nodes verify; if that becomes impossible, every shard stored or in
/// flight is deleted and the put fails — a block is never left half-committed.
public struct BlockPutStateMachine: Sendable {
    /// What the driver must do next.
    public enum Action: Hashable, Sendable {
        /// Send shard `shard` to `node` and await its receipt.
        case store(shard: Int, node: MeshNodeID)
        /// Roll back: ask `node` to delete shard `shard`.
        case delete(shard: Int, node: MeshNodeID)
        /// At least k + 2 receipts verified: the block is committed; this is its proof so far.
        case committed(BlockProof)
        /// Every shard is settled; `unplaced` shards found no node and need repair later.
        case completed(BlockProof, unplaced: [Int])
        /// The put failed and was rolled back.
        case failed(HyperMeshError)
    }

    private enum ShardState: Hashable, Sendable {
        case inFlight(node: MeshNodeID, deadline: Duration)
        case stored(StorageReceipt)
        case unplaced(String)
    }

    private enum Phase: Hashable, Sendable { case storing, committed, done }

    /// The manifest of the block being stored.
    public let manifest: BlockManifest
    private let planner: PlacementPlanner
    private let storeTimeout: Duration
    private var shards: [ShardState]
    private var tried: Set<MeshNodeID> = []
    private var phase = Phase.storing
    private var actions: [Action] = []
    /// Receipts refused so far: shard, claimed signer, reason.
    public private(set) var rejected: [(shard: Int, node: MeshNodeID, reason: String)] = []

    /// Starts a put.
    /// - Parameters:
    ///   - manifest: the block manifest.
    ///   - plan: the initial placement (one node per shard).
    ///   - planner: used to re-place shards whose node fails.
    ///   - now: the injected clock.
    ///   - storeTimeout: how long a node has to return a receipt.
    public init(
        manifest: BlockManifest, plan: PlacementPlan, planner: PlacementPlanner, now: Duration,
        storeTimeout: Duration = .seconds(10)
    ) {
        precondition(plan.shards.count == manifest.totalShards, "plan must place every shard")
        self.manifest = manifest
        self.planner = planner
        self.storeTimeout = storeTimeout
        shards = plan.shards.map { .inFlight(node: $0.node, deadline: now + storeTimeout) }
        actions = plan.shards.map { .store(shard: $0.slot, node: $0.node) }
    }

    /// Current holder (stored or in flight) of each shard.
    public var holders: [Int: MeshNodeID] {
        var out: [Int: MeshNodeID] = [:]
        for (i, s) in shards.enumerated() {
            switch s {
            case .inFlight(let node, _): out[i] = node
            case .stored(let r): out[i] = r.node
            case .unplaced: break
            }
        }
        return out
    }

    /// Verified receipts so far.
    public var receipts: [StorageReceipt] {
        shards.compactMap { if case .stored(let r) = $0 { r } else { nil } }
    }

    /// Feeds a receipt. Forged, mismatched or unexpected receipts are refused and recorded.
    /// - Returns: whether it was accepted.
    @discardableResult
    public mutating func handleReceipt(_ receipt: StorageReceipt, now: Duration) -> StorageReceipt.Verdict {
        guard phase != .done else { return refuse(receipt, "the put is already finished") }
        guard shards.indices.contains(receipt.shardIndex),
            case .inFlight(let node, _) = shards[receipt.shardIndex]
        else { return refuse(receipt, "shard \(receipt.shardIndex) is not awaiting a receipt") }
        let verdict = receipt.verify(against: manifest, expectedNode: node)
        guard verdict == .valid else {
            if case .invalid(let reason) = verdict { return refuse(receipt, reason) }
            return verdict
        }
        shards[receipt.shardIndex] = .stored(receipt)
        advance()
        return .valid
    }

    private mutating func refuse(_ receipt: StorageReceipt, _ reason: String) -> StorageReceipt.Verdict {
        rejected.append((receipt.shardIndex, receipt.node, reason))
        return .invalid(reason)
    }

    /// A node failed to store a shard (connection lost, refused, died).
    public mutating func handleStoreFailed(shard: Int, node: MeshNodeID, now: Duration) {
        guard phase != .done, shards.indices.contains(shard), case .inFlight(let current, _) = shards[shard],
            current == node
        else { return }
        tried.insert(node)
        replace(shard, now: now)
        advance()
    }

    /// A node is known to be down: every shard in flight to it is re-placed.
    public mutating func handleNodeDown(_ node: MeshNodeID, now: Duration) {
        tried.insert(node)
        for i in shards.indices {
            if case .inFlight(let n, _) = shards[i], n == node { handleStoreFailed(shard: i, node: node, now: now) }
        }
    }

    /// Expires stores whose receipt is overdue and re-places them.
    public mutating func handleTimeout(now: Duration) {
        for i in shards.indices {
            if case .inFlight(let node, let deadline) = shards[i], deadline <= now {
                handleStoreFailed(shard: i, node: node, now: now)
            }
        }
    }

    /// The earliest receipt deadline, for the driver's timer.
    public var nextDeadline: Duration? {
        shards.compactMap { if case .inFlight(_, let d) = $0 { d } else { nil } }.min()
    }

    /// Takes the next action.
    public mutating func pollAction() -> Action? { actions.isEmpty ? nil : actions.removeFirst() }

    private mutating func replace(_ shard: Int, now: Duration) {
        let others = shards.indices.filter { $0 != shard }.compactMap { holders[$0] }
        do {
            let choice = try planner.replace(
                [shard], block: manifest.blockID, shardSize: manifest.shardSize, holders: others, excluding: tried
            )
            shards[shard] = .inFlight(node: choice[0].node, deadline: now + storeTimeout)
            actions.append(.store(shard: shard, node: choice[0].node))
        } catch {
            shards[shard] = .unplaced(error.reason)
        }
    }

    private mutating func advance() {
        let required = BlockProof.required(for: manifest)
        var stored = 0
        var inFlight = 0
        for s in shards {
            switch s {
            case .stored: stored += 1
            case .inFlight: inFlight += 1
            case .unplaced: break
            }
        }
        let proof = BlockProof(blockID: manifest.blockID, receipts: receipts)
        if phase == .storing && stored >= required {
            phase = .committed
            actions.append(.committed(proof))
        }
        if phase == .storing && stored + inFlight < required {
            // Cannot reach k + 2 any more: roll back everything, and send nothing more.
            phase = .done
            actions.removeAll { if case .store = $0 { true } else { false } }
            for (i, s) in shards.enumerated() {
                switch s {
                case .stored(let r): actions.append(.delete(shard: i, node: r.node))
                case .inFlight(let node, _): actions.append(.delete(shard: i, node: node))
                case .unplaced: break
                }
            }
            actions.append(
                .failed(
                    HyperMeshError(
                        .placementImpossible,
                        "block \(manifest.blockID.short) could not be committed: \(stored) receipts, \(inFlight) pending, "
                            + "\(required) needed (k + 2); stored shards were deleted. Add nodes or retry later"
                    )))
            return
        }
        if phase == .committed && inFlight == 0 {
            phase = .done
            let unplaced = shards.indices.filter { if case .unplaced = shards[$0] { true } else { false } }
            actions.append(.completed(proof, unplaced: unplaced))
        }
    }
}
