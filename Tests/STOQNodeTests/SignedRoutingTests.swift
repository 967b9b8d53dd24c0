import Crypto
import Foundation
import NIOCore
import STOQIdentity
import STOQNode
import STOQRouting
import STOQTestSupport
import STOQTransport
import STOQWire
import Testing

/// A clock a test moves by hand (the wall clock at the start).
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Duration
    init() { value = NodeRouter.wallClock() }
    var now: Duration { lock.withLock { value } }
    func advance(_ by: Duration) { lock.withLock { value += by } }
}

/// Signed routing (issue 15 item 4): each node signs its own advert, gossip carries adverts
/// unchanged, and a receiver takes an advert about a node only with that node's signature.
@Suite(.serialized) struct SignedRoutingTests {
    static func router(_ credentials: NodeCredentials, _ roots: TrustRoots, _ clock: ManualClock, latitude: Double = 48.8) throws -> NodeRouter {
        NodeRouter(
            node: credentials.nodeID, region: "eu", latitude: latitude, longitude: 2.3, gossipInterval: .seconds(2), clock: { clock.now },
            security: try RoutingAdvertSecurity(trustRoots: roots, credentials: credentials))
    }

    static let pong = STOQMessage.Pong(nonce: 1, echoSentAtMicros: 0, loadPermille: 100, bandwidthBytesPerSecond: 0, activeTransfers: 0)

    /// Signs `body` with `credentials`' key exactly as given (no node id substituted): a forger.
    static func forge(_ body: RoutingAdvertMessage.Body, key credentials: NodeCredentials, certificate: [UInt8]) throws -> RoutingAdvertMessage {
        let key = try P256.Signing.PrivateKey(pemRepresentation: credentials.privateKeyPEM)
        let bytes = body.encoded()
        let signature = try key.signature(for: RoutingAdvertMessage.signingLabel + bytes)
        let advert = RoutingAdvertMessage.Advert(
            hops: 0, ageMilliseconds: 0, certificateDigest: Array(SHA256.hash(data: certificate)), body: bytes, signature: Array(signature.derRepresentation))
        return RoutingAdvertMessage(certificates: [certificate], adverts: [advert])
    }

    @Test func everyAdvertIsCheckedAgainstItsSigner() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let roots = try TrustRoots.load(path: network.caPath)
        let (ca, cb, cc, cm) = try (network.ca.issue(name: "a"), network.ca.issue(name: "b"), network.ca.issue(name: "c"), network.ca.issue(name: "mallory"))
        let clock = ManualClock()
        let (a, b, c) = try (Self.router(ca, roots, clock), Self.router(cb, roots, clock), Self.router(cc, roots, clock, latitude: 48.9))
        let (aID, cID) = (RoutingNodeID(ca.nodeID), RoutingNodeID(cc.nodeID))

        // A measures C; B learns C's and A's signed adverts (A's carries its link to C).
        a.handleProbe(peer: PeerAddress(host: "::1", port: 9), nodeID: cc.nodeID, rtt: .milliseconds(10), pong: Self.pong)
        _ = try await b.handleAdverts(await c.makeAdverts(), from: cc.nodeID)
        let first = await a.makeAdverts()
        #expect(first.adverts.count == 1 && first.certificates.count == 1, "C has no signed advert at A: only A's own travels")
        var outcome = try await b.handleAdverts(first, from: ca.nodeID)
        #expect(outcome.acceptedNodes == 1 && outcome.unverified == 0)
        b.publishNow()
        #expect(b.linkRTT(from: aID, to: cID) == 10)
        let genuine = try #require(b.record(of: aID))
        #expect(genuine.load == 0 && genuine.geo.latitude == 48.8)

        // Gossip carries A's advert unchanged: B forwards A's exact bytes and signature.
        clock.advance(.milliseconds(10))
        let forwarded = await b.makeAdverts()
        let fromB = try #require(forwarded.adverts.first { $0.body == first.adverts[0].body })
        #expect(fromB.signature == first.adverts[0].signature && fromB.hops == 1)
        let d = try Self.router(network.ca.issue(name: "d"), roots, clock)
        outcome = try await d.handleAdverts(forwarded, from: cb.nodeID)
        #expect(d.record(of: aID)?.version == genuine.version && d.record(of: aID)?.hops == 2)

        // Tampered: A's body with load 12345, a newer sequence and a 161.8 ms link, A's signature kept.
        var tamperedBody = try RoutingAdvertMessage.Body.decode(first.adverts[0].body)
        tamperedBody.load = 12345
        tamperedBody.sequence += 1
        tamperedBody.links = [.init(to: cID.rawValue, rttMilliseconds: 161.8, bandwidthBitsPerSecond: 0)]
        var tampered = first
        tampered.adverts[0].body = tamperedBody.encoded()
        outcome = try await b.handleAdverts(tampered, from: cm.nodeID)
        #expect(outcome.acceptedNodes == 0 && outcome.unverified == 1)
        // Wrong signer: Mallory signs A's body with her own key, under her certificate, then under A's.
        let mine = try Self.forge(tamperedBody, key: cm, certificate: cm.chainDER[0])
        outcome = try await b.handleAdverts(mine, from: cm.nodeID)
        #expect(outcome.acceptedNodes == 0 && outcome.unverified == 1)
        let underA = try Self.forge(tamperedBody, key: cm, certificate: ca.chainDER[0])
        outcome = try await b.handleAdverts(underA, from: cm.nodeID)
        #expect(outcome.acceptedNodes == 0 && outcome.unverified == 1)
        // A certificate of another network, and an advert with no certificate B knows.
        let foreign = try CertificateAuthority.create(commonName: "Other CA").issue(name: "a")
        var stranger = tamperedBody
        stranger.nodeID = foreign.nodeID.bytes
        outcome = try await b.handleAdverts(try Self.forge(stranger, key: foreign, certificate: foreign.chainDER[0]), from: cm.nodeID)
        #expect(outcome.acceptedNodes == 0 && outcome.unverified == 1)
        var bare = try Self.forge(stranger, key: foreign, certificate: foreign.chainDER[0])
        bare.certificates = []
        outcome = try await b.handleAdverts(bare, from: cm.nodeID)
        #expect(outcome.unverified == 1 && b.record(of: RoutingNodeID(foreign.nodeID)) == nil)
        b.publishNow()
        #expect(b.record(of: aID) == genuine, "nothing a forger sent changed A's entry")
        #expect(b.linkRTT(from: aID, to: cID) == 10)
        // Unsigned gossip (0x11) is refused whole.
        #expect(throws: NodeError.self) { try b.handleGossip(RoutingGossipMessage(sender: RoutingNodeID(cm.nodeID).rawValue, nodes: [], links: []), from: cm.nodeID) }

        // Replay: A's newer advert wins, its older one then counts as stale.
        clock.advance(.seconds(2))
        a.setLocalLoad(0.5)
        let second = await a.makeAdverts()
        outcome = try await b.handleAdverts(second, from: ca.nodeID)
        #expect(outcome.acceptedNodes == 1 && b.record(of: aID)?.load == 0.5)
        outcome = try await b.handleAdverts(first, from: ca.nodeID)
        #expect(outcome.stale == 1 && outcome.acceptedNodes == 0 && b.record(of: aID)?.load == 0.5)

        // Expiry (on the injected clock): after its lifetime, A's advert is refused by a node
        // that never saw it, B stops gossiping it, and A carries no routes at B.
        clock.advance(RoutingAdvertSecurity.defaultAdvertLifetime + .seconds(1))
        let e = try Self.router(network.ca.issue(name: "e"), roots, clock)
        outcome = try await e.handleAdverts(second, from: ca.nodeID)
        #expect(outcome.unverified == 1 && e.record(of: aID) == nil)
        let late = await b.makeAdverts()
        #expect(late.adverts.allSatisfy { $0.body != second.adverts[0].body })
        b.publishNow()
        let snapshot = try #require(b.snapshot)
        #expect(snapshot.ids.firstIndex(of: aID).map { snapshot.usable[$0] } == false)

        // Every certificate's chain was checked once; signatures only for adverts newer than held.
        let stats = try #require(b.security?.stats)
        #expect(stats.chainVerifications <= 5, "\(stats)")
        #expect(stats.badSignatures >= 2)
    }

    /// The cost of a gossip round at a receiver: a message of 64 nodes' adverts, first with every
    /// certificate new, then (every node re-signed) with the certificates cached, then replayed.
    @Test func costOfAGossipRound() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let roots = try TrustRoots.load(path: network.caPath)
        let clock = ManualClock()
        let hub = try Self.router(network.ca.issue(name: "hub"), roots, clock)
        let hubID = try #require(hub.security?.nodeID)
        let nodes = try (0 ..< 64).map { try Self.router(network.ca.issue(name: "n\($0)"), roots, clock) }
        func feedHub() async throws {
            for n in nodes { _ = try await hub.handleAdverts(await n.makeAdverts(), from: try #require(n.security?.nodeID)) }
        }
        try await feedHub()
        let receiver = try Self.router(network.ca.issue(name: "receiver"), roots, clock)
        func timed(_ message: RoutingAdvertMessage) async throws -> (Double, RoutingGossipOutcome) {
            let start = ContinuousClock.now
            let outcome = try await receiver.handleAdverts(message, from: hubID)
            let elapsed = ContinuousClock.now - start
            return (Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000, outcome)
        }
        let round1 = await hub.makeAdverts()
        #expect(round1.adverts.count == 65)
        let (cold, o1) = try await timed(round1)
        #expect(o1.acceptedNodes == 65)
        clock.advance(.seconds(2))
        try await feedHub()
        let round2 = await hub.makeAdverts()
        let (warm, o2) = try await timed(round2)
        #expect(o2.acceptedNodes == 65)
        let (replay, o3) = try await timed(round2)
        #expect(o3.acceptedNodes == 0 && o3.stale == 65)
        let stats = try #require(receiver.security?.stats)
        #expect(stats.chainVerifications == 65, "each certificate's chain is checked once: \(stats)")
        #expect(stats.signatureChecks == 130)
        var signStart = ContinuousClock.now
        clock.advance(.seconds(2))
        _ = await nodes[0].makeAdverts()
        let sign = ContinuousClock.now - signStart
        signStart = ContinuousClock.now
        let size = round2.frame().payload.readableBytes
        print(String(format: "signed routing cost: a 65-advert round (%ld bytes, %ld certificates) took %.2f ms with every certificate new (65 chain checks + 65 signatures), %.2f ms with certificates cached (65 signatures), %.2f ms replayed (stale: no checks); signing one advert %.3f ms",
                     size, round2.certificates.count, cold, warm, replay, Double(sign.components.attoseconds) / 1e15))
    }

    /// Over real QUIC: (a) a plain certified client cannot rewrite another node's load or links;
    /// (b) gossip through a relay claiming to be the relay is refused by the relay, and a forged
    /// advert of the relay is dropped by the target.
    @Test(.timeLimit(.minutes(1))) func forgedGossipOverQUICChangesNothing() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var bConfig = try RoutingNodeTests.configuration(network, "b")
        bConfig.roles = ["origin", "relay"]
        bConfig.relayOpen = true  // mallory is a member the relay carries for: the refusal tested is of the gossip itself
        let b = try await Node.start(bConfig)
        try await withServing(b) {
            let c = try await Node.start(try RoutingNodeTests.configuration(network, "c", peers: [b.address]))
            try await withServing(c) {
                var quiet = try network.configuration("mallory", roles: ["client"])
                quiet.routing = RoutingSettings(enabled: false)
                let mallory = try await Node.start(quiet)
                try await withServing(mallory) {
                    let (bRouter, cRouter) = (try #require(b.router), try #require(c.router))
                    let (bID, cID) = (RoutingNodeID(b.nodeID), RoutingNodeID(c.nodeID))
                    // B learns C's signed advert, with C's measured link to B.
                    try await eventually(within: 20) { bRouter.linkRTT(from: cID, to: bID) != nil && cRouter.record(of: bID)?.version ?? 0 > 0 }
                    let credentials = try NodeCredentials.load(certificatePath: quiet.certificate, keyPath: quiet.key)
                    let toB = try await mallory.peers.client(for: b.address)

                    // (a) Legacy unsigned gossip rewriting C: refused whole.
                    let now = NodeRouter.wallClock().nanosecondsSinceEpoch
                    let legacy = RoutingGossipMessage(
                        sender: RoutingNodeID(mallory.nodeID).rawValue,
                        nodes: [.init(node: RoutingNodeID(mallory.nodeID).rawValue, version: now, hops: 0, region: 0, latitude: 0, longitude: 0,
                                      coordinate: .zero, height: 1, error: 1, load: 0, bandwidthBitsPerSecond: 0, ageMilliseconds: 0),
                                .init(node: cID.rawValue, version: now + 1_000_000_000, hops: 1, region: 0, latitude: 0, longitude: 0,
                                      coordinate: .zero, height: 1, error: 1, load: 12345, bandwidthBitsPerSecond: 0, ageMilliseconds: 0)],
                        links: [.init(from: cID.rawValue, to: bID.rawValue, version: now + 1_000_000_000, rttMilliseconds: 161.8, bandwidthBitsPerSecond: 0)])
                    await #expect(throws: NodeError.self) { try await toB.exchangeGossip(legacy) }
                    // (a) Signed form: C's genuine advert (from B's own answer) with load 12345 and a
                    // 161.8 ms link: with C's signature kept, and re-signed by Mallory.
                    let view = try await toB.exchangeAdverts(RoutingAdvertMessage(certificates: [], adverts: []))
                    let ofC = try #require(view.adverts.first { (try? RoutingAdvertMessage.Body.decode($0.body))?.routingID == cID.rawValue })
                    var body = try RoutingAdvertMessage.Body.decode(ofC.body)
                    body.load = 12345
                    body.sequence += 1_000_000_000
                    body.links = [.init(to: bID.rawValue, rttMilliseconds: 161.8, bandwidthBitsPerSecond: 0)]
                    var tampered = view
                    tampered.adverts = [ofC]
                    tampered.adverts[0].body = body.encoded()
                    _ = try await toB.exchangeAdverts(tampered)
                    _ = try await toB.exchangeAdverts(try Self.forge(body, key: credentials, certificate: credentials.chainDER[0]))
                    bRouter.publishNow()
                    #expect((bRouter.record(of: cID)?.load ?? 0) < 2, "C's load stays what C signed")
                    #expect(bRouter.linkRTT(from: cID, to: bID) != 161.8)
                    #expect((bRouter.security?.stats.badSignatures ?? 0) >= 2)

                    // (b) Through the relay B to C, an advert claiming to be B's: the relay refuses.
                    var relayBody = body
                    relayBody.nodeID = b.nodeID.bytes
                    relayBody.links = []
                    let claim = try Self.forge(relayBody, key: credentials, certificate: credentials.chainDER[0])
                    let stream = try await toB.connection.openBidirectionalStream()
                    var out = STOQMessage.relayOpen(target: WireID(c.nodeID.bytes), host: "::1", port: UInt16(c.address.port)).encoded()
                    var request = claim.encoded()
                    out.writeBuffer(&request)
                    try await stream.write(out)
                    try await stream.finish()
                    var decoder = FrameDecoder(maximumPayloadLength: 1 << 16)
                    decoder.handle(bytes: try await stream.readAll(limit: 1 << 20))
                    let answer = try #require(try decoder.pollFrame())
                    guard case .error(_, let message)? = try STOQMessage.decode(answer) else {
                        Issue.record("the relay carried routing gossip")
                        return
                    }
                    #expect(message.contains("does not carry routing gossip"), "\(message)")
                    // And sent straight to C, the forged advert of B changes nothing there.
                    let before = try #require(cRouter.record(of: bID))
                    _ = try await mallory.peers.client(for: c.address).exchangeAdverts(claim)
                    let after = try #require(cRouter.record(of: bID))
                    #expect(after.load < 2 && after.version <= NodeRouter.wallClock().nanosecondsSinceEpoch)
                    #expect(after.version >= before.version)
                    print("signed routing over QUIC: B's entry of C load \(bRouter.record(of: cID)?.load ?? -1), link C→B \(bRouter.linkRTT(from: cID, to: bID) ?? -1) ms; relay refused: \(message)")
                }
            }
        }
    }
}
