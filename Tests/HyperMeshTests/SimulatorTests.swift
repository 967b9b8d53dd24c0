import Crypto
import STOQSimulation
import Testing

@testable import HyperMesh

/// HyperMesh messages on the simulated network.
enum MeshMessage {
    case storeShard(block: BlockID, shard: Int, bytes: [UInt8])
    case receipt(StorageReceipt)
    case storeManifest(BlockManifest)
    case manifestStored(BlockID)
    case deleteShard(block: BlockID, shard: Int)
    case deleteManifest(BlockID)
    case getShard(block: BlockID, shard: Int)
    case shard(block: BlockID, shard: Int, bytes: [UInt8])
    case notFound(block: BlockID, shard: Int)
}

/// One simulated node: the client running the put and read state machines, or a storage node.
struct MeshSimNode: SimulatedNode {
    typealias Message = MeshMessage

    // Storage node state.
    var key = P256.Signing.PrivateKey()
    var shards: [BlockID: [Int: [UInt8]]] = [:]
    var manifests: [BlockID: BlockManifest] = [:]
    // Client state.
    var isClient = false
    var directory: [MeshNodeID: SimNodeID] = [:]
    var put: BlockPutStateMachine?
    var putResult: BlockPutStateMachine.Action?
    var read: BlockReadStateMachine?
    var readResult: BlockReadStateMachine.Action?
    var block: EncodedBlock?
    var outbox: [SimTransmit<MeshMessage>] = []

    var meshID: MeshNodeID { MeshNodeID(nodeKey: key.publicKey) }

    static func duration(_ t: SimInstant) -> Duration { t.sinceStart }
    static func instant(_ d: Duration) -> SimInstant {
        let (s, atto) = d.components
        return SimInstant(nanoseconds: UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000))
    }

    mutating func handle(message: MeshMessage, from: SimNodeID, now: SimInstant) {
        let t = Self.duration(now)
        switch message {
        case .storeShard(let b, let s, let bytes):
            shards[b, default: [:]][s] = bytes
            let r = try! StorageReceipt.sign(blockID: b, shardIndex: s, shardHash: .hashing(bytes), key: key)
            outbox.append(SimTransmit(to: from, message: .receipt(r), size: 200))
        case .storeManifest(let m):
            manifests[m.blockID] = m
            outbox.append(SimTransmit(to: from, message: .manifestStored(m.blockID)))
        case .deleteShard(let b, let s):
            shards[b]?[s] = nil
        case .deleteManifest(let b):
            manifests[b] = nil
        case .getShard(let b, let s):
            if let bytes = shards[b]?[s] {
                outbox.append(SimTransmit(to: from, message: .shard(block: b, shard: s, bytes: bytes), size: bytes.count))
            } else {
                outbox.append(SimTransmit(to: from, message: .notFound(block: b, shard: s)))
            }
        case .receipt(let r):
            put?.handleReceipt(r, now: t)
        case .manifestStored:
            let sender = meshOf(from)
            put?.handleManifestStored(node: sender, now: t)
        case .shard(_, let s, let bytes):
            let sender = meshOf(from)
            read?.handleShard(s, from: sender, bytes: bytes, now: t)
        case .notFound(_, let s):
            let sender = meshOf(from)
            read?.handleFailure(s, from: sender, now: t)
        }
    }

    func meshOf(_ sim: SimNodeID) -> MeshNodeID { directory.first { $0.value == sim }!.key }

    mutating func handleTimeout(now: SimInstant) {
        put?.handleTimeout(now: Self.duration(now))
        read?.handleTimeout(now: Self.duration(now))
    }

    mutating func pollTransmit(now: SimInstant) -> SimTransmit<MeshMessage>? {
        if isClient { drainActions() }
        return outbox.isEmpty ? nil : outbox.removeFirst()
    }

    mutating func drainActions() {
        guard let block else { return }
        let id = block.manifest.blockID
        while let action = put?.pollAction() {
            switch action {
            case .store(let s, let n):
                outbox.append(SimTransmit(to: directory[n]!, message: .storeShard(block: id, shard: s, bytes: block.shards[s]), size: block.shards[s].count))
            case .delete(let s, let n):
                outbox.append(SimTransmit(to: directory[n]!, message: .deleteShard(block: id, shard: s)))
            case .storeManifest(let n):
                outbox.append(SimTransmit(to: directory[n]!, message: .storeManifest(block.manifest), size: 1000))
            case .deleteManifest(let n):
                outbox.append(SimTransmit(to: directory[n]!, message: .deleteManifest(id)))
            case .committed:
                break
            case .completed, .failed:
                putResult = action
            }
        }
        while let action = read?.pollAction() {
            switch action {
            case .request(let s, let n):
                outbox.append(SimTransmit(to: directory[n]!, message: .getShard(block: id, shard: s)))
            case .cancel:
                break
            case .complete, .failed:
                readResult = action
            }
        }
    }

    func pollTimeout() -> SimInstant? {
        [put?.nextDeadline, read?.nextDeadline].compactMap { $0 }.min().map(Self.instant)
    }
}

@Suite struct SimulatorTests {
    let reader = P256.KeyAgreement.PrivateKey()
    let codec = BlockCodec(coder: try! ErasureCoder())

    /// A client (node 0) and `storage` storage nodes in `regions` regions, 10 ms links.
    func makeSimulator(storage: Int, regions: Int, seed: UInt64) -> (Simulator<MeshSimNode>, PlacementPlanner) {
        var nodes = [MeshSimNode()]
        nodes[0].isClient = true
        for _ in 0..<storage { nodes.append(MeshSimNode()) }
        var directory: [MeshNodeID: SimNodeID] = [:]
        var list: [StorageNode] = []
        for i in 1...storage {
            directory[nodes[i].meshID] = SimNodeID(i)
            list.append(StorageNode(id: nodes[i].meshID, region: "r\(i % regions)", freeBytes: 1 << 40))
        }
        nodes[0].directory = directory
        let sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(10)))
        return (sim, PlacementPlanner(nodes: list))
    }

    func startPut(_ sim: inout Simulator<MeshSimNode>, _ block: EncodedBlock, planner: PlacementPlanner) throws -> PlacementPlan {
        let plan = try planner.plan(block: block.manifest.blockID, shardCount: 14, shardSize: block.manifest.shardSize)
        sim.withNode(SimNodeID(0)) { node, now in
            node.block = block
            node.put = BlockPutStateMachine(
                manifest: block.manifest, plan: plan, planner: planner, now: now.sinceStart, storeTimeout: .milliseconds(200)
            )
        }
        return plan
    }

    func startRead(_ sim: inout Simulator<MeshSimNode>, holders: [Int: MeshNodeID]) {
        sim.withNode(SimNodeID(0)) { node, now in
            let hs = holders.map { ShardHolder(shard: $0.key, node: $0.value, latency: .milliseconds(20)) }
            node.read = BlockReadStateMachine(manifest: node.block!.manifest, holders: hs, now: now.sinceStart, requestTimeout: .milliseconds(300))
        }
    }

    @Test func putSurvivesAKillMidPutAndReadSurvivesFourDeadOrCorruptHolders() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var (sim, planner) = makeSimulator(storage: 24, regions: 4, seed: seed)
        sim.corrupt = { message, _ in
            if case .shard(let b, let s, var bytes) = message {
                bytes[0] ^= 0xff
                message = .shard(block: b, shard: s, bytes: bytes)
            }
        }
        let data = (0..<80_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 7)) }
        let block = try codec.encode(data, readers: [reader.publicKey])
        let plan = try startPut(&sim, block, planner: planner)
        // Fault schedule: two chosen holders die while their shards are on the wire.
        let victims = [plan.shards[3].node, plan.shards[11].node].map { sim[SimNodeID(0)].directory[$0]! }
        for v in victims { sim.schedule(.kill(v), at: SimInstant(nanoseconds: 5_000_000)) }
        #expect(sim.runUntilIdle() == .idle, "seed \(seed)")
        guard case .completed(let proof, let unplaced)? = sim[SimNodeID(0)].putResult else {
            Issue.record("seed \(seed): put ended with \(String(describing: sim[SimNodeID(0)].putResult))")
            return
        }
        #expect(unplaced.isEmpty && proof.verify(against: block.manifest), "seed \(seed)")
        let holders = sim[SimNodeID(0)].put!.holders
        let holderSims = Set(holders.values.map { sim[SimNodeID(0)].directory[$0]! })
        #expect(holderSims.count == 14 && holderSims.isDisjoint(with: victims), "seed \(seed)")
        #expect(sim.stats.droppedDeadNode >= 2)

        // Three more holders die and one corrupts what it sends: 4 of 14 unusable.
        let sorted = holderSims.sorted()
        for v in sorted.prefix(3) { sim.kill(v) }
        sim.setCorrupting(sorted[3], probability: 1)
        startRead(&sim, holders: holders)
        #expect(sim.runUntilIdle() == .idle)
        guard case .complete(let shards)? = sim[SimNodeID(0)].readResult else {
            Issue.record("seed \(seed): read ended with \(String(describing: sim[SimNodeID(0)].readResult))")
            return
        }
        #expect(try codec.decode(manifest: block.manifest, shards: shards, reader: reader) == data, "seed \(seed)")
    }

    @Test func fiveDeadHoldersFailTheReadWithCounts() throws {
        var (sim, planner) = makeSimulator(storage: 16, regions: 4, seed: 11)
        let block = try codec.encode(Array(repeating: 1, count: 5000), readers: [reader.publicKey])
        _ = try startPut(&sim, block, planner: planner)
        #expect(sim.runUntilIdle() == .idle)
        let holders = sim[SimNodeID(0)].put!.holders
        for v in holders.values.map({ sim[SimNodeID(0)].directory[$0]! }).sorted().prefix(5) { sim.kill(v) }
        startRead(&sim, holders: holders)
        #expect(sim.runUntilIdle() == .idle)
        guard case .failed(let error)? = sim[SimNodeID(0)].readResult else {
            Issue.record("read ended with \(String(describing: sim[SimNodeID(0)].readResult))")
            return
        }
        #expect(error.reason.contains("5 of 14 shards are missing") && error.reason.contains("10 are needed"))
    }

    @Test func putWithTooFewSurvivorsRollsBackEverywhere() throws {
        var (sim, planner) = makeSimulator(storage: 14, regions: 2, seed: 12)
        let block = try codec.encode(Array(repeating: 2, count: 5000), readers: [reader.publicKey])
        _ = try startPut(&sim, block, planner: planner)
        for i in 1...3 { sim.schedule(.kill(SimNodeID(i)), at: SimInstant(nanoseconds: 1_000_000)) }
        #expect(sim.runUntilIdle() == .idle)
        guard case .failed(let error)? = sim[SimNodeID(0)].putResult else {
            Issue.record("put ended with \(String(describing: sim[SimNodeID(0)].putResult))")
            return
        }
        #expect(error.reason.contains("could not be committed"))
        for i in 4...14 {
            #expect(sim[SimNodeID(i)].shards[block.manifest.blockID, default: [:]].isEmpty, "node \(i) kept a shard")
            #expect(sim[SimNodeID(i)].manifests[block.manifest.blockID] == nil, "node \(i) kept the manifest")
        }
    }
}
