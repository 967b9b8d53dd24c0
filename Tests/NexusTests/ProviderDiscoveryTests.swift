import Crypto
import Testing
@testable import Nexus
import NexusSimulation
import STOQSimulation

/// Finding sources without `--peers` (issue 13 §4): edges announce and withdraw what they cache,
/// provider lists merge across DHT nodes, name lookups return the highest version the replicas
/// hold, and a node whose address changes updates its records.
@Suite struct ProviderDiscoveryTests {
    static func key(_ n: UInt8) -> NexusID { NexusHash.sha256([0xC0, n]) }

    // MARK: The announcer (sans-IO)

    @Test func theAnnouncerBatchesAndRateLimits() {
        var a = ProviderAnnouncer(configuration: .init(maxAnnounced: 100, batchSize: 4, interval: 1000))
        for n in 0..<10 { a.cached(Self.key(UInt8(n))) }
        a.cached(Self.key(0))  // again: queued once
        #expect(a.pending == 10)
        let expected: [ProviderAnnouncer.Change] = (0..<4).map { ProviderAnnouncer.Change.provide(Self.key(UInt8($0))) }
        #expect(a.flush(now: 0) == expected)
        #expect(a.flush(now: 500).isEmpty, "one flush per interval")
        #expect(a.pollTimeout() == 1000)
        #expect(a.flush(now: 1000).count == 4)
        #expect(a.flush(now: 2000).count == 2)
        #expect(a.pollTimeout() == nil)
        #expect(a.announced.count == 10 && a.provided == 10)
    }

    @Test func evictionWithdrawsAndGoesFirst() {
        var a = ProviderAnnouncer(configuration: .init(maxAnnounced: 100, batchSize: 2, interval: 10))
        a.cached(Self.key(1)); a.cached(Self.key(2))
        _ = a.flush(now: 0)
        a.cached(Self.key(3)); a.cached(Self.key(4))
        a.evicted(Self.key(2))
        a.evicted(Self.key(99))  // never announced: ignored
        #expect(a.flush(now: 10) == [.withdraw(Self.key(2)), .provide(Self.key(3))])
        #expect(a.flush(now: 20) == [.provide(Self.key(4))])
        #expect(a.announced == [Self.key(1), Self.key(3), Self.key(4)])
        #expect(a.withdrawn == 1)
    }

    @Test func changesBetweenFlushesCancelOut() {
        var a = ProviderAnnouncer(configuration: .init(batchSize: 8, interval: 10))
        a.cached(Self.key(1))
        a.evicted(Self.key(1))  // cached and evicted before a flush: nothing to send
        #expect(a.pending == 0)
        a.cached(Self.key(2))
        _ = a.flush(now: 0)
        a.evicted(Self.key(2))
        a.cached(Self.key(2))  // evicted and cached again: still announced, nothing to send
        #expect(a.pending == 0)
        #expect(a.flush(now: 100).isEmpty)
        #expect(a.announced == [Self.key(2)])
    }

    @Test func theAnnouncedSetIsBounded() {
        var a = ProviderAnnouncer(configuration: .init(maxAnnounced: 3, batchSize: 100, interval: 0))
        for n in 0..<5 { a.cached(Self.key(UInt8(n))) }
        #expect(a.pending == 3 && a.skipped == 2)
        _ = a.flush(now: 0)
        a.cached(Self.key(7))
        #expect(a.skipped == 3)
        a.evicted(Self.key(0))
        _ = a.flush(now: 1)
        a.cached(Self.key(7))  // room again after the withdrawal
        #expect(a.flush(now: 2) == [.provide(Self.key(7))])
    }

    // MARK: Withdrawal, merging and address changes in a simulated network

    @Test func aWithdrawalRemovesTheEntryAndOthersStay() throws {
        var sim = DHTSimulator(count: 200, seed: 131)
        sim.prefillConverged()
        let content = Self.key(1)
        #expect(sim.provide(on: 10, key: content).count == 3)  // the origin
        #expect(sim.provide(on: 11, key: content).count == 3)  // an edge
        let beforeFound = sim.lookup(on: 150, .providers, target: content)
        let before = try #require(beforeFound)
        #expect(Set(before.result.providers.map(\.id)) == [sim.nodes[10].id, sim.nodes[11].id])
        #expect(sim.withdraw(on: 11, key: content).count == 3)
        let afterFound = sim.lookup(on: 150, .providers, target: content)
        let after = try #require(afterFound)
        #expect(after.result.providers.map(\.id) == [sim.nodes[10].id])
        // The edge does not re-announce a withdrawn key, nor answer for it.
        #expect(!sim.nodes[11].providedKeys.contains(content))
    }

    /// Each provider's ADD_PROVIDER reached a different subset of the closest nodes (some timed
    /// out): only a lookup that merges every node's list finds them all.
    @Test func providerListsMergeAcrossDHTNodes() throws {
        var sim = DHTSimulator(count: 120, seed: 132)
        sim.prefillConverged()
        let content = Self.key(2)
        let view = ConvergedView(ids: sim.nodes.map(\.id))
        let holders = view.closest(to: content, count: 3).map { sim.node(withID: view.sortedIDs[$0])! }
        // Provider A reaches only holder 0, provider B only holder 1, provider C only holder 2.
        let providers = [20, 21, 22]
        for (p, reached) in zip(providers, holders) {
            for h in holders where h != reached { sim.kill(h) }
            _ = sim.provide(on: p, key: content)
            for h in holders where h != reached { sim.revive(h) }
        }
        for h in holders {
            #expect(sim.nodes[h].providerEntries[content]?.count == 1, "holder \(h) should know exactly one provider")
        }
        let foundFound = sim.lookup(on: 100, .providers, target: content)
        let found = try #require(foundFound)
        #expect(Set(found.result.providers.map(\.id)) == Set(providers.map { sim.nodes[$0].id }))
    }

    @Test func aNodeWhoseAddressChangesUpdatesItsProviderRecords() throws {
        var sim = DHTSimulator(count: 150, seed: 133)
        sim.prefillConverged()
        let content = Self.key(3)
        _ = sim.provide(on: 40, key: content)
        var moved = sim.nodes[40].record
        let newAddress = try NexusAddress(parsing: "[fd00::beef]:5555")
        moved.addresses = [newAddress]
        sim.updateRecord(on: 40, moved)
        let foundFound = sim.lookup(on: 90, .providers, target: content)
        let found = try #require(foundFound)
        #expect(found.result.providers.map(\.id) == [moved.id])
        #expect(found.result.providers.first?.addresses == [newAddress])
    }

    // MARK: Highest version among the replicas

    @Test func aValueLookupKeepsEveryReplicasAnswer() {
        let target = NexusHash.sha256([1])
        let a = NodeRecord(id: .sha256([2])), b = NodeRecord(id: .sha256([3])), c = NodeRecord(id: .sha256([4]))
        var lookup = LookupStateMachine(kind: .value, target: target, selfID: .sha256([0]), seeds: [a, b, c], valueQuorum: 3)
        #expect(lookup.nextQueries().count == 3)
        lookup.handleResponse(from: a.id, closer: [], value: [1])
        #expect(!lookup.isFinished, "the first replica's answer does not end the lookup")
        lookup.handleResponse(from: b.id, closer: [], value: [2])
        lookup.handleResponse(from: c.id, closer: [], value: [2])
        #expect(lookup.isFinished)
        #expect(lookup.result.values == [[1], [2]])
        // With quorum 1 the first hit ends it, as before.
        var first = LookupStateMachine(kind: .value, target: target, selfID: .sha256([0]), seeds: [a, b], valueQuorum: 1)
        _ = first.nextQueries()
        first.handleResponse(from: a.id, closer: [], value: [1])
        #expect(first.isFinished && first.result.value == [1])
    }

    @Test func theHighestVersionWins() throws {
        let owner = P256.Signing.PrivateKey()
        let name = try NexusName("site.stoq")
        let v1 = try NameRecord.sign(name: name, value: .content(.sha256([1])), version: 1, issuedAt: 0, ttl: 3600, owner: owner).encode()
        let v2 = try NameRecord.sign(name: name, value: .content(.sha256([2])), version: 2, issuedAt: 0, ttl: 3600, owner: owner).encode()
        let thief = try NameRecord.sign(name: name, value: .content(.zero), version: 9, issuedAt: 0, ttl: 3600, owner: P256.Signing.PrivateKey()).encode()
        let node = KademliaNode(record: NodeRecord(id: .sha256([9])), validator: NexusRecordValidator(), now: 0)
        #expect(node.best(of: [v1, v2]) == v2)
        #expect(node.best(of: [v2, v1]) == v2)
        #expect(node.best(of: [v1, thief, v2]) == v2, "another owner's record never wins")
    }

    /// A replica was down while the name moved to version 2 and came back holding version 1; every
    /// lookup, wherever it starts, returns version 2.
    @Test func aNameLookupReturnsTheHighestVersionAmongTheReplicas() throws {
        var sim = DHTSimulator(count: 150, validator: NameRecordValidator(), seed: 134)
        sim.prefillConverged()
        let owner = P256.Signing.PrivateKey()
        let name = try NexusName("news.stoq")
        let v1 = try NameRecord.sign(name: name, value: .content(.sha256([1])), version: 1, issuedAt: 0, ttl: 3600, owner: owner)
        let v2 = try NameRecord.sign(name: name, value: .content(.sha256([2])), version: 2, issuedAt: 0, ttl: 3600, owner: owner)
        let first = try sim.put(on: 3, key: name.key, value: v1.encode())
        #expect(first.count == 3)
        let stale = sim.node(withID: first[0])!
        sim.kill(stale)
        #expect(try sim.put(on: 3, key: name.key, value: v2.encode()).count == 3)
        sim.revive(stale)
        #expect(try NameRecord.decode(try #require(sim.nodes[stale].values[name.key]?.value)) == v1, "the revived replica is stale")
        var lookups = 0
        for origin in stride(from: 5, to: 150, by: 7) where sim.nodes[origin].values[name.key] == nil && origin != 3 {
            let foundFound = sim.lookup(on: origin, .value, target: name.key)
            let found = try #require(foundFound)
            #expect(try NameRecord.decode(try #require(found.result.value)) == v2, "lookup from \(origin) saw \(found.result.values.count) versions")
            lookups += 1
        }
        #expect(lookups > 10)
    }

    // MARK: The figure: time to find providers on 40 nodes

    /// 40 nodes join one after another; an origin and three edges announce a content id; clients
    /// on every other node look its providers up. Prints the simulated time (per-pair latency
    /// 5–50 ms one way) for the report; every lookup must find all four providers.
    @Test func findingProvidersOn40Nodes() throws {
        var sim = DHTSimulator(count: 40, seed: 135)
        sim.encodeMessages = true
        sim.bootstrapSequentially(0..<40)
        let content = Self.key(4)
        let providers = [0, 7, 13, 29]  // origin, three edges
        for p in providers { #expect(sim.provide(on: p, key: content).count == 3) }
        var times: [UInt64] = [], messages: [Int] = []
        for origin in 0..<40 where !providers.contains(origin) {
            let foundFound = sim.lookup(on: origin, .providers, target: content)
            let found = try #require(foundFound)
            #expect(Set(found.result.providers.map(\.id)) == Set(providers.map { sim.nodes[$0].id }), "lookup from \(origin)")
            times.append(found.elapsed)
            messages.append(found.result.messages)
        }
        times.sort()
        let p50 = times[times.count / 2], p95 = times[min(times.count - 1, times.count * 95 / 100)]
        print("DHT providers on 40 nodes: \(times.count) lookups, p50 \(p50) ms, p95 \(p95) ms, max \(times.last!) ms, mean \(messages.reduce(0, +) / messages.count) requests (simulated one-way latency 5–50 ms)")
        #expect(p95 < 2_000)
    }
}

/// Withdrawal and an address change over real QUIC (``NexusTestCluster``: nodes on `[::1]`).
@Suite(.serialized) struct ProviderDiscoveryOverQUICTests {
    @Test func withdrawalAndAddressChangeOverRealQUIC() async throws {
        let cluster = try await NexusTestCluster(count: 5)
        let nodes = cluster.nodes
        let content = NexusHash.sha256(Array("discovery".utf8))
        #expect(try await nodes[1].dht.provide(key: content).count == 3)
        #expect(try await nodes[2].dht.provide(key: content).count == 3)
        var found = try await nodes[4].dht.lookup(.providers, target: content)
        #expect(Set(found.providers.map(\.id)) == [nodes[1].record.id, nodes[2].record.id])
        // Node 2 (an edge that evicted the content) withdraws: gone at once, not after the TTL.
        #expect(try await nodes[2].dht.withdraw(key: content).count == 3)
        found = try await nodes[4].dht.lookup(.providers, target: content)
        #expect(found.providers.map(\.id) == [nodes[1].record.id])
        // Node 1's record changes (a second address): every key it provides is announced again.
        var moved = nodes[1].record
        moved.addresses.append(try NexusAddress(parsing: "[fd00::5]:4433"))
        let updated = try await nodes[1].dht.updateRecord(moved)
        #expect(updated.count == 1 && updated.first?.storedOn.count == 3)
        found = try await nodes[3].dht.lookup(.providers, target: content)
        #expect(found.providers.map(\.addresses) == [moved.addresses])
        await cluster.close()
    }
}
