import Crypto
import Foundation
import STOQSimulation
import Nexus
import NexusSimulation

/// Benchmarks of the Nexus DHT that the lead (or `stoq bench dht`) can run in release mode.
public enum NexusBenchmark {
    /// Lookup statistics for one network size.
    public struct ScaleRow: Sendable, CustomStringConvertible {
        /// Network size.
        public var nodes: Int
        /// Mean contacts per routing table (per-node state).
        public var meanContacts: Double
        /// Routing-table bytes per node: contacts × `MemoryLayout<RoutingTable.Contact>.stride`
        /// (inline part; address arrays and region strings are shared or small and not counted).
        public var bytesPerNode: Double
        /// Mean rounds of value lookups.
        public var meanRounds: Double
        /// 99th percentile rounds.
        public var p99Rounds: Int
        /// Largest rounds.
        public var maxRounds: Int
        /// Mean requests per lookup.
        public var meanMessages: Double
        /// Lookups that found the value.
        public var found: Int
        /// Lookups run.
        public var lookups: Int
        /// log₂(nodes), for comparison.
        public var log2N: Double { log2(Double(nodes)) }

        /// One line of text.
        public var description: String {
            "nodes=\(nodes) contacts/node=\(fmt(meanContacts)) (\(fmt(meanContacts / log2N)) × log2N) bytes/node≈\(Int(bytesPerNode)) " +
            "rounds mean=\(fmt(meanRounds)) p99=\(p99Rounds) max=\(maxRounds) (mean/log2N=\(fmt(meanRounds / log2N))) msgs/lookup=\(fmt(meanMessages)) found=\(found)/\(lookups)"
        }
    }

    static func fmt(_ x: Double) -> String { String(Double(Int(x * 100)) / 100) }

    /// p-th percentile of integers.
    static func percentile(_ xs: [Int], _ p: Double) -> Int {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
    }

    /// Value-lookup rounds and per-node state on converged networks of the given sizes, without
    /// simulating every node: routing tables come from a global view (``ConvergedView``) and are
    /// built only for the nodes a lookup touches. Lookups run the real ``LookupStateMachine`` and
    /// real ``RoutingTable/closest(to:count:)`` answers, one round-trip at a time in FIFO order
    /// (equal latencies); the value sits on the 3 closest nodes to its key. Per-node state is the
    /// contact count of the tables built. Node records carry only the id here.
    /// - Parameters:
    ///   - sizes: network sizes, e.g. `[1_000, 10_000, 100_000, 1_000_000]`.
    ///   - lookups: value lookups per size.
    ///   - k: bucket size.
    ///   - alpha: parallelism.
    ///   - seed: the seed.
    public static func dhtScale(sizes: [Int], lookups: Int = 1_000, k: Int = 20, alpha: Int = 3, seed: UInt64 = 1) -> [ScaleRow] {
        sizes.map { n in
            var rng = SplitMix64(seed: seed ^ UInt64(n))
            var ids: [NexusID] = []
            ids.reserveCapacity(n)
            for _ in 0..<n { ids.append(NexusHash(rng.next(), rng.next(), rng.next(), rng.next())) }
            let view = ConvergedView(ids: ids)
            ids = []
            var tables: [Int: RoutingTable] = [:]
            func table(_ i: Int) -> RoutingTable {
                if let t = tables[i] { return t }
                var t = RoutingTable(selfID: view.sortedIDs[i], k: k)
                for b in view.contacts(of: view.sortedIDs[i], k: k, seed: seed) {
                    for j in b { t.seen(NodeRecord(id: view.sortedIDs[j]), now: 0) }
                }
                if tables.count > 4_096 { tables.removeAll(keepingCapacity: true) }
                tables[i] = t
                return t
            }
            var rounds: [Int] = [], messages = 0, found = 0, contacts = 0
            for _ in 0..<lookups {
                let origin = Int(rng.next() % UInt64(n))
                let key = NexusHash(rng.next(), rng.next(), rng.next(), rng.next())
                let holders = Set(view.closest(to: key, count: 3))
                let t = table(origin)
                contacts += t.count
                var lookup = LookupStateMachine(kind: .value, target: key, selfID: t.selfID, seeds: t.closest(to: key, count: k), k: k, alpha: alpha)
                var inFlight: [NodeRecord] = []
                var head = 0
                inFlight.append(contentsOf: lookup.nextQueries())
                while head < inFlight.count && !lookup.isFinished {
                    let peer = inFlight[head]; head += 1
                    var lo = 0, hi = view.sortedIDs.count
                    while lo < hi { let m = (lo + hi) / 2; if view.sortedIDs[m] < peer.id { lo = m + 1 } else { hi = m } }
                    if holders.contains(lo) {
                        lookup.handleResponse(from: peer.id, closer: [], value: [1])
                    } else {
                        lookup.handleResponse(from: peer.id, closer: table(lo).closest(to: key, count: k))
                    }
                    inFlight.append(contentsOf: lookup.nextQueries())
                }
                let r = lookup.result
                rounds.append(r.rounds); messages += r.messages
                if r.value != nil { found += 1 }
            }
            let mean = Double(contacts) / Double(lookups)
            let perContact = Double(MemoryLayout<RoutingTable.Contact>.stride)
            return ScaleRow(nodes: n, meanContacts: mean, bytesPerNode: mean * perContact, meanRounds: Double(rounds.reduce(0, +)) / Double(lookups),
                            p99Rounds: percentile(rounds, 0.99), maxRounds: rounds.max() ?? 0, meanMessages: Double(messages) / Double(lookups),
                            found: found, lookups: lookups)
        }
    }

    /// Result of a message-level DHT run.
    public struct LookupRun: Sendable, CustomStringConvertible {
        /// Network size.
        public var nodes: Int
        /// How routing tables were filled: "converged" (global view) or "bootstrap" (joins by lookups).
        public var mode: String
        /// Mean contacts per node.
        public var meanContacts: Double
        /// Value lookup rounds.
        public var rounds: [Int]
        /// Value lookups that returned the value.
        public var found: Int
        /// Mean virtual latency of a lookup (ms).
        public var meanLatencyMS: Double
        /// Messages delivered in the whole run.
        public var delivered: Int
        /// p99 rounds.
        public var p99Rounds: Int { percentile(rounds, 0.99) }
        /// One line of text.
        public var description: String {
            "nodes=\(nodes) mode=\(mode) contacts/node=\(fmt(meanContacts)) value lookups=\(rounds.count) found=\(found) " +
            "rounds mean=\(fmt(Double(rounds.reduce(0, +)) / Double(max(1, rounds.count)))) p99=\(p99Rounds) max=\(rounds.max() ?? 0) latency mean=\(fmt(meanLatencyMS)) ms delivered=\(delivered)"
        }
    }

    /// Runs a full message-level simulation: `nodes` nodes (routing tables converged from a global
    /// view, or learnt by sequential bootstrap), `values` values stored with replication 3 from
    /// random nodes, then `lookups` value lookups from random nodes.
    public static func dhtLookups(nodes: Int, bootstrap: Bool, values: Int = 50, lookups: Int = 500, seed: UInt64 = 7) throws(NexusError) -> LookupRun {
        var sim = DHTSimulator(count: nodes, seed: seed)
        if bootstrap { sim.bootstrapSequentially(0..<nodes) } else { sim.prefillConverged() }
        var rng = SplitMix64(seed: seed)
        var keys: [NexusID] = []
        for v in 0..<values {
            let key = NexusHash.sha256(Array("value-\(v)".utf8))
            _ = try sim.put(on: Int(rng.next() % UInt64(nodes)), key: key, value: Array("payload \(v)".utf8))
            keys.append(key)
        }
        var rounds: [Int] = [], found = 0, latency: UInt64 = 0
        for _ in 0..<lookups {
            let key = keys[Int(rng.next() % UInt64(keys.count))]
            // A lookup from a holder of the key answers locally: start from the next node that
            // does not hold it (at most one pass; with few nodes most hold some value, so a node
            // holding other values is fine).
            var origin = Int(rng.next() % UInt64(nodes))
            for _ in 0..<nodes where sim.nodes[origin].storesValue(for: key) { origin = (origin + 1) % nodes }
            guard !sim.nodes[origin].storesValue(for: key), let c = sim.lookup(on: origin, .value, target: key) else { continue }
            rounds.append(c.result.rounds)
            latency += c.elapsed
            if c.result.value != nil { found += 1 }
        }
        let contacts = Double(sim.nodes.reduce(0) { $0 + $1.table.count }) / Double(nodes)
        return LookupRun(nodes: nodes, mode: bootstrap ? "bootstrap" : "converged", meanContacts: contacts, rounds: rounds,
                         found: found, meanLatencyMS: Double(latency) / Double(max(1, rounds.count)), delivered: sim.delivered)
    }
}
