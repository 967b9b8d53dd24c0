import Foundation
import NIOCore
import STOQTestSupport
import Testing
import STOQBenchmarks
import STOQContent
import STOQIdentity
import STOQNode
import STOQRouting
import STOQTransport
import STOQWire

/// The routing matrix of running nodes over real QUIC on `[::1]`: PONG measurements, gossip
/// exchange, refusal of forged and malformed gossip, and route-ranked fetch sources.
@Suite(.serialized) struct RoutingNodeTests {
    /// A configuration with fast probing and gossip, probing `peers`.
    static func configuration(
        _ network: TestNetwork, _ name: String, peers: [PeerAddress] = [], gossipMilliseconds: Int = 150
    ) throws -> NodeConfiguration {
        var c = try network.configuration(name)
        c.peers = peers
        c.health = HealthSettings(intervalMilliseconds: 200, timeoutMilliseconds: 150)
        c.routing = RoutingSettings(gossipIntervalMilliseconds: gossipMilliseconds)
        return c
    }

    @Test func pongFieldsAndGossipReachTheMatrixIntact() throws {
        // Sans network: a fixed clock, two routers, one PONG and one gossip message.
        let now: Duration = .seconds(1_700_000_000)
        let (idA, idB, idC) = try (NodeID(bytes: Array(repeating: 0xA1, count: 32)), NodeID(bytes: Array(repeating: 0xB2, count: 32)),
                                   NodeID(bytes: Array(repeating: 0xC3, count: 32)))
        let a = NodeRouter(node: idA, region: "eu-west", latitude: 48.8, longitude: 2.3, bandwidthBytesPerSecond: 1_000_000, clock: { now })
        let b = NodeRouter(node: idB, clock: { now })
        let pong = STOQMessage.Pong(nonce: 1, echoSentAtMicros: 0, loadPermille: 250, bandwidthBytesPerSecond: 2_000_000, activeTransfers: 3)
        a.handleProbe(peer: PeerAddress(host: "::1", port: 9), nodeID: idC, rtt: .milliseconds(12), pong: pong)
        let c = try #require(a.record(of: RoutingNodeID(idC)))
        #expect(c.load == 0.25 && c.hops == 1)
        #expect(c.measuredRTT?.smoothed == 12)

        let gossip = a.makeGossip()
        #expect(gossip.sender == RoutingNodeID(idA).rawValue && gossip.nodes.first?.hops == 0)
        let outcome = try b.handleGossip(gossip, from: idA)
        #expect(outcome.acceptedNodes == 2 && outcome.acceptedLinks == 1 && outcome.rejected == 0)
        let learntA = try #require(b.record(of: RoutingNodeID(idA)))
        #expect(learntA.geo == GeoCoordinate(latitude: 48.8, longitude: 2.3))
        #expect(learntA.region == NodeRouter.regionNumber("eu-west") && learntA.bandwidthBitsPerSecond == 8_000_000)
        #expect(b.record(of: RoutingNodeID(idC))?.load == 0.25)
        b.publishNow()
        #expect(b.linkRTT(from: RoutingNodeID(idA), to: RoutingNodeID(idC)) == 12)

        // The same message from anyone but its sender is refused whole.
        let before = b.knownNodeCount
        #expect(throws: NodeError.self) { try b.handleGossip(gossip, from: idC) }
        #expect(throws: NodeError.self) { try b.handleGossip(gossip, from: nil) }
        #expect(b.knownNodeCount == before && b.stats.gossipRejected == 2 && b.stats.gossipReceived == 1)
    }

    @Test func gossipTeachesANodeAboutItsPeersPeerAndTheirLink() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let c = try await Node.start(try Self.configuration(network, "c"))
        try await withServing(c) {
            let b = try await Node.start(try Self.configuration(network, "b", peers: [c.address]))
            try await withServing(b) {
                let a = try await Node.start(try Self.configuration(network, "a", peers: [b.address]))
                try await withServing(a) {
                    let router = try #require(a.router)
                    let (aID, bID, cID) = (RoutingNodeID(a.nodeID), RoutingNodeID(b.nodeID), RoutingNodeID(c.nodeID))
                    #expect(router.selfID == aID)
                    // A peers only with B; it learns C and the B–C link from B's gossip.
                    try await eventually(within: 30) {
                        router.record(of: cID) != nil && router.linkRTT(from: bID, to: cID) != nil
                            && router.record(of: bID)?.measuredRTT != nil
                    }
                    let viaB = try #require(router.record(of: cID))
                    #expect(viaB.hops == 2)
                    #expect(viaB.measuredRTT == nil, "A never probes C")
                    let toB = try #require(router.record(of: bID)?.measuredRTT)
                    #expect(toB.samples >= 1 && toB.smoothed > 0, "RTT from real PONGs")
                    let linkBC = try #require(router.linkRTT(from: bID, to: cID))
                    let measuredByB = try #require(b.router?.record(of: cID)?.measuredRTT)
                    #expect(linkBC > 0 && measuredByB.smoothed > 0)
                    // The exchange taught B about A too (A asked, B answered and applied A's view).
                    #expect(b.router?.record(of: aID) != nil)
                    #expect(router.stats.gossipReceived >= 1 && router.stats.gossipRejected == 0)
                    // A route to C exists (through B, or direct by prediction).
                    #expect(router.route(to: cID, size: 1 << 20) != nil)
                    // Visibility: status JSON and metrics.
                    let status = await a.statusJSON()
                    let document = try #require(try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])
                    let routing = try #require(document["routing"] as? [String: Any])
                    #expect((routing["known_nodes"] as? Int ?? 0) >= 3)
                    let nodes = try #require(routing["nodes"] as? [[String: Any]])
                    #expect(nodes.contains { $0["id"] as? String == cID.description && $0["hops"] as? Int == 2 })
                    #expect(nodes.contains { $0["id"] as? String == bID.description && $0["rtt_ms"] != nil })
                    let metrics = await a.scrape()
                    #expect(metrics.contains("stoq_routing_known_nodes"))
                    #expect(metrics.contains("stoq_routing_gossip_total{direction=\"received\"}"))
                }
            }
        }
    }

    @Test func forgedAndMalformedGossipIsRefusedAndChangesNothing() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        // Nothing but this test's own messages reach B: A runs no router of its own (a router of
        // A's identity, driven by hand, makes the honest exchange at the end).
        let b = try await Node.start(try Self.configuration(network, "b", gossipMilliseconds: 600_000))
        try await withServing(b) {
            var quiet = try Self.configuration(network, "a")
            quiet.routing = RoutingSettings(enabled: false)
            let a = try await Node.start(quiet)
            #expect(a.router == nil)
            try await withServing(a) {
                let bRouter = try #require(b.router)
                let client = try await a.peers.client(for: b.address)
                let aID = RoutingNodeID(a.nodeID)
                let aRouter = NodeRouter(node: a.nodeID, security: try RoutingAdvertSecurity(
                    trustRoots: TrustRoots.load(path: network.caPath),
                    credentials: NodeCredentials.load(certificatePath: quiet.certificate, keyPath: quiet.key)))
                let stranger = RoutingNodeID(0x5EED_F00D)
                let before = bRouter.knownNodeCount
                func advert(_ node: RoutingNodeID, hops: UInt8) -> RoutingGossipMessage.NodeAdvert {
                    .init(node: node.rawValue, version: 1, hops: hops, region: 0, latitude: 0, longitude: 0, coordinate: .zero,
                          height: 1, error: 1, load: 0, bandwidthBitsPerSecond: 0, ageMilliseconds: 0)
                }

                // Forged: A sends a view that claims to be another node's. Unsigned gossip (0x11) is
                // refused whole by a node that runs signed routing.
                let forged = RoutingGossipMessage(sender: stranger.rawValue, nodes: [advert(stranger, hops: 0)], links: [])
                let refusal = await #expect(throws: NodeError.self) { try await client.exchangeGossip(forged) }
                #expect(refusal?.code == .refused)
                #expect("\(refusal.map { "\($0)" } ?? "")".contains("only signed routing adverts"))
                // Not starting with the sender's own advert.
                let hidden = RoutingGossipMessage(sender: aID.rawValue, nodes: [advert(stranger, hops: 1)], links: [])
                await #expect(throws: NodeError.self) { try await client.exchangeGossip(hidden) }

                // Malformed: a ROUTING_GOSSIP frame of garbage, and one with a NaN load.
                for payload in [[UInt8](repeating: 0xEE, count: 40), Self.nanLoadPayload(sender: aID)] {
                    let stream = try await client.connection.openBidirectionalStream(priority: .control)
                    var out = ByteBuffer()
                    Frame(type: STOQMessage.Types.routingGossip, payload: ByteBuffer(bytes: payload)).encode(into: &out)
                    try await stream.write(out)
                    try await stream.finish()
                    var decoder = FrameDecoder()
                    decoder.handle(bytes: try await stream.readAll(limit: 1 << 16))
                    let frame = try #require(try decoder.pollFrame())
                    guard case .error(_, let message)? = try STOQMessage.decode(frame) else {
                        Issue.record("malformed gossip was not answered with an error")
                        continue
                    }
                    #expect(message.contains("malformed routing gossip"), "\(message)")
                }

                #expect(bRouter.knownNodeCount == before)
                #expect(bRouter.record(of: stranger) == nil)
                #expect(bRouter.record(of: aID) == nil)
                #expect(bRouter.stats.gossipRejected == 4 && bRouter.stats.gossipReceived == 0)

                // The honest exchange still works afterwards, and teaches both sides.
                let outcome = try await aRouter.exchange(with: client)
                #expect(outcome.acceptedNodes >= 1)
                #expect(bRouter.record(of: aID) != nil)
                #expect(aRouter.record(of: RoutingNodeID(b.nodeID)) != nil)

                // An advert stamped far in the future (it would shadow the node's real ones) is
                // dropped, even signed by its node.
                let security = try #require(aRouter.security)
                let signedVersion = try #require(bRouter.record(of: aID)?.version)
                let body = RoutingAdvertMessage.Body(
                    nodeID: [], sequence: NodeRouter.wallClock().nanosecondsSinceEpoch + 3_600_000_000_000,
                    expiresAtMillis: NodeRouter.wallClock().nanosecondsSinceEpoch / 1_000_000 + 60_000, region: 0, latitude: 0, longitude: 0,
                    coordinate: .zero, height: 1, error: 1, load: 7, bandwidthBitsPerSecond: 0, links: [])
                let future = try #require(security.sign(body))
                _ = try await client.exchangeAdverts(RoutingAdvertMessage(certificates: [future.certificate], adverts: [future.advert]))
                #expect(bRouter.record(of: aID)?.version == signedVersion && bRouter.record(of: aID)?.load != 7)
            }
        }
    }

    @Test func aPeerThatStopsAnsweringProbesCarriesNoRoutes() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let b = try await Node.start(try Self.configuration(network, "b"))
        let serving = Task { await b.run() }
        let a = try await Node.start(try Self.configuration(network, "a", peers: [b.address]))
        try await withServing(a) {
            let router = try #require(a.router)
            let bID = RoutingNodeID(b.nodeID)
            try await eventually(within: 30) { router.rankSources([bID], size: 1 << 20).first?.cost.isFinite == true }
            await b.close()
            await serving.value
            // Three unanswered probes mark B down; the next snapshot gives it no route.
            try await eventually(within: 30) { router.record(of: bID)?.isDown == true }
            try await eventually(within: 30) { router.rankSources([bID], size: 1 << 20).first?.cost == .infinity }
        }
    }

    @Test(.timeLimit(.minutes(1))) func aSilentPeerCannotHoldAGossipRound() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let b = try await Node.start(try Self.configuration(network, "b"))
        let latch = StallingProvider(inner: StoreChunkProvider(store: b.store), passthrough: [])
        try await withServing(b, server: SilentServer(latch: latch)) {
            let a = try await Node.start(try Self.configuration(network, "a", gossipMilliseconds: 600_000))
            try await withServing(a) {
                let router = try #require(a.router)
                _ = try await a.peers.client(for: b.address)
                // B accepts the stream and never answers: the round ends after the exchange timeout (3 s).
                await router.gossipRound(peers: a.peers)
                #expect(router.stats.gossipReceived == 0 && router.stats.gossipSent >= 1)
            }
            latch.release()
        }
    }

    /// A gossip payload whose only advert has a NaN load.
    static func nanLoadPayload(sender: RoutingNodeID) -> [UInt8] {
        let advert = RoutingGossipMessage.NodeAdvert(
            node: sender.rawValue, version: 1, hops: 0, region: 0, latitude: 0, longitude: 0, coordinate: .zero, height: 1,
            error: 1, load: .nan, bandwidthBitsPerSecond: 0, ageMilliseconds: 0)
        let frame = STOQMessage.routingGossip(RoutingGossipMessage(sender: sender.rawValue, nodes: [advert], links: [])).frame()
        return Array(frame.payload.readableBytesView)
    }

    @Test func routerPrefersTheNearSourceAndTheFetchAsksItFirst() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let near = try await Node.start(try Self.configuration(network, "near"))
        try await withServing(near) {
            let far = try await Node.start(try Self.configuration(network, "far"))
            try await withServing(far) {
                // The same content on both (same bytes and publisher keys: the same content id).
                let content = try network.publish(on: near, bytes: 3 << 20, seed: 77)
                let copy = try network.publish(on: far, bytes: 3 << 20, seed: 77)
                #expect(copy.id == content.id)
                // The path to `far` is slowed: 50 ms each way through a user-space forwarder.
                let slow = try await UDPDelayForwarder.start(
                    upstream: try SocketAddress(ipAddress: "::1", port: far.address.port), delay: .milliseconds(50))
                let slowAddress = PeerAddress(host: "::1", port: slow.address.port!)
                var clientConfiguration = try Self.configuration(network, "client", peers: [slowAddress, near.address])
                // Probes wait long enough that the 100 ms path is not marked down on a loaded machine.
                clientConfiguration.health = HealthSettings(intervalMilliseconds: 300, timeoutMilliseconds: 250)
                let client = try await Node.start(clientConfiguration)
                do {
                    try await withServing(client) {
                        let router = try #require(client.router)
                        let (nearID, farID) = (RoutingNodeID(near.nodeID), RoutingNodeID(far.nodeID))
                        try await eventually(within: 30) {
                            (router.record(of: farID)?.measuredRTT?.samples ?? 0) >= 2
                                && (router.record(of: nearID)?.measuredRTT?.samples ?? 0) >= 2
                                && router.snapshot?.slot(of: farID) != nil && router.snapshot?.slot(of: nearID) != nil
                        }
                        let nearRTT = try #require(router.record(of: nearID)?.measuredRTT?.smoothed)
                        let farRTT = try #require(router.record(of: farID)?.measuredRTT?.smoothed)
                        #expect(farRTT > nearRTT, "the slowed path measures slower: \(farRTT) ms vs \(nearRTT) ms")
                        let ranked = router.rankSources([farID, nearID], size: 256 << 10)
                        #expect(ranked.map(\.node) == [nearID, farID], "\(ranked)")

                        // The fetch lists the far source first; the router's preference asks the near one first.
                        let report = try await client.fetch(content.id, from: [slowAddress, near.address])
                        #expect(report.firstRequestedSource == near.address.description)
                        let nearSource = try #require(report.sources.first { $0.name == near.address.description })
                        let farSource = try #require(report.sources.first { $0.name == slowAddress.description })
                        #expect((nearSource.routeCost ?? .infinity) < (farSource.routeCost ?? .infinity))
                        // The fetch asks `far` directly: it costs its direct link (≥ the 100 ms the forwarder adds),
                        // even where the router would rather reach it through `near`.
                        #expect((farSource.routeCost ?? 0) >= 100)
                        #expect(nearSource.bytes + farSource.bytes > 0)
                        print("routing fetch: near \(nearSource.bytes) B (cost \(nearSource.routeCost ?? -1)), far \(farSource.bytes) B (cost \(farSource.routeCost ?? -1))")
                    }
                } catch {
                    await slow.close()
                    throw error
                }
                await slow.close()
            }
        }
    }
}

extension Duration {
    /// Whole nanoseconds, for a version stamp.
    var nanosecondsSinceEpoch: UInt64 { UInt64(components.seconds) * 1_000_000_000 + UInt64(components.attoseconds / 1_000_000_000) }
}
