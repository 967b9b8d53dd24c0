/// Sans-IO state machine for storing one block's shards and collecting its receipts.
///
/// The driver performs each ``Action/store(shard:node:)``, feeds back receipts and failures with
/// an injected clock, and polls actions until ``Action/completed(_:unplaced:)`` or
/// ``Action/failed(_:)``. A shard whose node fails or times out is re-placed on another node
/// (the planner's next choice, away from the block's other holders). The manifest goes to the
/// plan's metadata replicas (usually 3), re-placed the same way when a replica fails. The block is
/// committed once k + 2 shard receipts from distinct nodes verify and a majority of the manifest
/// replicas are stored; if either becomes impossible, every shard and manifest stored or in flight
/// is deleted and the put fails — a block is never left half-committed.
public struct BlockPutStateMachine: Sendable {
    /// What the driver must do next.
    public enum Action: Hashable, Sendable {
        /// Send shard `shard` to `node` and await its receipt.
        case store(shard: Int, node: MeshNodeID)
        /// Roll back: ask `node` to delete shard `shard`.
        case delete(shard: Int, node: MeshNodeID)
        /// Send the block manifest to `node` (a metadata replica) and await its acknowledgement.
        case storeManifest(node: MeshNodeID)
        /// Roll back: ask `node` to delete the manifest.
        case deleteManifest(node: MeshNodeID)
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
    private var manifestPending: [MeshNodeID: Duration] = [:]
    private var manifestStored: Set<MeshNodeID> = []
    private var manifestTried: Set<MeshNodeID> = []
    private let manifestRequired: Int
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
        manifestPending = Dictionary(plan.metadata.map { ($0.node, now + storeTimeout) }, uniquingKeysWith: min)
        manifestRequired = plan.metadata.count / 2 + 1
        actions += plan.metadata.map { .storeManifest(node: $0.node) }
    }

    /// Nodes that acknowledged storing the manifest.
    public var manifestHolders: Set<MeshNodeID> { manifestStored }

    /// A metadata replica acknowledged storing the manifest.
    public mutating func handleManifestStored(node: MeshNodeID, now: Duration) {
        guard phase != .done, manifestPending.removeValue(forKey: node) != nil else { return }
        manifestStored.insert(node)
        advance()
    }

    /// A metadata replica failed to store the manifest: another node is asked.
    public mutating func handleManifestFailed(node: MeshNodeID, now: Duration) {
        guard phase != .done, manifestPending.removeValue(forKey: node) != nil else { return }
        manifestTried.insert(node)
        if let choice = try? planner.replaceMetadata(
            [0], block: manifest.blockID, holders: Array(manifestStored.union(manifestPending.keys)), excluding: manifestTried.union(tried)
        ).first {
            manifestPending[choice.node] = now + storeTimeout
            actions.append(.storeManifest(node: choice.node))
        }
        advance()
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

    /// Feeds a receipt. Forged, mismatched or unexpected receipts are refused and recorded. A
    /// genuine receipt that comes late, from a node whose shard was already re-placed, is refused
    /// and that node is asked to delete its orphan copy.
    /// - Returns: the verdict (``StorageReceipt/Verdict/valid`` when accepted).
    @discardableResult
    public mutating func handleReceipt(_ receipt: StorageReceipt, now: Duration) -> StorageReceipt.Verdict {
        guard phase != .done else { return refuse(receipt, "the put is already finished") }
        guard shards.indices.contains(receipt.shardIndex),
            case .inFlight(let node, _) = shards[receipt.shardIndex], node == receipt.node || !tried.contains(receipt.node)
        else {
            if tried.contains(receipt.node), receipt.verifySignature() {
                actions.append(.delete(shard: receipt.shardIndex, node: receipt.node))
            }
            return refuse(receipt, "shard \(receipt.shardIndex) is not awaiting a receipt from \(receipt.node.short)")
        }
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
        handleManifestFailed(node: node, now: now)
        for i in shards.indices {
            if case .inFlight(let n, _) = shards[i], n == node { handleStoreFailed(shard: i, node: node, now: now) }
        }
    }

    /// Expires stores whose receipt is overdue and re-places them.
    public mutating func handleTimeout(now: Duration) {
        for (node, deadline) in manifestPending.sorted(by: { $0.key < $1.key }) where deadline <= now {
            handleManifestFailed(node: node, now: now)
        }
        for i in shards.indices {
            if case .inFlight(let node, let deadline) = shards[i], deadline <= now {
                handleStoreFailed(shard: i, node: node, now: now)
            }
        }
    }

    /// The earliest receipt deadline, for the driver's timer.
    public var nextDeadline: Duration? {
        guard phase != .done else { return nil }
        return (shards.compactMap { if case .inFlight(_, let d) = $0 { d } else { nil } } + manifestPending.values).min()
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
        let manifestReachable = manifestStored.count + manifestPending.count
        if phase == .storing && stored >= required && manifestStored.count >= manifestRequired {
            phase = .committed
            actions.append(.committed(proof))
        }
        if phase == .storing && (stored + inFlight < required || manifestReachable < manifestRequired) {
            // Cannot commit any more: roll back everything, and send nothing more.
            phase = .done
            actions.removeAll {
                switch $0 {
                case .store, .storeManifest: true
                default: false
                }
            }
            for (i, s) in shards.enumerated() {
                switch s {
                case .stored(let r): actions.append(.delete(shard: i, node: r.node))
                case .inFlight(let node, _): actions.append(.delete(shard: i, node: node))
                case .unplaced: break
                }
            }
            for node in manifestStored.union(manifestPending.keys).sorted() { actions.append(.deleteManifest(node: node)) }
            let why =
                stored + inFlight < required
                ? "\(stored) receipts, \(inFlight) pending, \(required) needed (k + 2)"
                : "only \(manifestReachable) manifest replicas reachable, \(manifestRequired) needed"
            actions.append(
                .failed(
                    HyperMeshError(
                        .placementImpossible,
                        "block \(manifest.blockID.short) could not be committed: \(why); stored shards were deleted. "
                            + "Add nodes or retry later"
                    )))
            return
        }
        if phase == .committed && inFlight == 0 && manifestPending.isEmpty {
            phase = .done
            let unplaced = shards.indices.filter { if case .unplaced = shards[$0] { true } else { false } }
            actions.append(.completed(proof, unplaced: unplaced))
        }
    }
}
