import Foundation
import STOQContent
import STOQIdentity
import STOQNode
import STOQTransport
import STOQWire
import Testing

/// A fetch that follows a relay route end to end over real QUIC: client → relay → origin.
@Suite struct RelayTests {
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
