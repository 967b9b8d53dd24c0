import Testing
@testable import Nexus
import NexusBenchmarks

/// Provider lookups merge what every node they ask knows, and the DHT benchmark ends on small
/// networks.
@Suite struct ProviderLookupTests {
    /// A provider record lands only on the nodes its ADD_PROVIDER reached, so the first node that
    /// knows providers may know only some (6 of 16 storage nodes were found that way on a busy
    /// machine). The lookup goes on to the k closest and returns the union.
    @Test func aProviderLookupMergesWhatEveryNodeItAsksKnows() {
        let target = NexusHash.sha256([1])
        let a = NodeRecord(id: .sha256([2])), b = NodeRecord(id: .sha256([3]))
        let first = NodeRecord(id: .sha256([4])), second = NodeRecord(id: .sha256([5]))
        var lookup = LookupStateMachine(kind: .providers, target: target, selfID: .sha256([0]), seeds: [a])
        #expect(lookup.nextQueries().map(\.id) == [a.id])
        lookup.handleResponse(from: a.id, closer: [b], providers: [first])
        #expect(!lookup.isFinished, "a provider hit does not end the lookup while closer nodes are unasked")
        #expect(lookup.nextQueries().map(\.id) == [b.id])
        lookup.handleResponse(from: b.id, closer: [a], providers: [second, first])
        #expect(lookup.nextQueries().isEmpty)
        #expect(lookup.isFinished)
        #expect(lookup.result.providers.map(\.id) == [first.id, second.id])
    }

    /// The providers a lookup keeps are bounded, whatever peers send.
    @Test func providersAreBounded() {
        let target = NexusHash.sha256([1])
        let peers = (0..<4).map { NodeRecord(id: .sha256([UInt8(10 + $0)])) }
        var lookup = LookupStateMachine(kind: .providers, target: target, selfID: .sha256([0]), seeds: peers)
        var n: UInt16 = 0
        for peer in lookup.nextQueries() {
            let flood = (0..<32).map { _ in n += 1; return NodeRecord(id: .sha256(withUnsafeBytes(of: n) { Array($0) })) }
            lookup.handleResponse(from: peer.id, closer: [], providers: flood)
        }
        #expect(lookup.result.providers.count == LookupStateMachine.maxProviders)
    }

    /// `stoq dht bench --nodes 20 --lookups 5` hung: with 50 values on 20 nodes every node holds
    /// one, and the origin search skipped every holder of any value, forever.
    @Test(.timeLimit(.minutes(1))) func theLookupBenchmarkEndsOnASmallNetwork() throws {
        let run = try NexusBenchmark.dhtLookups(nodes: 20, bootstrap: false, values: 50, lookups: 5, seed: 1)
        #expect(run.rounds.count == 5)
        #expect(run.found == 5)
    }
}
