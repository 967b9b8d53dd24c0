import Foundation
import STOQContent
@testable import STOQNode
import Testing

/// The origin's side of a sealed upload (offer flag bit 1), without a network: the coordinator
/// stores chunks as sent, checked against their ids, and pins the index it was offered.
@Suite struct SealedUploadTests {
    private func sealed(_ bytes: [UInt8]) throws -> (store: MemoryChunkStore, id: ContentID, index: [UInt8], key: [UInt8]) {
        let store = MemoryChunkStore()
        let key = PublicKeyring.newKey()
        let report = try ContentPublisher(store: store, keys: .random(), fanout: 2).putSealed(bytes: bytes, contentKey: key, contentType: "text/plain")
        return (store, report.id, try store.read(report.id.manifest), key)
    }

    @Test func anOriginStoresAndPinsASealedContentItCannotOpen() async throws {
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let local = try sealed(bytes)
        let originStore = MemoryChunkStore()
        let origin = UploadCoordinator(store: originStore, directory: NSTemporaryDirectory(), publishers: [])
        let owner = ObjectIdentifier(originStore)
        let index = try SealedIndex.decode(local.index)
        let (id, needed) = try await origin.offerSealed(owner: owner, indexBytes: local.index, name: "sealed content")
        #expect(needed == Array(index.entries.indices))
        // A chunk whose bytes are not its entry's is refused and not stored.
        let first = index.entries[needed[0]]
        var tampered = try local.store.read(first.id)
        tampered[0] ^= 1
        _ = try await origin.beginSealedChunk(id: id, owner: owner, index: needed[0], length: tampered.count)
        await #expect(throws: UploadRefusal.self) { _ = try await origin.endSealedChunk(id: id, index: needed[0], bytes: tampered) }
        #expect(try !originStore.contains(first.id))
        // The commit waits for every chunk.
        await #expect(throws: UploadRefusal.self) { _ = try await origin.commitSealed(id: id, owner: owner) }
        for i in needed {
            let chunk = try local.store.read(index.entries[i].id)
            _ = try await origin.beginSealedChunk(id: id, owner: owner, index: i, length: chunk.count)
            _ = try await origin.endSealedChunk(id: id, index: i, bytes: chunk)
        }
        let committed = try await origin.commitSealed(id: id, owner: owner)
        #expect(committed.id == local.id)
        #expect(try originStore.pins().map(\.id) == [local.id])
        // The origin's copy opens with the content key (which it never held), to the same bytes.
        #expect(try ContentReader(store: originStore, readKey: local.key).readFile(local.id) == bytes)
        // Offered again: nothing is needed.
        #expect(try await origin.offerSealed(owner: owner, indexBytes: local.index, name: "sealed content").needed.isEmpty)
    }

    @Test func anOfferThatIsNotARootSealedIndexIsRefused() async throws {
        let origin = UploadCoordinator(store: MemoryChunkStore(), directory: NSTemporaryDirectory(), publishers: [])
        let owner = ObjectIdentifier(origin)
        await #expect(throws: UploadRefusal.self) { _ = try await origin.offerSealed(owner: owner, indexBytes: Array("STQM not an index".utf8), name: "x") }
        let inner = SealedIndex(entries: [.init(kind: .chunk, id: ChunkID.of([1]), size: 1)], sealedRoot: []).encode()
        await #expect(throws: UploadRefusal.self) { _ = try await origin.offerSealed(owner: owner, indexBytes: inner, name: "x") }
    }
}
