import NIOCore
import Testing
@testable import STOQWire
import STOQSimulation

@Suite struct RoutingGossipMessageTests {
    static func randomGossip(_ rng: inout SplitMix64, maxNodes: Int, maxLinks: Int) -> RoutingGossipMessage {
        func f(_ range: ClosedRange<Float>) -> Float { Float.random(in: range, using: &rng) }
        let nodes = (0 ..< Int.random(in: 0 ... maxNodes, using: &rng)).map { _ in
            RoutingGossipMessage.NodeAdvert(
                node: rng.next(), version: rng.next() >> 2, hops: UInt8.random(in: 0 ... 255, using: &rng),
                region: UInt16.random(in: 0 ... .max, using: &rng), latitude: f(-90 ... 90), longitude: f(-180 ... 180),
                coordinate: SIMD4(f(-500 ... 500), f(-500 ... 500), f(-500 ... 500), f(-500 ... 500)), height: f(0 ... 50),
                error: f(0 ... 1), load: f(0 ... 3), bandwidthBitsPerSecond: f(0 ... 1e10),
                ageMilliseconds: UInt32.random(in: 0 ... .max, using: &rng))
        }
        let links = (0 ..< Int.random(in: 0 ... maxLinks, using: &rng)).map { _ in
            let from = rng.next()
            return RoutingGossipMessage.LinkAdvert(
                from: from, to: from &+ 1 &+ rng.next() % 1000, version: rng.next() >> 2, rttMilliseconds: f(0.01 ... 900),
                bandwidthBitsPerSecond: f(0 ... 1e10))
        }
        return RoutingGossipMessage(sender: rng.next(), nodes: nodes, links: links)
    }

    static func decode(_ bytes: [UInt8]) throws(WireError) -> STOQMessage? {
        try STOQMessage.decode(Frame(type: STOQMessage.Types.routingGossip, payload: ByteBuffer(bytes: bytes)))
    }

    @Test func seededRoundTripsAtFullSize() throws {
        let seed = UInt64.random(in: 0 ... .max)
        var rng = SplitMix64(seed: seed)
        for round in 0 ..< 40 {
            let bound = round == 0 ? (RoutingGossipMessage.maxNodeAdverts, RoutingGossipMessage.maxLinkAdverts) : (40, 200)
            var gossip = Self.randomGossip(&rng, maxNodes: bound.0, maxLinks: bound.1)
            if round == 0 {
                gossip.nodes += Self.randomGossip(&rng, maxNodes: RoutingGossipMessage.maxNodeAdverts, maxLinks: 0).nodes
                gossip.nodes = Array(gossip.nodes.prefix(RoutingGossipMessage.maxNodeAdverts))
            }
            let frame = STOQMessage.routingGossip(gossip).frame()
            #expect(frame.payload.readableBytes <= RoutingGossipMessage.maxPayloadLength, "seed \(seed)")
            #expect(try STOQMessage.decode(frame) == .routingGossip(gossip), "seed \(seed)")
        }
    }

    @Test func oversizedMessagesAreCutWhenEncodedAndRefusedWhenDeclared() throws {
        var rng = SplitMix64(seed: 7)
        var gossip = Self.randomGossip(&rng, maxNodes: 1, maxLinks: 1)
        let advert = Self.randomGossip(&rng, maxNodes: 1, maxLinks: 0).nodes.first ?? RoutingGossipMessage.NodeAdvert(
            node: 1, version: 1, hops: 0, region: 0, latitude: 0, longitude: 0, coordinate: .zero, height: 0, error: 1, load: 0,
            bandwidthBitsPerSecond: 0, ageMilliseconds: 0)
        gossip.nodes = Array(repeating: advert, count: RoutingGossipMessage.maxNodeAdverts + 10)
        guard case .routingGossip(let decoded)? = try STOQMessage.decode(STOQMessage.routingGossip(gossip).frame()) else {
            Issue.record("no gossip decoded")
            return
        }
        #expect(decoded.nodes.count == RoutingGossipMessage.maxNodeAdverts)

        // A count over the bound, and a count the payload cannot hold, are errors before any allocation.
        var w = WireWriter()
        w.integer(UInt64(1))
        w.varint(UInt64(RoutingGossipMessage.maxNodeAdverts + 1))
        #expect(throws: WireError(.malformed, "")) { try Self.decode(Array(w.buffer.readableBytesView)) }
        w = WireWriter()
        w.integer(UInt64(1))
        w.varint(200)
        w.bytes([UInt8](repeating: 0, count: 100))
        #expect(throws: WireError(.truncated, "")) { try Self.decode(Array(w.buffer.readableBytesView)) }
        w = WireWriter()
        w.integer(UInt64(1))
        w.varint(0)
        w.varint(UInt64(RoutingGossipMessage.maxLinkAdverts + 1))
        #expect(throws: WireError(.malformed, "")) { try Self.decode(Array(w.buffer.readableBytesView)) }
    }

    @Test func badNumbersMakeTheWholeMessageMalformed() throws {
        let good = RoutingGossipMessage.NodeAdvert(
            node: 5, version: 9, hops: 0, region: 3, latitude: 48.8, longitude: 2.3, coordinate: SIMD4(1, 2, 3, 4), height: 1,
            error: 0.5, load: 0.2, bandwidthBitsPerSecond: 1e9, ageMilliseconds: 0)
        let link = RoutingGossipMessage.LinkAdvert(from: 5, to: 6, version: 9, rttMilliseconds: 1.5, bandwidthBitsPerSecond: 0)
        var mutations: [(String, (inout RoutingGossipMessage) -> Void)] = [
            ("NaN load", { $0.nodes[0].load = .nan }),
            ("negative load", { $0.nodes[0].load = -1 }),
            ("latitude off the globe", { $0.nodes[0].latitude = 91 }),
            ("infinite coordinate", { $0.nodes[0].coordinate.z = .infinity }),
            ("error above 1", { $0.nodes[0].error = 1.5 }),
            ("negative height", { $0.nodes[0].height = -0.5 }),
            ("zero RTT", { $0.links[0].rttMilliseconds = 0 }),
            ("link to itself", { $0.links[0].to = $0.links[0].from }),
        ]
        mutations.append(("negative bandwidth", { $0.links[0].bandwidthBitsPerSecond = -3 }))
        // The unmutated message (adverts of the smallest encoded size) decodes.
        let baseline = RoutingGossipMessage(sender: 5, nodes: [good], links: [link])
        #expect(try STOQMessage.decode(STOQMessage.routingGossip(baseline).frame()) == .routingGossip(baseline))
        for (what, mutate) in mutations {
            var gossip = RoutingGossipMessage(sender: 5, nodes: [good], links: [link])
            mutate(&gossip)
            #expect(throws: WireError(.malformed, ""), "\(what)") { try STOQMessage.decode(STOQMessage.routingGossip(gossip).frame()) }
        }
    }

    @Test func randomGarbageIsAnErrorNeverATrap() {
        let seed = UInt64.random(in: 0 ... .max)
        var rng = SplitMix64(seed: seed)
        var errors = 0
        for _ in 0 ..< 20_000 {
            let bytes = (0 ..< Int.random(in: 0 ... 300, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            do { _ = try Self.decode(bytes) } catch { errors += 1 }
            var framed = ByteBuffer()
            Frame(type: STOQMessage.Types.routingGossip, payload: ByteBuffer(bytes: bytes)).encode(into: &framed)
            STOQMessage.fuzz(Array(framed.readableBytesView))
            RoutingGossipMessage.fuzz(bytes)
        }
        #expect(errors > 19_000, "seed \(seed)")
        // Valid messages with bytes flipped: decode or fail, never trap; what decodes re-encodes identically.
        for _ in 0 ..< 3_000 {
            var bytes = Array(STOQMessage.routingGossip(Self.randomGossip(&rng, maxNodes: 5, maxLinks: 5)).encoded().readableBytesView)
            for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) {
                bytes[Int.random(in: 0 ..< bytes.count, using: &rng)] ^= UInt8.random(in: 1 ... 255, using: &rng)
            }
            STOQMessage.fuzz(bytes)
        }
    }
}
