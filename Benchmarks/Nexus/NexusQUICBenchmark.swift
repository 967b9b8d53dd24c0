import Foundation
import STOQIdentity
import STOQNode
import Nexus

/// Real lookups over loopback QUIC: `nodes` Nexus nodes in one process on `[::1]`, each with its
/// own certificate from a throwaway CA, joined through the first; then value lookups from every
/// node in turn. Each lookup's latency is reported beside one DHT request round trip measured in
/// the same run (a lookup costs about `rounds` of them, done α at a time).
public enum NexusQUICBenchmark {
    /// One run's figures.
    public struct Run: Sendable, CustomStringConvertible {
        /// Nodes.
        public var nodes: Int
        /// Time for all nodes to join, one after another (ms).
        public var joinMilliseconds: Double
        /// Mean routing-table size after joining.
        public var meanContacts: Double
        /// Store latency for one value (lookup + 3 stores), ms.
        public var putMilliseconds: Double
        /// Value lookup latencies, ms, the first from each node (may dial new connections).
        public var coldLookupMilliseconds: [Double]
        /// Value lookup latencies, ms, on connections that are up.
        public var lookupMilliseconds: [Double]
        /// Lookups that found the value.
        public var found: Int
        /// Rounds per lookup.
        public var rounds: [Int]
        /// One FIND_NODE request round trip between two nodes (median, ms).
        public var requestMilliseconds: Double

        static func pct(_ xs: [Double], _ p: Double) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count - 1) * p + 0.5))]
        }

        public var description: String {
            let p50 = Self.pct(lookupMilliseconds, 0.5), p99 = Self.pct(lookupMilliseconds, 0.99)
            return String(format: "DHT over QUIC [::1], %d nodes in one process: join all %.0f ms (mean %.1f contacts); put %.2f ms; value lookup p50 %.2f ms p99 %.2f ms (first lookup per node, dialling included: p50 %.2f ms) — %d/%d found, rounds p50 %d p99 %d; one DHT request %.3f ms; lookup/request p50 %.1fx",
                          nodes, joinMilliseconds, meanContacts, putMilliseconds, p50, p99, Self.pct(coldLookupMilliseconds, 0.5),
                          found, lookupMilliseconds.count + coldLookupMilliseconds.count,
                          NexusBenchmark.percentile(rounds, 0.5), NexusBenchmark.percentile(rounds, 0.99), requestMilliseconds, p50 / max(requestMilliseconds, 1e-9))
        }
    }

    /// Runs the benchmark.
    /// - Parameters:
    ///   - nodes: how many nodes (20–50 is a good size for one process).
    ///   - lookups: value lookups to time.
    public static func run(nodes count: Int, lookups: Int) async throws -> Run {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-dht-bench-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try CertificateAuthority.create(commonName: "STOQ DHT bench CA")
        let caPath = try ca.write(to: directory).certificate
        var nodes: [NexusNode] = []
        var serving: [Task<Void, Never>] = []
        defer { for t in serving { t.cancel() } }
        for i in 0..<count {
            let name = "dht\(i)"
            let paths = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: directory, name: name)
            let config = NodeConfiguration(
                name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
                ca: caPath, store: directory + "/\(name)-store", roles: ["origin"], idleTimeoutSeconds: 30)
            let node = try await NexusNode.start(config)
            serving.append(Task { await node.run() })
            nodes.append(node)
        }
        let clock = ContinuousClock()
        let t0 = clock.now
        try await nodes[0].join([])
        for (i, node) in nodes.enumerated().dropFirst() { try await node.join([nodes[(i * 7) % i].address]) }
        let joinTime = clock.now - t0
        var contacts = 0
        for node in nodes { contacts += await node.dht.contactCount }

        // One request round trip (connections already up from joining).
        var requests: [Double] = []
        for i in 0..<min(40, 2 * (count - 1)) {
            let a = nodes[i % (count - 1)], b = nodes[i % (count - 1) + 1]  // each pair twice: the second is warm
            let client = try await a.node.peers.client(for: b.address)
            let envelope = DHTRequestEnvelope(sender: a.record, message: .findNode(rpc: UInt64(i), target: a.record.id))
            let start = clock.now
            _ = try await NexusDHT.request(envelope, on: client.connection)
            requests.append((clock.now - start).seconds * 1000)
        }

        let value = try SignedNodeRecord.sign(nodes[0].record, issuedAt: UInt64(Date().timeIntervalSince1970 * 1000), ttl: 600,
                                              key: .init(pemRepresentation: PEMFile.read(directory + "/dht0.key")))
        let p0 = clock.now
        _ = try await nodes[0].dht.put(key: SignedNodeRecord.key(for: nodes[0].record.id), value: value.encode())
        let putTime = clock.now - p0
        var latencies: [Double] = [], cold: [Double] = [], rounds: [Int] = [], found = 0
        for q in 0..<(lookups + count - 1) {
            let origin = nodes[1 + q % (count - 1)]
            let start = clock.now
            let r = try await origin.dht.lookup(.value, target: SignedNodeRecord.key(for: nodes[0].record.id))
            if r.messages == 0 { continue }  // a holder answers from its own store: not a lookup
            if q < count - 1 { cold.append((clock.now - start).seconds * 1000) } else { latencies.append((clock.now - start).seconds * 1000) }
            rounds.append(r.rounds)
            if r.value == value.encode() { found += 1 }
        }
        for node in nodes { await node.close() }
        for t in serving { await t.value }
        return Run(nodes: count, joinMilliseconds: joinTime.seconds * 1000, meanContacts: Double(contacts) / Double(count),
                   putMilliseconds: putTime.seconds * 1000, coldLookupMilliseconds: cold, lookupMilliseconds: latencies, found: found, rounds: rounds,
                   requestMilliseconds: Run.pct(Array(requests.suffix(requests.count / 2)), 0.5))
    }
}
