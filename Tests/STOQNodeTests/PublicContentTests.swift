import Foundation
import STOQContent
import STOQNode
import STOQTestSupport
import STOQWire
import Testing

/// Public content and purge over real QUIC on [::1]: an origin, edges and a client as `Node`s.
@Suite(.serialized) struct PublicContentTests {
    /// Puts `bytes` into `origin`'s store, public (its own key in the origin's keyring) or private.
    func put(_ bytes: [UInt8], on origin: Node, keys: PublisherKeys, public isPublic: Bool, keyInKeyring: [UInt8]? = nil) throws -> (id: ContentID, key: [UInt8]?) {
        let publisher = ContentPublisher(store: origin.store, keys: keys)
        guard isPublic else { return (try publisher.put(bytes: bytes, name: "private").id, nil) }
        let key = PublicKeyring.newKey()
        let id = try publisher.put(bytes: bytes, name: "public", readKey: key).id
        try PublicKeyring(path: PublicKeyring.publisherPath(in: origin.configuration.store)).add(id, key: keyInKeyring ?? key)
        return (id, key)
    }

    /// Fetches through `peer` (once: a fill across two tiers of edges must not stall).
    func fetch(_ id: ContentID, into store: any ChunkStore, via peer: PeerClient) async throws {
        _ = try await ContentFetcher(store: store, sources: [peer]).fetch(id)
    }

    func data(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ Int(seed) &* 7 &+ ($0 >> 9)) } }

    @Test func anEdgeHandsOutAndKeepsTheKeyOfPublicContentOnly() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let keys = PublisherKeys.random()
        let bytes = data(300_000, seed: 1)
        let open = try put(bytes, on: origin, keys: keys, public: true)
        let closed = try put(data(200_000, seed: 2), on: origin, keys: keys, public: false)
        let edge = try await network.node("edge", roles: ["edge"], upstream: [origin.address])
        let client = try await network.node("client", roles: ["client"])
        let key = try #require(open.key)
        try await withServing(origin) {
            try await withServing(edge) {
                let peer = try await client.peers.client(for: edge.address)
                #expect(try await peer.contentKey(for: open.id) == .key(key))
                guard case .private = try await peer.contentKey(for: closed.id) else { Issue.record("private content got a key"); return }
                guard case .notFound = try await peer.contentKey(for: ContentID(ChunkID.of([1, 2, 3]))) else { Issue.record("unknown content"); return }
                // The lookup an HTTP responder uses: public content only, even on the origin.
                #expect(await edge.publicKeys.readKey(for: open.id) == key)
                #expect(await edge.publicKeys.readKey(for: closed.id) == nil)
                #expect(await origin.publicKeys.readKey(for: open.id) == key)
                #expect(await origin.publicKeys.readKey(for: closed.id) == nil)
                // The handed-out key opens the content fetched through the edge; nothing else does.
                _ = try await ContentFetcher(store: client.store, sources: [peer]).fetch(open.id)
                #expect(try ContentReader(store: client.store, readKey: key).readFile(open.id) == bytes)
                #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: client.store, keys: keys).readFile(open.id) }
                // Kept on the edge's disk, bounded.
                let kept = try PublicKeyring(path: PublicKeyring.learntPath(in: edge.configuration.store))
                #expect(kept.key(for: open.id) == key && kept.count == 1)
                let counters = await edge.publicKeys.counters
                #expect(counters.learnt == 1 && counters.refusedPrivate >= 1 && counters.badKeys == 0)
            }
        }
        await client.close()
    }

    @Test func anEdgeRefusesAKeyThatDoesNotOpenTheContent() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        // The origin's keyring holds a wrong key for the content (a damaged keyring, a hostile upstream).
        let open = try put(data(100_000, seed: 3), on: origin, keys: .random(), public: true, keyInKeyring: PublicKeyring.newKey())
        let edge = try await network.node("edge", roles: ["edge"], upstream: [origin.address])
        try await withServing(origin) {
            try await withServing(edge) {
                guard case .unavailable(let why) = await edge.publicKeys.answer(for: open.id) else { Issue.record("a wrong key was accepted"); return }
                #expect(why.contains("does not open"))
                #expect(await edge.publicKeys.heldKeys == 0)
                #expect(await edge.publicKeys.counters.badKeys == 1)
            }
        }
    }

    @Test func purgeDropsTheContentOnTheEdgeAndTheEdgesBelow() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let content = try network.publish(on: origin, bytes: 600_000, seed: 5)
        let edge1 = try await network.node("edge-1", roles: ["edge"], upstream: [origin.address])
        // edge-2 below edge-1, and the origin as its second upstream.
        let edge2 = try await network.node("edge-2", roles: ["edge"], upstream: [edge1.address, origin.address])
        let client = try await network.node("client", roles: ["client"])
        try await withServing(origin) {
            try await withServing(edge1) {
                try await withServing(edge2) {
                    let viaEdge2 = try await client.peers.client(for: edge2.address)
                    try await fetch(content.id, into: client.store, via: viaEdge2)
                    // edge-2 dialled edge-1 (its health probes, its fills) and subscribed to its purges.
                    try await eventually(within: 20) { await edge1.purges.subscriberCount == 1 }
                    let held1 = try edge1.store.stats().chunks, held2 = try edge2.store.stats().chunks
                    #expect(held1 > 0 && held2 > 0)

                    let viaEdge1 = try await client.peers.client(for: edge1.address)
                    let totals = try await viaEdge1.purge(content.id, purgeID: 42)
                    #expect(totals.localChunks == UInt64(held1) && totals.localBytes > 0)
                    #expect(totals.edges == 1 && totals.belowChunks == UInt64(held2) && totals.unanswered == 0)
                    #expect(try edge1.store.stats().chunks == 0 && edge2.store.stats().chunks == 0)
                    #expect(try !edge1.store.contains(content.id.manifest))
                    // The same purge again does nothing (a loop or a second upstream).
                    #expect(try await viaEdge1.purge(content.id, purgeID: 42) == ContentAccessMessage.PurgeTotals())

                    // Refill, then purge from the origin: it keeps its store and reaches both tiers.
                    let again = try await network.node("client-2", roles: ["client"])
                    let peer = try await again.peers.client(for: edge2.address)
                    try await fetch(content.id, into: again.store, via: peer)
                    try await eventually(within: 20) { await origin.purges.subscriberCount == 2 }
                    let viaOrigin = try await client.peers.client(for: origin.address)
                    let fromOrigin = try await viaOrigin.purge(content.id)
                    // edge-1 and edge-2 directly, and edge-2 again through edge-1 (a repeat: nothing).
                    #expect(fromOrigin.localChunks == 0 && fromOrigin.edges == 3 && fromOrigin.belowChunks > 0 && fromOrigin.unanswered == 0)
                    #expect(try origin.store.contains(content.id.manifest))
                    #expect(try ContentReader(store: origin.store, keys: content.keys).readFile(content.id) == content.bytes)
                    await again.close()
                }
            }
        }
        await client.close()
    }
}
