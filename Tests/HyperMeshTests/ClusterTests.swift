import Crypto
import Testing

@testable import HyperMesh
import STOQSimulation

/// A storage node in the in-test model: a key, a region, a shard store, and a fault mode.
final class ModelNode {
    enum Fault { case none, diesOnStore, silent, tampers, dead }
    let key = P256.Signing.PrivateKey()
    let id: MeshNodeID
    let region: String
    var latency: Duration
    var fault: Fault = .none
    var shards: [BlockID: [Int: [UInt8]]] = [:]
    var manifests: [BlockID: [UInt8]] = [:]

    init(region: String, latency: Duration) {
        id = MeshNodeID(nodeKey: key.publicKey)
        self.region = region
        self.latency = latency
    }
}

/// A small cluster driven by the sans-IO state machines with a virtual clock (STOQSimulation is
/// being written in parallel; this model stands in until it lands).
struct ModelCluster {
    var nodes: [ModelNode]
    var now: Duration = .zero
    var audit = AuditLog()
    var log: [String] = []

    init(count: Int, regions: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        nodes = (0..<count).map { i in
            ModelNode(region: "r\(i % regions)", latency: .milliseconds(Int.random(in: 5...80, using: &rng)))
        }
    }

    var planner: PlacementPlanner {
        PlacementPlanner(nodes: nodes.map { StorageNode(id: $0.id, region: $0.region, freeBytes: 1 << 40) })
    }

    func node(_ id: MeshNodeID) -> ModelNode { nodes.first { $0.id == id }! }

    /// Stores a block; returns the final put action and the state machine.
    mutating func put(_ block: EncodedBlock) throws -> (BlockPutStateMachine.Action, BlockPutStateMachine) {
        let plan = try planner.plan(block: block.manifest.blockID, shardCount: 14, shardSize: block.manifest.shardSize)
        var sm = BlockPutStateMachine(manifest: block.manifest, plan: plan, planner: planner, now: now)
        while true {
            guard let action = sm.pollAction() else {
                guard let deadline = sm.nextDeadline else { Issue.record("put stalled"); return (.failed(HyperMeshError(.invalidParameters, "stalled")), sm) }
                now = max(now, deadline)
                sm.handleTimeout(now: now)
                continue
            }
            switch action {
            case .store(let shard, let id):
                let n = node(id)
                switch n.fault {
                case .dead, .diesOnStore:
                    n.fault = .dead
                    sm.handleStoreFailed(shard: shard, node: id, now: now)
                case .silent:
                    break
                case .none, .tampers:
                    n.shards[block.manifest.blockID, default: [:]][shard] = block.shards[shard]
                    audit.append(.transfer(block: block.manifest.blockID, shard: shard, from: nil, to: id), now: now)
                    let r = try StorageReceipt.sign(blockID: block.manifest.blockID, shardIndex: shard, shardHash: Digest256.hashing(block.shards[shard]), key: n.key)
                    sm.handleReceipt(r, now: now)
                }
            case .storeManifest(let id):
                let n = node(id)
                switch n.fault {
                case .dead, .diesOnStore:
                    n.fault = .dead
                    sm.handleManifestFailed(node: id, now: now)
                case .silent:
                    break
                case .none, .tampers:
                    n.manifests[block.manifest.blockID] = block.manifest.encoded()
                    sm.handleManifestStored(node: id, now: now)
                }
            case .deleteManifest(let id):
                node(id).manifests[block.manifest.blockID] = nil
            case .delete(let shard, let id):
                node(id).shards[block.manifest.blockID]?[shard] = nil
                log.append("delete \(shard)")
            case .committed(let proof):
                audit.append(.commit(block: proof.blockID, receipts: proof.receipts.count), now: now)
            case .completed, .failed:
                return (action, sm)
            }
        }
    }

    /// Holders of each shard of a block, as (shard, node, latency).
    func holders(of block: BlockID) -> [ShardHolder] {
        nodes.flatMap { n in (n.shards[block] ?? [:]).keys.map { ShardHolder(shard: $0, node: n.id, latency: n.latency) } }
    }

    /// Reads a block's shards with long-tail cutting; returns the final action and the requests made/cancelled.
    mutating func read(_ manifest: BlockManifest) -> (BlockReadStateMachine.Action, BlockReadStateMachine, requested: Int, cancelled: Int) {
        var sm = BlockReadStateMachine(manifest: manifest, holders: holders(of: manifest.blockID), now: now)
        var inFlight: [(at: Duration, shard: Int, node: MeshNodeID)] = []
        var requested = 0, cancelled = 0
        while true {
            while let action = sm.pollAction() {
                switch action {
                case .request(let shard, let id):
                    requested += 1
                    let n = node(id)
                    if n.fault != .dead && n.fault != .silent { inFlight.append((now + n.latency, shard, id)) }
                    else if n.fault == .dead { inFlight.append((now + .milliseconds(1), shard, id)) }
                case .cancel(let shard, let id):
                    cancelled += 1
                    inFlight.removeAll { $0.shard == shard && $0.node == id }
                case .complete, .failed:
                    return (action, sm, requested, cancelled)
                }
            }
            inFlight.sort { $0.at < $1.at }
            let nextTimer = sm.nextDeadline
            if let first = inFlight.first, nextTimer == nil || first.at < nextTimer! {
                inFlight.removeFirst()
                now = first.at
                let n = node(first.node)
                if n.fault == .dead {
                    sm.handleFailure(first.shard, from: first.node, now: now)
                } else if var bytes = n.shards[manifest.blockID]?[first.shard] {
                    if n.fault == .tampers { bytes[0] ^= 0xff }
                    sm.handleShard(first.shard, from: first.node, bytes: bytes, now: now)
                } else {
                    sm.handleFailure(first.shard, from: first.node, now: now)
                }
            } else if let t = nextTimer {
                now = t
                sm.handleTimeout(now: now)
            } else {
                Issue.record("read stalled")
                return (.failed(HyperMeshError(.invalidParameters, "stalled")), sm, requested, cancelled)
            }
        }
    }
}

@Suite struct ClusterTests {
    let reader = P256.KeyAgreement.PrivateKey()
    let codec = BlockCodec(coder: try! ErasureCoder())

    func content(_ seed: UInt64, _ n: Int) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    @Test func putCommitsWithFourteenReceiptsAndReadCutsTheTail() throws {
        var cluster = ModelCluster(count: 24, regions: 4, seed: 1)
        let data = content(1, 200_000)
        let block = try codec.encode(data, readers: [reader.publicKey])
        let (result, sm) = try cluster.put(block)
        guard case .completed(let proof, let unplaced) = result else { Issue.record("put: \(result)"); return }
        #expect(unplaced.isEmpty && proof.receipts.count == 14 && proof.verify(against: block.manifest))
        #expect(Set(sm.holders.values).count == 14)
        #expect(sm.manifestHolders.count == 3)
        #expect(cluster.nodes.filter { $0.manifests[block.manifest.blockID] != nil }.count == 3)
        #expect(cluster.audit.verify() == .intact)
        #expect(cluster.audit.entries.filter { if case .commit = $0.event { true } else { false } }.count == 1)

        let (read, _, requested, cancelled) = cluster.read(block.manifest)
        guard case .complete(let shards) = read else { Issue.record("read: \(read)"); return }
        #expect(requested == 12 && cancelled == 2)
        #expect(shards.compactMap { $0 }.count == 10)
        #expect(try codec.decode(manifest: block.manifest, shards: shards, reader: reader) == data)
    }

    @Test func anyFourDeadHoldersStillReadBitIdentical() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        for round in 0..<8 {
            var cluster = ModelCluster(count: 20, regions: 5, seed: rng.next())
            let data = content(rng.next(), Int.random(in: 1...60_000, using: &rng))
            let block = try codec.encode(data, readers: [reader.publicKey])
            _ = try cluster.put(block)
            let holders = Array(Set(cluster.holders(of: block.manifest.blockID).map(\.node))).sorted()
            for id in holders.shuffled(using: &rng).prefix(4) { cluster.node(id).fault = .dead }
            let (read, _, _, _) = cluster.read(block.manifest)
            guard case .complete(let shards) = read else { Issue.record("seed \(seed) round \(round): \(read)"); return }
            #expect(try codec.decode(manifest: block.manifest, shards: shards, reader: reader) == data, "seed \(seed) round \(round)")
        }
    }

    @Test func fiveDeadHoldersFailWithHowManyAreMissing() throws {
        var cluster = ModelCluster(count: 20, regions: 5, seed: 3)
        let block = try codec.encode(content(3, 30_000), readers: [reader.publicKey])
        _ = try cluster.put(block)
        let holders = Array(Set(cluster.holders(of: block.manifest.blockID).map(\.node))).sorted()
        for id in holders.prefix(5) { cluster.node(id).fault = .dead }
        let (read, _, _, _) = cluster.read(block.manifest)
        guard case .failed(let error) = read else { Issue.record("read succeeded with 5 lost: \(read)"); return }
        #expect(error.code == .notEnoughShards)
        #expect(error.reason.contains("5 of 14 shards are missing"))
        #expect(error.reason.contains("9 remain but 10 are needed"))
    }

    @Test func tamperedShardIsRefusedAndAnotherIsFetched() throws {
        var cluster = ModelCluster(count: 20, regions: 4, seed: 4)
        let data = content(4, 40_000)
        let block = try codec.encode(data, readers: [reader.publicKey])
        _ = try cluster.put(block)
        let holders = cluster.holders(of: block.manifest.blockID).sorted { $0.latency < $1.latency }
        for h in holders.prefix(3) { cluster.node(h.node).fault = .tampers }
        let (read, sm, _, _) = cluster.read(block.manifest)
        guard case .complete(let shards) = read else { Issue.record("read: \(read)"); return }
        #expect(sm.tampered.count == 3)
        #expect(try codec.decode(manifest: block.manifest, shards: shards, reader: reader) == data)
    }

    @Test func forgedReceiptIsRefusedDuringPut() throws {
        let cluster = ModelCluster(count: 16, regions: 4, seed: 5)
        let block = try codec.encode(content(5, 1000), readers: [reader.publicKey])
        let plan = try cluster.planner.plan(block: block.manifest.blockID, shardCount: 14, shardSize: block.manifest.shardSize)
        var sm = BlockPutStateMachine(manifest: block.manifest, plan: plan, planner: cluster.planner, now: .zero)
        let forger = P256.Signing.PrivateKey()
        let forged = try StorageReceipt.sign(blockID: block.manifest.blockID, shardIndex: 0, shardHash: block.manifest.shardHashes[0], key: forger)
        #expect(sm.handleReceipt(forged, now: .zero) != .valid)
        #expect(sm.rejected.count == 1 && sm.rejected[0].reason.contains("was sent to"))
        #expect(sm.receipts.isEmpty)
    }

    @Test func nodeDyingDuringPutIsReplacedElsewhere() throws {
        var cluster = ModelCluster(count: 20, regions: 4, seed: 6)
        let data = content(6, 50_000)
        let block = try codec.encode(data, readers: [reader.publicKey])
        let plan = try cluster.planner.plan(block: block.manifest.blockID, shardCount: 14, shardSize: block.manifest.shardSize)
        cluster.node(plan.shards[2].node).fault = .diesOnStore
        cluster.node(plan.shards[9].node).fault = .silent
        let silentReplica = plan.metadata.first { $0.node != plan.shards[2].node }!.node
        cluster.node(silentReplica).fault = .silent
        let (result, sm) = try cluster.put(block)
        #expect(sm.manifestHolders.count == 3 && !sm.manifestHolders.contains(silentReplica))
        guard case .completed(let proof, let unplaced) = result else { Issue.record("put: \(result)"); return }
        #expect(unplaced.isEmpty && proof.receipts.count == 14)
        #expect(sm.holders[2] != plan.shards[2].node && sm.holders[9] != plan.shards[9].node)
        #expect(Set(sm.holders.values).count == 14)
        for h in [plan.shards[2].node, plan.shards[9].node] { cluster.node(h).fault = .dead }
        let (read, _, _, _) = cluster.read(block.manifest)
        guard case .complete(let shards) = read else { Issue.record("read: \(read)"); return }
        #expect(try codec.decode(manifest: block.manifest, shards: shards, reader: reader) == data)
    }

    @Test func putFailsCleanlyWhenTooManyNodesDie() throws {
        // 15 nodes, 4 die on store: only 11 can hold shards, fewer than k + 2 = 12.
        var cluster = ModelCluster(count: 15, regions: 3, seed: 7)
        let block = try codec.encode(content(7, 20_000), readers: [reader.publicKey])
        for n in cluster.nodes.prefix(4) { n.fault = .diesOnStore }
        let (result, _) = try cluster.put(block)
        guard case .failed(let error) = result else { Issue.record("put: \(result)"); return }
        #expect(error.reason.contains("could not be committed"))
        #expect(cluster.nodes.allSatisfy { ($0.shards[block.manifest.blockID] ?? [:]).isEmpty }, "no shard left behind")
        #expect(cluster.nodes.allSatisfy { $0.manifests[block.manifest.blockID] == nil }, "no manifest left behind")
        #expect(!cluster.audit.entries.contains { if case .commit = $0.event { true } else { false } })
    }

    @Test func lostShardsAreRebuiltAndPlacedOnNewNodes() throws {
        var cluster = ModelCluster(count: 24, regions: 4, seed: 8)
        let data = content(8, 120_000)
        let block = try codec.encode(data, readers: [reader.publicKey])
        let (_, put) = try cluster.put(block)
        var holders = put.holders
        // Three holders are found dead by challenges.
        let deadShards = [1, 6, 12]
        var excluded = Set<MeshNodeID>()
        for s in deadShards {
            let n = cluster.node(holders[s]!)
            n.fault = .dead
            excluded.insert(n.id)
            cluster.audit.append(.shardLost(block: block.manifest.blockID, shard: s, node: n.id, reason: "challenge unanswered"), now: cluster.now)
        }
        // Read any k, rebuild the lost, place them anew.
        let (read, _, _, _) = cluster.read(block.manifest)
        guard case .complete(let shards) = read else { Issue.record("read: \(read)"); return }
        let rebuilt = try BlockRepair.rebuild(manifest: block.manifest, shards: shards, lost: deadShards, coder: codec.coder)
        #expect(rebuilt.keys.sorted() == deadShards)
        let placements = try BlockRepair.placements(for: deadShards, manifest: block.manifest, holders: holders, planner: cluster.planner, excluding: excluded)
        for p in placements {
            let n = cluster.node(p.node)
            #expect(!excluded.contains(p.node) && !holders.values.contains(p.node))
            n.shards[block.manifest.blockID, default: [:]][p.slot] = rebuilt[p.slot]!
            let r = try StorageReceipt.sign(blockID: block.manifest.blockID, shardIndex: p.slot, shardHash: .hashing(rebuilt[p.slot]!), key: n.key)
            #expect(r.verify(against: block.manifest, expectedNode: p.node) == .valid)
            cluster.audit.append(.transfer(block: block.manifest.blockID, shard: p.slot, from: nil, to: p.node), now: cluster.now)
            holders[p.slot] = p.node
        }
        #expect(Set(holders.values).count == 14)
        #expect(cluster.audit.verify() == .intact)
        // Four more holders die (other than the new ones): still readable.
        let original = holders.filter { !deadShards.contains($0.key) }.map(\.value).sorted()
        for id in original.prefix(4) { cluster.node(id).fault = .dead }
        let (again, _, _, _) = cluster.read(block.manifest)
        guard case .complete(let s2) = again else { Issue.record("read after repair: \(again)"); return }
        #expect(try codec.decode(manifest: block.manifest, shards: s2, reader: reader) == data)
    }
}

@Suite struct PutStateMachineTests {
    @Test func lateReceiptFromAReplacedNodeIsRefusedAndItsCopyDeleted() throws {
        let reader = P256.KeyAgreement.PrivateKey()
        let keys = (0..<16).map { _ in P256.Signing.PrivateKey() }
        let nodes = keys.enumerated().map { StorageNode(id: MeshNodeID(nodeKey: $1.publicKey), region: "r\($0 % 4)", freeBytes: 1 << 30) }
        let keyOf = Dictionary(uniqueKeysWithValues: zip(nodes.map(\.id), keys))
        let planner = PlacementPlanner(nodes: nodes)
        let block = try BlockCodec(coder: try ErasureCoder()).encode(Array(repeating: 5, count: 3000), readers: [reader.publicKey])
        let m = block.manifest
        let plan = try planner.plan(block: m.blockID, shardCount: 14, shardSize: m.shardSize)
        var sm = BlockPutStateMachine(manifest: m, plan: plan, planner: planner, now: .zero, storeTimeout: .seconds(1))
        while sm.pollAction() != nil {}
        // Everyone but shard 0's node answers, and the manifest replicas acknowledge.
        for a in plan.shards where a.slot != 0 {
            sm.handleReceipt(try StorageReceipt.sign(blockID: m.blockID, shardIndex: a.slot, shardHash: m.shardHashes[a.slot], key: keyOf[a.node]!), now: .zero)
        }
        for r in plan.metadata { sm.handleManifestStored(node: r.node, now: .zero) }
        guard case .committed? = sm.pollAction() else { Issue.record("not committed at 13 receipts"); return }
        #expect(sm.nextDeadline == .seconds(1))
        sm.handleTimeout(now: .seconds(2))
        guard case .store(0, let replacement)? = sm.pollAction() else { Issue.record("shard 0 not re-placed"); return }
        #expect(replacement != plan.shards[0].node)
        // The slow node's receipt arrives late.
        let late = try StorageReceipt.sign(blockID: m.blockID, shardIndex: 0, shardHash: m.shardHashes[0], key: keyOf[plan.shards[0].node]!)
        #expect(sm.handleReceipt(late, now: .seconds(2)) != .valid)
        #expect(sm.pollAction() == .delete(shard: 0, node: plan.shards[0].node))
        sm.handleReceipt(try StorageReceipt.sign(blockID: m.blockID, shardIndex: 0, shardHash: m.shardHashes[0], key: keyOf[replacement]!), now: .seconds(2))
        guard case .completed(let proof, let unplaced)? = sm.pollAction() else { Issue.record("not completed"); return }
        #expect(proof.receipts.count == 14 && unplaced.isEmpty)
        #expect(sm.nextDeadline == nil && sm.pollAction() == nil)
    }
}
