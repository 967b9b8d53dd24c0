import Foundation
import NIOCore
import STOQContent
import STOQIdentity
import STOQNode
import STOQRouting
import STOQSimulation
import STOQTransport

/// A relay route chosen by STOQRouting and followed over real QUIC: nodes A, R and B on `[::1]`,
/// A's direct path to B slowed by a ``UDPDelayForwarder``. A measures its RTTs to B (direct) and
/// to R, R measures its RTT to B, R's routing gossip reaches A, and A asks its routing matrix for
/// the route to B; then A fetches the same chunk from B directly and along the route (through
/// R's STOQ relay, `PeerClient(relay:to:)`), each figure beside the other.
public enum RelayBenchmark {
    /// One run's figures.
    public struct Run: Sendable, CustomStringConvertible {
        /// Added delay each way on the direct path (ms).
        public var delayMilliseconds: Double
        /// Measured RTTs (ms): A→B direct, A→R, R→B.
        public var rttDirect: Double, rttToRelay: Double, rttRelayToTarget: Double
        /// The route A's matrix chose, e.g. `A → R → B`.
        public var route: String
        /// True if the route goes through R.
        public var viaRelay: Bool
        /// Chunk size.
        public var chunkBytes: Int
        /// Fetch times (ms) direct and along the route.
        public var direct: [Double], relayed: [Double]

        static func median(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.sorted()[xs.count / 2] }

        public var description: String {
            let d = Self.median(direct), r = Self.median(relayed)
            return String(format: "relay over QUIC [::1]: direct path +%.0f ms each way (RTT A→B %.1f ms, A→R %.2f ms, R→B %.2f ms); route chosen %@; %d KiB chunk: direct %.1f ms, via relay %.1f ms (median of %d) — relay/direct %.2fx",
                          delayMilliseconds, rttDirect, rttToRelay, rttRelayToTarget, route, chunkBytes / 1024, d, r, direct.count, r / max(d, 1e-9))
        }
    }

    /// Runs it.
    /// - Parameters:
    ///   - delay: added one-way delay on A's direct path to B.
    ///   - chunkBytes: the chunk size fetched.
    ///   - fetches: fetches per path.
    public static func run(delay: Duration = .milliseconds(25), chunkBytes: Int = 256 * 1024, fetches: Int = 5) async throws -> Run {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-relay-bench-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try CertificateAuthority.create(commonName: "STOQ relay bench CA")
        let caPath = try ca.write(to: directory).certificate
        var nodes: [NexusNode] = []
        var serving: [Task<Void, Never>] = []
        for name in ["A", "R", "B"] {
            let paths = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: directory, name: name)
            let node = try await NexusNode.start(NodeConfiguration(
                name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
                ca: caPath, store: directory + "/\(name)-store", roles: name == "R" ? ["origin", "relay"] : ["origin"], idleTimeoutSeconds: 30))
            serving.append(Task { await node.run() })
            nodes.append(node)
        }
        let (a, r, b) = (nodes[0], nodes[1], nodes[2])
        func close() async {
            for n in nodes { await n.close() }
            for t in serving { await t.value }
        }
        do {
            // B holds a chunk.
            var rng = SplitMix64(seed: 0x52454C4159)
            let chunk = (0..<chunkBytes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let id = ChunkID.of(chunk)
            try b.node.store.writeChunk(id, chunk)

            // The slow direct path.
            let forwarder = try await UDPDelayForwarder.start(
                upstream: try SocketAddress(ipAddress: "::1", port: b.address.port), delay: .nanoseconds(Int64(delay.wholeNanoseconds)))
            defer { Task { await forwarder.close() } }
            let slowB = PeerAddress(host: "::1", port: forwarder.address.port!)

            // Measurements: the best of a few PINGs per link, on connections that are up.
            func rtt(_ from: NexusNode, _ to: PeerAddress) async throws -> Duration {
                let client = try await from.node.peers.client(for: to)
                var best = Duration.seconds(10)
                for _ in 0..<5 { best = min(best, try await client.ping()) }
                return best
            }
            let ab = try await rtt(a, slowB), ar = try await rtt(a, r.address), rb = try await rtt(r, b.address)

            // Routing: A measured A→B and A→R; R measured R→B and gossips it to A.
            func rid(_ n: NexusNode) -> RoutingNodeID { RoutingNodeID(prefixOf: n.record.id.bytes)! }
            let now = Duration.seconds(1)
            var matrixA = RoutingMatrix(selfID: rid(a))
            var matrixR = RoutingMatrix(selfID: rid(r))
            matrixA.handleMeasurement(RoutingMeasurement(peer: rid(b), rtt: ab), now: now)
            matrixA.handleMeasurement(RoutingMeasurement(peer: rid(r), rtt: ar), now: now)
            matrixR.handleMeasurement(RoutingMeasurement(peer: rid(b), rtt: rb), now: now)
            matrixR.handleMeasurement(RoutingMeasurement(peer: rid(a), rtt: ar), now: now)
            _ = matrixA.handleGossip(matrixR.makeGossip(now: now), now: now)
            matrixA.rebuildOverlay(now: now)
            let route = matrixA.route(to: rid(b), size: chunkBytes, now: now)
            let names = [rid(a): "A", rid(r): "R", rid(b): "B"]
            let viaRelay = route?.relays.first == rid(r)

            // Fetch the chunk both ways.
            let clock = ContinuousClock()
            let directClient = try await a.node.peers.client(for: slowB)
            let relayConnection = try await a.node.peers.client(for: r.address).connection
            let viaR = PeerClient(relay: relayConnection, to: b.address, targetID: try NodeID(bytes: b.record.id.bytes))
            var direct: [Double] = [], relayed: [Double] = []
            for _ in 0..<fetches {
                var t = clock.now
                let viaDirect = try await directClient.fetchChunk(id)
                direct.append((clock.now - t).seconds * 1000)
                t = clock.now
                let viaRoute = try await viaR.fetchChunk(id)
                relayed.append((clock.now - t).seconds * 1000)
                guard viaDirect == chunk, viaRoute == chunk else { throw NexusError(.forgedRecord, "a fetched chunk differs from what B holds") }
            }
            await close()
            return Run(delayMilliseconds: Double(delay.wholeNanoseconds) / 1e6, rttDirect: ab.seconds * 1000, rttToRelay: ar.seconds * 1000,
                       rttRelayToTarget: rb.seconds * 1000, route: route.map { $0.path.map { names[$0] ?? "\($0)" }.joined(separator: " → ") } ?? "none",
                       viaRelay: viaRelay, chunkBytes: chunkBytes, direct: direct, relayed: relayed)
        } catch {
            await close()
            throw error
        }
    }
}
