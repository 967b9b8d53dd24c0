import Crypto
import Foundation
import NIOCore
import STOQContent
import STOQEdge
import STOQIdentity
import STOQRouting
import STOQNode
import STOQTestSupport
import STOQWire
import Testing

/// Values a peer chooses, over real QUIC: out-of-range ones are refused with ERROR before anything
/// is stored, and the node keeps serving (issue 11: "no peer input can trap a node").
@Suite(.serialized) struct PeerInputTests {
    /// A record for `name` signed by `owner` whose 8-byte version field holds `version`, whatever its
    /// value: what a hostile publisher can send (``NameRecord/sign`` refuses such versions).
    static func selfSigned(name: String, content: ContentID, version: UInt64, owner: P256.Signing.PrivateKey) throws -> [UInt8] {
        let honest = try NameRecord.sign(name: name, content: content, version: 1, ttlSeconds: 60, owner: owner).encode()
        var body = Array(honest.dropLast(64))
        let at = 4 + 1 + 1 + name.utf8.count + 32
        body.replaceSubrange(at ..< at + 8, with: (0 ..< 8).map { UInt8(truncatingIfNeeded: version >> (56 - 8 * UInt64($0))) })
        let signature = try owner.signature(for: Array("STOQ name record v1".utf8) + body)
        return body + Array(signature.rawRepresentation)
    }

    /// The known crash: NAME_PUBLISH of a correctly self-signed record for a new name with a version
    /// of 2^62 or more was stored, then the origin trapped encoding NAME_PUBLISHED (a varint).
    @Test func aPublishedVersionBeyondTheVarintRangeIsRefusedAndNotStored() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        // The network's operator ("client"): an origin takes names only from itself, its operators,
        // its publishers and grant holders (issue 15).
        let publisher = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 20_000, seed: 11).id
        let owner = P256.Signing.PrivateKey()
        try await withServing(origin) {
            let client = try await publisher.peers.client(for: origin.address)
            for (i, version) in [UInt64(1) << 62, (1 << 62) + 1, 1 << 63, .max].enumerated() {
                let name = "huge-\(i)"
                let bytes = try Self.selfSigned(name: name, content: content, version: version, owner: owner)
                do {
                    _ = try await client.publishName(bytes)
                    Issue.record("v\(version) was accepted")
                } catch let error as NodeError {
                    #expect(error.code == .refused, "\(error)")
                    #expect("\(error)".contains("highest version"), "the refusal says why: \(error)")
                }
                // Nothing stored, and the origin still answers.
                #expect(try await client.resolveName(name) == nil)
                #expect(await origin.names.heldVersion(of: name) == nil)
                _ = try await client.ping()
            }
            // The bound itself is accepted and announced.
            let top = try NameRecord.sign(name: "top", content: content, version: NameRecord.maxVersion, ttlSeconds: 60, owner: owner)
            let published = try await client.publishName(top.encode())
            #expect(published.version == VarInt.max)
            #expect(try NameRecord.decode(try #require(try await client.resolveName("top"))) == top)
        }
        // A restarted origin does not load such a record from disk either (it was never written).
        let records = (try? FileManager.default.contentsOfDirectory(atPath: origin.configuration.store + "/names")) ?? []
        #expect(records.filter { $0.hasSuffix(".record") }.count == 1)
        await publisher.close()
    }
}

/// Routing gossip with the largest values the wire carries: the receiver keeps a finite view (its
/// own coordinate included, after it probes the sender), so its own gossip still decodes at its
/// peers and its rankings stay numbers.
@Suite struct HostileGossipTests {
    @Test func extremeButWellFormedGossipDoesNotPoisonTheReceiver() throws {
        let now: Duration = .seconds(1_700_000_000)
        let (idA, idB) = try (NodeID(bytes: Array(repeating: 0xA1, count: 32)), NodeID(bytes: Array(repeating: 0xB2, count: 32)))
        let a = NodeRouter(node: idA, region: "eu-west", latitude: 48.8, longitude: 2.3, clock: { now })
        let b = RoutingNodeID(idB).rawValue
        let huge = Float.greatestFiniteMagnitude
        for coordinate in [SIMD4<Float>(huge, -huge, huge, -huge), SIMD4<Float>(1e6, -1e6, 1e6, -1e6), SIMD4<Float>(huge, 0, 0, 0)] {
            let own = RoutingGossipMessage.NodeAdvert(
                node: b, version: VarInt.max, hops: 0, region: .max, latitude: 90, longitude: -180, coordinate: coordinate,
                height: huge, error: 0, load: huge, bandwidthBitsPerSecond: huge, ageMilliseconds: .max)
            let other = RoutingGossipMessage.NodeAdvert(
                node: 42, version: VarInt.max, hops: 3, region: 0, latitude: -90, longitude: 180, coordinate: -coordinate,
                height: huge, error: 1, load: 0, bandwidthBitsPerSecond: 0, ageMilliseconds: .max)
            let links = [RoutingGossipMessage.LinkAdvert(from: b, to: 42, version: VarInt.max, rttMilliseconds: huge, bandwidthBitsPerSecond: huge),
                         RoutingGossipMessage.LinkAdvert(from: 42, to: b, version: 0, rttMilliseconds: .leastNonzeroMagnitude, bandwidthBitsPerSecond: 0)]
            // What a peer can send: the message as it arrives off the wire (whatever the decoder lets through).
            guard case .routingGossip(let message)? = try? STOQMessage.decode(STOQMessage.routingGossip(.init(sender: b, nodes: [own, other], links: links)).frame()) else {
                continue  // refused by the decoder: nothing to apply
            }
            _ = try? a.handleGossip(message, from: idB)
            // A probes B: B's advertised coordinate now moves A's own (Vivaldi).
            for rtt in [1, 50, 100_000] {
                let pong = STOQMessage.Pong(nonce: 1, echoSentAtMicros: 0, loadPermille: 1000, bandwidthBytesPerSecond: VarInt.max, activeTransfers: VarInt.max)
                a.handleProbe(peer: PeerAddress(host: "::1", port: 9), nodeID: idB, rtt: .milliseconds(rtt), pong: pong)
            }
            a.publishNow()
            _ = a.tick()
            let mine = a.makeGossip()
            let first = try #require(mine.nodes.first)
            #expect(first.coordinate.x.isFinite && first.coordinate.y.isFinite && first.coordinate.z.isFinite && first.coordinate.w.isFinite,
                    "own coordinate after \(coordinate): \(first.coordinate)")
            #expect(first.height.isFinite && first.error.isFinite)
            // A's own gossip still decodes at its peers.
            #expect(throws: Never.self) { try STOQMessage.decode(STOQMessage.routingGossip(mine).frame()) }
            for ranked in a.rankSources([RoutingNodeID(idB), RoutingNodeID(42)], size: 1 << 20) {
                #expect(!ranked.cost.isNaN, "\(ranked)")
            }
        }
    }

    @Test func coordinatesHeightsAndRTTsBeyondAMillionMillisecondsAreMalformed() throws {
        let advert = RoutingGossipMessage.NodeAdvert(
            node: 5, version: 9, hops: 0, region: 3, latitude: 0, longitude: 0, coordinate: SIMD4(1e6, -1e6, 0, 0),
            height: 1e6, error: 0.5, load: 0, bandwidthBitsPerSecond: 0, ageMilliseconds: 0)
        let link = RoutingGossipMessage.LinkAdvert(from: 5, to: 6, version: 9, rttMilliseconds: 1e6, bandwidthBitsPerSecond: 0)
        let frame = STOQMessage.routingGossip(.init(sender: 5, nodes: [advert], links: [link])).frame()
        #expect(throws: Never.self) { try STOQMessage.decode(frame) }  // the bound itself is fine
        let payload = Array(frame.payload.readableBytesView)
        // sender 8, count 1, node 8, version 1, hops 1, region 2, latitude 4, longitude 4: the coordinate's
        // first axis at 29, the height at 45; the link's RTT is 8 bytes before the end (then bandwidth).
        for (offset, value) in [(29, Float(1_000_001)), (33, Float(-1_000_001)), (45, Float(2e6)), (payload.count - 8, Float(3e38))] {
            var bytes = payload
            bytes.replaceSubrange(offset ..< offset + 4, with: withUnsafeBytes(of: value.bitPattern.bigEndian, Array.init))
            #expect(throws: WireError(.malformed, ""), "\(value) at \(offset)") {
                try STOQMessage.decode(Frame(type: STOQMessage.Types.routingGossip, payload: ByteBuffer(bytes: bytes)))
            }
        }
        // What a node writes is within the bound, so its peers never refuse its own view.
        var far = advert
        far.coordinate = SIMD4(5e6, -5e6, 0, 0)
        far.height = 7e6
        #expect(throws: Never.self) { try STOQMessage.decode(STOQMessage.routingGossip(.init(sender: 5, nodes: [far], links: [])).frame()) }
    }
}
