import Foundation
import STOQContent
import STOQIdentity
import STOQNode
import STOQSwarm
import STOQTestSupport
import STOQTransport
import STOQWire
import Testing

/// A fetch that follows a relay route end to end over real QUIC: client → relay → origin.
// Real QUIC in real time: `.serialized` puts it in `make test`'s one-at-a-time group (scripts/swift-tests.sh).
@Suite(.serialized) struct RelayTests {
    @Test func aFetchThroughARelayIsBitIdenticalAndTheRelayCountsIt() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let relay = try await network.node("relay", roles: ["relay"])
        let client = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 3_000_000, seed: 71)
        try await withServing(origin) {
            try await withServing(relay) {
                let toRelay = try await client.peers.client(for: relay.address)
                let originID = try #require(try await client.peers.client(for: origin.address).connection.peerNodeID)
                let viaRelay = PeerClient(relay: toRelay.connection, to: origin.address, targetID: originID)
                #expect(viaRelay.name.contains("via"))

                // PING, HAVE and whole chunks all travel through the relay.
                _ = try await viaRelay.ping()
                let report = try await ContentFetcher(store: client.store, sources: [viaRelay]).fetch(content.id)
                #expect(report.sources.count == 1 && (report.sources.first?.bytes ?? 0) >= content.bytes.count)
                #expect(try ContentReader(store: client.store, keys: content.keys).readFile(content.id) == content.bytes)

                let status = try await toRelay.status()
                #expect(status.contains("\"relay\""))
                #expect(!status.contains("\"streams\" : 0") && !status.contains("\"streams\":0"))
            }
        }
        await client.close()
    }

    @Test func probesTravelThroughTheRelayAndASilentPeerBehindItIsMarkedDown() async throws {
        // What `stoq get --peers A,B --via R` does: every client, for fetches and health probes,
        // goes through the relay. B answers nothing (not even PING): probing marks it down and its
        // requests move to A although no stall timer or endgame would ever move them.
        let network = try TestNetwork()
        defer { network.close() }
        let honest = try await network.node("honest")
        let silent = try await network.node("silent")
        let relay = try await network.node("relay", roles: ["relay"])
        let client = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: honest, bytes: 2_000_000, seed: 73)
        _ = try ContentPublisher(store: silent.store, keys: content.keys).put(bytes: content.bytes, name: "copy")
        let latch = StallingProvider(inner: StoreChunkProvider(store: silent.store), passthrough: [])
        let notes = NoteLog()
        let peers = PeerSet(endpoint: client.endpoint, via: relay.address)
        let health = PeerHealthService(peers: peers, configuration: .init(interval: 200_000_000, timeout: 100_000_000, failureThreshold: 3))
        let probing = Task { await health.run() }
        let report = try await withServing(honest) {
            try await withServing(relay) {
                try await withServing(silent, server: SilentServer(latch: latch)) {
                    defer { latch.release() }
                    var swarm = SwarmConfiguration()
                    swarm.minStallTimeout = 600_000_000_000
                    swarm.maxStallTimeout = 600_000_000_000
                    swarm.endgame = false
                    return try await ContentFetcher.fetch(
                        content.id, from: [honest.address, silent.address], peers: peers, health: health, store: client.store,
                        configuration: swarm, onEvent: { notes.add($0) })
                }
            }
        }
        await health.stop()
        await probing.value
        await peers.closeAll()
        #expect(try ContentReader(store: client.store, keys: content.keys).readFile(content.id) == content.bytes)
        #expect(report.sources.allSatisfy { $0.name.contains("via") }, "\(report.sources.map(\.name))")
        let quiet = try #require(report.sources.first { $0.name.hasPrefix(silent.address.description) })
        #expect(quiet.state == "down" && quiet.chunks == 0, "\(quiet)")
        #expect(notes.all.contains { $0.contains("is down (health probes unanswered)") }, "\(notes.all)")
        await client.close()
    }

    @Test func aRelayRefusesTheWrongNodeAndNonRelaysSaySo() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let relay = try await network.node("relay", roles: ["relay"])
        let plain = try await network.node("plain")
        let client = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 200_000, seed: 72)
        let someChunk = try #require(try await manifestChunks(of: content.id, in: origin.store).first)
        try await withServing(origin) {
            try await withServing(relay) {
                try await withServing(plain) {
                    let toRelay = try await client.peers.client(for: relay.address)
                    // The relay reaches the origin, but the requester named another node.
                    let wrongID = try #require(try await client.peers.client(for: plain.address).connection.peerNodeID)
                    let impostor = PeerClient(relay: toRelay.connection, to: origin.address, targetID: wrongID)
                    await #expect(throws: NodeError(.refused, "")) { _ = try await impostor.fetchChunk(someChunk) }

                    // A node without the relay role says so instead of carrying the stream.
                    let toPlain = try await client.peers.client(for: plain.address)
                    let notARelay = PeerClient(relay: toPlain.connection, to: origin.address)
                    do {
                        _ = try await notARelay.fetchChunk(someChunk)
                        Issue.record("a node without the relay role relayed")
                    } catch let error as NodeError {
                        #expect(error.reason.contains("relay role"), "\(error)")
                    }
                }
            }
        }
        await client.close()
    }
}
