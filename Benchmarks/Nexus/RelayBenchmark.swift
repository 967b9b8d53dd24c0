import Foundation
import NIOCore
import STOQBenchmarks
import STOQContent
import STOQIdentity
import STOQNode
import STOQRouting
import STOQSimulation
import STOQTransport
import Nexus

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
        /// RTTs (ms) in A's routing snapshot: A→B direct and A→R measured by A's probes, R→B
        /// measured by R and learnt from its gossip.
        public var rttDirect: Double, rttToRelay: Double, rttRelayToTarget: Double
        /// Seconds from A's start until its router knew all three links.
        public var learntAfterSeconds: Double
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
            return String(format: "relay over QUIC [::1]: direct path +%.0f ms each way; A's live router (PING/PONG + R's gossip, learnt in %.1f s): RTT A→B %.1f ms, A→R %.2f ms, R→B %.2f ms; route chosen %@; %d KiB chunk: direct %.1f ms, via relay %.1f ms (median of %d) — relay/direct %.2fx",
                          delayMilliseconds, learntAfterSeconds, rttDirect, rttToRelay, rttRelayToTarget, route, chunkBytes / 1024, d, r, direct.count, r / max(d, 1e-9))
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
        let delayMilliseconds = max(0, delay.seconds * 1000)
        var nodes: [NexusNode] = []
        var serving: [Task<Void, Never>] = []
        var forwarder: UDPDelayForwarder?
        func close() async {
            for n in nodes { await n.close() }
            for t in serving { await t.value }
            await forwarder?.close()
        }
        // Each node probes its peers (PING/PONG; the timeout covers the slowed path five times over)
        // and gossips its routing view every 300 ms: the routers learn everything live.
        func start(_ name: String, peers: [PeerAddress]) async throws -> NexusNode {
            let paths = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: directory, name: name)
            var configuration = NodeConfiguration(
                name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
                ca: caPath, store: directory + "/\(name)-store", roles: name == "R" ? ["origin", "relay"] : ["origin"], idleTimeoutSeconds: 30)
            configuration.peers = peers
            // R carries for every node of this lab network (the relay right is tested in AccessGrantTests and
            // test_security_grants.py; here it is the relaying that is measured).
            if name == "R" { configuration.relayOpen = true }
            let timeout = max(150, Int(delayMilliseconds * 5))
            configuration.health = HealthSettings(intervalMilliseconds: 2 * timeout, timeoutMilliseconds: timeout, failureThreshold: 3)
            configuration.routing = RoutingSettings(enabled: true, gossipIntervalMilliseconds: 300)
            let node = try await NexusNode.start(configuration)
            serving.append(Task { await node.run() })
            nodes.append(node)
            return node
        }
        do {
            // B holds a chunk; R probes B directly; A probes R, and B only through the slow path.
            let b = try await start("B", peers: [])
            var rng = SplitMix64(seed: 0x52454C4159)
            let chunk = (0..<chunkBytes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let id = ChunkID.of(chunk)
            try b.node.store.writeChunk(id, chunk)
            let r = try await start("R", peers: [b.address])
            let slow = try await UDPDelayForwarder.start(
                upstream: try SocketAddress(ipAddress: "::1", port: b.address.port), delay: .nanoseconds(Int64(delayMilliseconds * 1e6)))
            forwarder = slow
            let slowB = PeerAddress(host: "::1", port: slow.address.port!)
            let a = try await start("A", peers: [slowB, r.address])

            // A's router, fed only by its own probes and R's gossip, until it knows both of B's links.
            guard let router = a.node.router else { throw NexusError(.noHealthyNode, "node A runs without a router") }
            let (ra, rr, rb) = (RoutingNodeID(a.node.nodeID), RoutingNodeID(r.node.nodeID), RoutingNodeID(b.node.nodeID))
            let clock = ContinuousClock()
            let learning = clock.now
            var learnt: (route: Route, ab: Double, ar: Double, rb: Double)?
            while learnt == nil, clock.now - learning < .seconds(30) {
                if let ab = router.linkRTT(from: ra, to: rb), let ar = router.linkRTT(from: ra, to: rr),
                   let rbRTT = router.linkRTT(from: rr, to: rb), let route = router.route(to: rb, size: chunkBytes) {
                    learnt = (route, ab, ar, rbRTT)
                } else {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            guard let learnt else { throw NexusError(.noHealthyNode, "A's router did not learn the links to B within 30 s") }
            let learntAfter = (clock.now - learning).seconds
            let route = learnt.route
            let names = [ra: "A", rr: "R", rb: "B"]
            let viaRelay = route.relays.first == rr

            // Fetch the chunk both ways.
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
            return Run(delayMilliseconds: delayMilliseconds, rttDirect: learnt.ab, rttToRelay: learnt.ar,
                       rttRelayToTarget: learnt.rb, learntAfterSeconds: learntAfter, route: route.path.map { names[$0] ?? "\($0)" }.joined(separator: " → "),
                       viaRelay: viaRelay, chunkBytes: chunkBytes, direct: direct, relayed: relayed)
        } catch {
            await close()
            throw error
        }
    }
}
