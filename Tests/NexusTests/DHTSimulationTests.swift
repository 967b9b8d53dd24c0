import Crypto
import Testing
@testable import Nexus
import STOQSimulation
import NexusSimulation
import NexusBenchmarks

@Suite struct DHTSimulationTests {
    @Test func putGetAndProvidersOnAConvergedNetwork() throws {
        var sim = DHTSimulator(count: 400, seed: 61)
        sim.encodeMessages = true
        sim.prefillConverged()
        let key = NexusHash.sha256(Array("hello".utf8))
        let storedOn = try sim.put(on: 5, key: key, value: Array("world".utf8))
        #expect(storedOn.count == 3)
        // Stored on the 3 closest nodes of the whole network.
        let view = ConvergedView(ids: sim.nodes.map(\.id))
        #expect(Set(storedOn) == Set(view.closest(to: key, count: 3).map { view.sortedIDs[$0] }))
        let gotFound = sim.lookup(on: 300, .value, target: key)
        let got = try #require(gotFound)
        #expect(got.result.value == Array("world".utf8))
        #expect(got.result.rounds <= 3)
        // Providers.
        let content = NexusHash.sha256(Array("manifest".utf8))
        let stored1 = sim.provide(on: 17, key: content)
        #expect(stored1.count == 3)
        let stored2 = sim.provide(on: 18, key: content)
        #expect(stored2.count == 3)
        let pFound = sim.lookup(on: 250, .providers, target: content)
        let p = try #require(pFound)
        #expect(Set(p.result.providers.map(\.id)) == [sim.nodes[17].id, sim.nodes[18].id])
        // Node lookup finds the k closest.
        let target = NexusHash.sha256(Array("t".utf8))
        let nFound = sim.lookup(on: 3, .node, target: target)
        let n = try #require(nFound)
        #expect(n.result.closest.map(\.id) == view.closest(to: target, count: 21).map { view.sortedIDs[$0] }.filter { $0 != sim.nodes[3].id }.prefix(20).map { $0 })
    }

    /// The leave-mid-lookup scenario; returns the lookup and a fingerprint of the whole run.
    static func leaveMidLookup(seed: UInt64) throws -> (result: DHTSimulator.Completed, origin: Int, firstWave: [Int], fingerprint: String, sim: DHTSimulator) {
        var sim = DHTSimulator(count: 300, seed: seed)
        sim.prefillConverged()
        let key = NexusHash.sha256(Array("k".utf8))
        let storedOn = try sim.put(on: 1, key: key, value: [42])
        // Kill a third of the network, including two of the three holders.
        let view = ConvergedView(ids: sim.nodes.map(\.id))
        let holders = view.closest(to: key, count: 3).map { sim.node(withID: view.sortedIDs[$0])! }
        #expect(Set(storedOn.map { sim.node(withID: $0)! }) == Set(holders), "the value must sit on the 3 closest nodes; seed \(seed)")
        var rng = SplitMix64(seed: seed)
        for i in 2..<300 where rng.next() % 3 == 0 && !holders.contains(i) { sim.kill(i) }
        sim.kill(holders[0]); sim.kill(holders[1])
        var origin = 100
        func firstWave(_ o: Int) -> [Int] { sim.nodes[o].table.closest(to: key, count: 3).map { sim.node(withID: $0.id)! } }
        while !sim.alive[origin] || holders.contains(origin) || sim.nodes[origin].values[key] != nil || firstWave(origin).contains(holders[2]) { origin += 1 }
        // The first wave is what the lookup queries when it starts (α = 3 closest in the table);
        // taken before the start so nothing the origin hears later can change it.
        let wave = firstWave(origin)
        let start = sim.now
        // Start the lookup, let the first requests leave (latency >= 5 ms), then kill their
        // targets and another part of the network mid-lookup.
        let lid = sim.startLookup(on: origin, .value, target: key)
        sim.run(until: sim.now + 4)
        for i in wave { sim.kill(i) }
        for i in 2..<300 where rng.next() % 2 == 0 && !holders.contains(i) && i != origin { sim.kill(i) }
        sim.run(until: sim.now + 600_000) { sim in sim.completed.contains { $0.node == origin && $0.lookup == lid } }
        let r = try #require(sim.completed.last { $0.node == origin && $0.lookup == lid })
        let fingerprint = "origin \(origin) wave \(wave) start \(start) end \(sim.now) delivered \(sim.delivered) messages \(r.result.messages) timeouts \(r.result.timeouts) rounds \(r.result.rounds)"
        return (r, origin, wave, fingerprint, sim)
    }

    @Test func nodesLeavingMidLookupDoNotStallIt() async throws {
        let seed: UInt64 = 62
        // The simulation is seeded: the same run, twice at once on other threads, must agree to the
        // message (no hash-order or clock dependence), whatever else the process is doing.
        let runs = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<2 { group.addTask { try Self.leaveMidLookup(seed: seed).fingerprint } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        let (r, origin, wave, fingerprint, simulation) = try Self.leaveMidLookup(seed: seed)
        var sim = simulation
        #expect(runs.allSatisfy { $0 == fingerprint }, "runs differ: \(runs) vs \(fingerprint)")
        #expect(r.result.value == [42], "\(fingerprint); seed \(seed)")
        // The origin asked the network (it held no copy), and the first wave it asked died.
        #expect(r.result.messages > wave.count, "\(fingerprint); seed \(seed)")
        #expect(r.result.timeouts >= wave.count, "\(fingerprint); seed \(seed)")
        // Each dead peer costs one 1 s timeout in a slot, not a stall.
        #expect(r.elapsed < 10_000, "\(fingerprint); seed \(seed)")
        let nFound = sim.lookup(on: origin, .node, target: NexusHash.sha256([9]))
        let n = try #require(nFound)
        #expect(n.result.closest.allSatisfy { sim.alive[sim.node(withID: $0.id)!] })
    }

    @Test func realisticBootstrapFillsBucketsAndLookupsWork() throws {
        // Nodes join one at a time from a random earlier node: own-id lookup, then one
        // random-id lookup per bucket farther than the closest neighbour.
        let n = 250
        var sim = DHTSimulator(count: n, seed: 63)
        sim.bootstrapSequentially(0..<n)
        #expect(sim.bootstrapped.count == n - 1)
        // Buckets are well populated: compare with the converged view.
        let view = ConvergedView(ids: sim.nodes.map(\.id))
        var learnt = 0, ideal = 0
        for node in sim.nodes {
            learnt += node.table.count
            ideal += view.contacts(of: node.id, k: 20, seed: 1).reduce(0) { $0 + $1.count }
        }
        #expect(Double(learnt) >= 0.8 * Double(ideal), "learnt \(learnt) of \(ideal)")
        let key = NexusHash.sha256([7])
        let stored3 = try sim.put(on: 10, key: key, value: [1, 2])
        #expect(stored3.count == 3)
        for origin in stride(from: 20, to: n, by: 23) where sim.nodes[origin].storedValueCount == 0 {
            let rFound = sim.lookup(on: origin, .value, target: key)
        let r = try #require(rFound)
            #expect(r.result.value == [1, 2])
            #expect(r.result.rounds <= 3)
        }
    }

    @Test func recordsExpireAndAreRepublished() throws {
        var config = DHTConfiguration()
        config.recordTTL = 600            // 10 min
        config.republishInterval = 120_000 // 2 min
        config.maintenanceInterval = 30_000
        var sim = DHTSimulator(count: 120, config: config, seed: 64)
        sim.prefillConverged()
        let key = NexusHash.sha256([1])
        let first = try sim.put(on: 0, key: key, value: [5])
        #expect(first.count == 3)
        // Kill one holder; after a republish round the record is on 3 live nodes again.
        sim.kill(sim.node(withID: first[0])!)
        sim.run(until: sim.now + 200_000)
        let holders = sim.nodes.indices.filter { sim.alive[$0] && sim.nodes[$0].values[key] != nil && $0 != 0 }
        #expect(holders.count >= 3)
        // Past the TTL (no one re-puts with a fresh TTL) every copy is gone.
        sim.run(until: sim.now + 700_000)
        #expect(sim.nodes.indices.allSatisfy { !sim.alive[$0] || sim.nodes[$0].values[key] == nil })
    }

    @Test func signedNameRecordsThroughTheDHT() throws {
        let now: UInt64 = 0
        var sim = DHTSimulator(count: 150, validator: NameRecordValidator(), seed: 65)
        sim.prefillConverged()
        let owner = P256.Signing.PrivateKey()
        let name = try NexusName("site.stoq")
        let v1 = try NameRecord.sign(name: name, value: .content(.sha256([1])), version: 1, issuedAt: now, ttl: 3600, owner: owner)
        let v2 = try NameRecord.sign(name: name, value: .content(.sha256([2])), version: 2, issuedAt: now, ttl: 3600, owner: owner)
        let stored4 = try sim.put(on: 3, key: name.key, value: v2.encode())
        #expect(stored4.count == 3)
        // Stale (lower version) and forged records are refused by the holders.
        let stored5 = try sim.put(on: 4, key: name.key, value: v1.encode())
        #expect(stored5.isEmpty)
        let thief = try NameRecord.sign(name: name, value: .content(.zero), version: 9, issuedAt: now, ttl: 3600, owner: P256.Signing.PrivateKey())
        let stored6 = try sim.put(on: 5, key: name.key, value: thief.encode())
        #expect(stored6.isEmpty)
        let wrongKey = try sim.put(on: 6, key: NexusHash.sha256([0]), value: v2.encode())
        #expect(wrongKey.isEmpty) // wrong key
        let rFound = sim.lookup(on: 100, .value, target: name.key)
        let r = try #require(rFound)
        #expect(try NameRecord.decode(try #require(r.result.value)) == v2)
    }

    @Test func valueLookupsAt10kNodesTakeAtMost3RoundsP99() throws {
        let run = try NexusBenchmark.dhtLookups(nodes: 10_000, bootstrap: false, values: 20, lookups: 300, seed: 66)
        print("DHT 10k (message-level):", run)
        #expect(run.found == run.rounds.count)
        #expect(run.p99Rounds <= 3)
    }

    @Test func stateAndRoundsGrowLogarithmically() {
        let rows = NexusBenchmark.dhtScale(sizes: [1_000, 10_000, 100_000], lookups: 200, seed: 67)
        for r in rows { print("DHT scale:", r) }
        #expect(rows.allSatisfy { $0.found == $0.lookups })
        // Per-node state per log2(N) stays within a constant band (O(log N)), as do rounds.
        let perLog = rows.map { $0.meanContacts / $0.log2N }
        #expect(perLog.max()! / perLog.min()! < 1.6)
        #expect(rows.last!.meanRounds / rows.last!.log2N <= rows.first!.meanRounds / rows.first!.log2N * 1.5)
        #expect(rows[1].p99Rounds <= 3)
    }
}
