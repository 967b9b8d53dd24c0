import STOQSimulation
import Testing
@testable import Nexus
import NexusSimulation
@testable import NexusBenchmarks

/// Runs ``KademliaNode`` under the shared `STOQSimulation` network: every message crosses the
/// simulated wire as bytes (``DHTMessage/encode()``), with latency, jitter, loss and kills. The
/// sender's ``NodeRecord`` travels beside the bytes, standing in for what the QUIC adapter learns
/// from the peer's certificate.
struct SimDHTNode: SimulatedNode {
    struct Wire { var sender: NodeRecord; var bytes: [UInt8] }
    typealias Message = Wire

    var dht: KademliaNode
    var finished: [LookupID: (result: LookupResult, at: SimInstant)] = [:]
    var stored: [LookupID: [NexusID]] = [:]
    var malformed = 0

    static func ms(_ t: SimInstant) -> UInt64 { t.nanoseconds / 1_000_000 }
    /// The simulator index is the low 64 bits of the node's first (fd00::/8) address.
    static func simID(_ r: NodeRecord) -> SimNodeID { SimNodeID(Int(r.addresses[0].low)) }

    mutating func handle(message: Wire, from: SimNodeID, now: SimInstant) {
        guard let m = try? DHTMessage.decode(message.bytes) else { malformed += 1; return }
        dht.handle(m, from: message.sender, now: Self.ms(now))
    }
    mutating func handleTimeout(now: SimInstant) { dht.handleTimeout(now: Self.ms(now)) }
    mutating func pollTransmit(now: SimInstant) -> SimTransmit<Wire>? {
        while let a = dht.pollAction() {
            switch a {
            case .send(let to, let m):
                let bytes = m.encode()
                return SimTransmit(to: Self.simID(to), message: Wire(sender: dht.record, bytes: bytes), size: bytes.count + 60)
            case .lookupFinished(let id, let r): finished[id] = (r, now)
            case .storeFinished(let id, _, let on): stored[id] = on
            case .bootstrapFinished: break
            }
        }
        return nil
    }
    func pollTimeout() -> SimInstant? { SimInstant(nanoseconds: dht.pollTimeout() * 1_000_000) }
}

func convergedSimNodes(_ n: Int, seed: UInt64, config: DHTConfiguration = DHTConfiguration(), validator: any DHTRecordValidator = AcceptAllValidator()) -> [SimDHTNode] {
    var nodes: [KademliaNode] = []
    for i in 0..<n {
        let id = NexusHash.sha256(Array("sim-\(seed)-\(i)".utf8))
        let addr = try! NexusAddress(high: 0xFD00 << 48, low: UInt64(i), port: 4433)
        nodes.append(KademliaNode(record: NodeRecord(id: id, addresses: [addr], region: "r\(i % 4)"), config: config, validator: validator, seed: seed, now: 0))
    }
    let view = ConvergedView(ids: nodes.map(\.id))
    var index: [NexusID: Int] = [:]
    for (i, n) in nodes.enumerated() { index[n.id] = i }
    let records = view.sortedIDs.map { nodes[index[$0]!].record }
    for i in nodes.indices {
        nodes[i].addContacts(view.contacts(of: nodes[i].id, k: 20, seed: seed).flatMap { $0 }.map { records[$0] }, now: 0)
    }
    return nodes.map { SimDHTNode(dht: $0) }
}

@Suite struct DHTOverSTOQSimulationTests {
    @Test func lookupsSurviveLossJitterAndKills() throws {
        let seed: UInt64 = 81, n = 1_500
        var sim = Simulator(nodes: convergedSimNodes(n, seed: seed), seed: seed,
                            link: SimLink(latency: .milliseconds(20), jitter: .milliseconds(15), loss: 0.01))
        // Store 10 values (replication 3).
        var keys: [(NexusID, LookupID, SimNodeID)] = []
        for v in 0..<10 {
            let key = NexusHash.sha256(Array("v\(v)".utf8)), origin = SimNodeID(v * 7)
            let lid = try sim.withNode(origin) { node, now in try node.dht.put(key: key, value: [UInt8(v)], now: SimDHTNode.ms(now)) }
            keys.append((key, lid, origin))
        }
        sim.drive(for: .seconds(5))
        for (_, lid, origin) in keys { #expect((sim[origin].stored[lid]?.count ?? 0) >= 2, "seed \(seed)") }
        // 15 % of the other nodes die; then lookups run while another 5 % die mid-way.
        for i in stride(from: 100, to: n, by: 7) { sim.kill(SimNodeID(i)) }
        var lookups: [(SimNodeID, LookupID, Int)] = []
        for q in 0..<120 {
            let origin = SimNodeID(101 + q * 11 % (n - 101))
            guard sim.isAlive(origin) else { continue }
            let k = q % keys.count
            let lid = sim.withNode(origin) { node, now in node.dht.startLookup(.value, target: keys[k].0, now: SimDHTNode.ms(now)) }
            lookups.append((origin, lid, k))
        }
        sim.drive(for: .milliseconds(30))
        for i in stride(from: 103, to: n, by: 20) where !lookups.contains(where: { $0.0 == SimNodeID(i) }) { sim.kill(SimNodeID(i)) }
        sim.drive(for: .seconds(30))
        // A value survives if a live node other than its publisher still holds it.
        let reachable = keys.map { key in
            sim.nodeIDs.contains { $0 != key.2 && sim.isAlive($0) && sim[$0].dht.values[key.0] != nil }
        }
        var rounds: [Int] = [], found = 0, expected = 0
        for (origin, lid, k) in lookups {
            let r = try #require(sim[origin].finished[lid], "lookup on \(origin) did not finish; seed \(seed)")
            if r.result.value == [UInt8(k)] { found += 1 }
            if reachable[k] {
                expected += 1
                #expect(r.result.value == [UInt8(k)], "lookup on \(origin) for value \(k) missed a live copy; seed \(seed)")
            }
            rounds.append(r.result.rounds)
        }
        print("STOQSimulation DHT: \(lookups.count) lookups, found \(found) of \(expected) with a live copy, values lost with all holders \(reachable.filter { !$0 }.count), rounds p99 \(NexusBenchmark.percentile(rounds, 0.99)), stats \(sim.stats)")
        #expect(expected >= lookups.count * 3 / 4)
        #expect(sim.nodeIDs.allSatisfy { sim[$0].malformed == 0 })
    }
}
