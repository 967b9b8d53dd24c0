import Crypto
import STOQSimulation
import Testing
@testable import Nexus

/// The Kademlia DHT through a network partition and its healing, under `STOQSimulation` (every
/// message as bytes, 20 ± 10 ms links, 1 % loss). Seeded: a failure names its seed.
///
/// The network splits into two random halves for 60 s of virtual time. Records stored before the
/// split, records stored on either side during it, and a name whose owner publishes a new version
/// on one side while the other side still holds the old one must all be found, at their newest
/// version, from every side after the heal:
/// - a record is never lost: lookups started 1 s after the heal find every record within 10 s;
/// - a name converges to its newest version everywhere within one republish interval plus one
///   maintenance tick after the heal (the owner's republish reaches the nodes that held the old
///   version, which take the higher version);
/// - lookups started during the split end (found or not) within 15 s: a half that cannot be
///   reached costs request timeouts, never a hang;
/// - the two halves find each other again: after the heal no node's table is left without a
///   contact on the other side.
@Suite struct DHTPartitionTests {
    static let republish: UInt64 = 120_000  // ms
    static let maintenance: UInt64 = 10_000  // ms

    struct Run {
        var sim: Simulator<SimDHTNode>
        var sideA: Set<SimNodeID>
        var nodeOfID: [NexusID: SimNodeID]
    }

    @Test(arguments: [95, 96] as [UInt64])
    func recordsAndNamesSurviveAPartitionAndItsHealing(seed: UInt64) throws {
        let n = 300
        var config = DHTConfiguration()
        config.republishInterval = Self.republish
        config.maintenanceInterval = Self.maintenance
        var sim = Simulator(nodes: convergedSimNodes(n, seed: seed, config: config, validator: NameRecordValidator()), seed: seed,
                            link: SimLink(latency: .milliseconds(20), jitter: .milliseconds(10), loss: 0.01))
        var rng = SplitMix64(seed: seed)
        let sideA = Set(sim.nodeIDs.filter { _ in rng.next() % 2 == 0 })
        let sideB = Set(sim.nodeIDs).subtracting(sideA)
        let a = sideA.sorted(), b = sideB.sorted()
        func ms(_ sim: Simulator<SimDHTNode>) -> UInt64 { SimDHTNode.ms(sim.now) }

        // Names signed by one owner each; `issuedAt` is the simulation's clock (ms), TTL an hour.
        var owners: [String: P256.Signing.PrivateKey] = [:]
        func record(_ name: String, version: UInt64, value: UInt8, now: UInt64) throws -> NameRecord {
            let owner = owners[name] ?? P256.Signing.PrivateKey()
            owners[name] = owner
            return try NameRecord.sign(name: try NexusName(name), value: .content(.sha256([value])), version: version, issuedAt: now, ttl: 3600, owner: owner)
        }
        var expected: [String: NameRecord] = [:]
        var puts: [(name: String, node: SimNodeID, lookup: LookupID)] = []
        func put(_ name: String, version: UInt64 = 1, value: UInt8, on node: SimNodeID) throws {
            let r = try record(name, version: version, value: value, now: ms(sim))
            let lid = try sim.withNode(node) { state, now in try state.dht.put(key: r.name.key, value: r.encode(), now: SimDHTNode.ms(now)) }
            expected[name] = r
            puts.append((name, node, lid))
        }

        // Before the split: eight names, and "changed" whose owner sits on side A.
        for i in 0..<8 { try put("before\(i).stoq", value: UInt8(i), on: (i % 2 == 0 ? a : b)[i * 5]) }
        let owner = a[3]
        try put("changed.stoq", value: 100, on: owner)
        sim.drive(for: .seconds(5))
        for p in puts { #expect((sim[p.node].stored[p.lookup]?.count ?? 0) >= 2, "\(p.name) stored before the split; seed \(seed)") }

        // The split: 60 s. Both sides store new names and look up the old ones; the owner of
        // "changed" publishes version 2 on its side.
        sim.partition([a])
        let splitAt = sim.now
        for i in 0..<5 {
            try put("sideA\(i).stoq", value: UInt8(20 + i), on: a[10 + i * 7])
            try put("sideB\(i).stoq", value: UInt8(40 + i), on: b[10 + i * 7])
        }
        try put("changed.stoq", version: 2, value: 101, on: owner)
        var duringSplit: [(SimNodeID, LookupID, SimInstant)] = []
        for q in 0..<40 {
            let origin = (q % 2 == 0 ? a : b)[(q * 13) % min(a.count, b.count)]
            let key = try NexusName("before\(q % 8).stoq").key
            let lid = sim.withNode(origin) { state, now in state.dht.startLookup(.value, target: key, now: SimDHTNode.ms(now)) }
            duringSplit.append((origin, lid, sim.now))
            sim.drive(for: .milliseconds(500))
        }
        sim.drive(until: splitAt + .seconds(60))
        for (origin, lid, started) in duringSplit {
            let finished = try #require(sim[origin].finished[lid], "a lookup on \(origin) during the split never ended; seed \(seed)")
            #expect(finished.at - started <= .seconds(15), "a lookup during the split took \(finished.at - started); seed \(seed)")
        }
        let storedDuring = puts.filter { $0.name.hasPrefix("side") }.map { sim[$0.node].stored[$0.lookup]?.count ?? 0 }
        #expect(storedDuring.allSatisfy { $0 >= 1 }, "stores during the split reach their side's closest nodes: \(storedDuring); seed \(seed)")

        // The heal.
        sim.heal()
        let healedAt = sim.now
        sim.drive(for: .seconds(1))

        // Every record, from 20 nodes on each side, found within 10 s.
        let askers = Array(a.prefix(20)) + Array(b.prefix(20))
        func lookUpEverything() -> [(SimNodeID, String, LookupID, SimInstant)] {
            var started: [(SimNodeID, String, LookupID, SimInstant)] = []
            for (i, origin) in askers.enumerated() {
                for name in expected.keys.sorted() where (i + name.count) % 3 == 0 || name == "changed.stoq" {
                    let key = expected[name]!.name.key
                    let lid = sim.withNode(origin) { state, now in state.dht.startLookup(.value, target: key, now: SimDHTNode.ms(now)) }
                    started.append((origin, name, lid, sim.now))
                }
            }
            return started
        }
        let afterHeal = lookUpEverything()
        sim.drive(for: .seconds(10))
        var missing: [String] = []
        for (origin, name, lid, _) in afterHeal where name != "changed.stoq" {
            let r = try #require(sim[origin].finished[lid], "a lookup for \(name) on \(origin) did not end within 10 s of the heal; seed \(seed)")
            if r.result.value.flatMap({ try? NameRecord.decode($0) }) != expected[name] { missing.append("\(name) from \(sideA.contains(origin) ? "A" : "B")") }
        }
        #expect(missing.isEmpty, "records not found after the heal: \(missing); seed \(seed)")
        let staleAtHeal = afterHeal.filter { $0.1 == "changed.stoq" }.filter {
            sim[$0.0].finished[$0.2].flatMap { $0.result.value }.flatMap { try? NameRecord.decode($0) }?.version != 2
        }.count

        // "changed" is at version 2 everywhere one republish interval plus a maintenance tick after the heal.
        sim.drive(until: healedAt + .milliseconds(Double(Self.republish + Self.maintenance)))
        let converged = lookUpEverything().filter { $0.1 == "changed.stoq" }
        sim.drive(for: .seconds(10))
        var stale: [String] = []
        for (origin, _, lid, _) in converged {
            let r = try #require(sim[origin].finished[lid], "a lookup on \(origin) did not end; seed \(seed)")
            let version = r.result.value.flatMap { try? NameRecord.decode($0) }?.version
            if version != 2 { stale.append("\(origin) (\(sideA.contains(origin) ? "A" : "B")): \(version.map { "v\($0)" } ?? "nothing")") }
        }
        #expect(stale.isEmpty, "'changed' is not at v2 everywhere \(Self.republish + Self.maintenance) ms after the heal: \(stale); seed \(seed)")
        // No node holds version 1 any more.
        let key = expected["changed.stoq"]!.name.key
        let holdersOfV1 = sim.nodeIDs.filter { sim[$0].dht.values[key].flatMap { try? NameRecord.decode($0.value) }?.version == 1 }
        #expect(holdersOfV1.isEmpty, "nodes still holding v1: \(holdersOfV1); seed \(seed)")

        // The halves know each other again.
        let ids = Dictionary(uniqueKeysWithValues: sim.nodeIDs.map { (sim[$0].dht.id, $0) })
        let lonely = sim.nodeIDs.filter { node in
            let mine = sideA.contains(node)
            return !sim[node].dht.table.allContacts.contains { ids[$0.record.id].map { sideA.contains($0) != mine } ?? false }
        }
        #expect(lonely.isEmpty, "nodes with no contact on the other side after the heal: \(lonely.count); seed \(seed)")
        print("DHT partition seed \(seed): sides \(a.count)/\(b.count), \(duringSplit.count) lookups during the split, \(afterHeal.count) after the heal (v1 still answered for 'changed' by \(staleAtHeal) of \(askers.count) right after it), stats \(sim.stats)")
    }
}
