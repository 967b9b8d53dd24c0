import Foundation
import STOQContent
import Testing
@testable import STOQExchange

/// Issue 15 item 2: what a node derives from a sealed content (its HAVE order, its store records)
/// is the clear index alone, inner indexes expanded in place; a misplaced index is refused.
@Suite struct SealedContentPlanTests {
    @Test func aNodePlansASealedContentFromItsIndexAlone() async throws {
        let store = MemoryChunkStore()
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        let key = PublicKeyring.newKey()
        let report = try ContentPublisher(store: store, keys: .random(), fanout: 2).putSealed(bytes: bytes, contentKey: key, contentType: "text/x-secret")
        let index = try SealedIndex.decode(store.read(report.id.manifest))
        let plan = try await ContentPlan.resolve(report.id) { id in try store.read(id) }
        #expect(plan.dataChunks.map(\.id) == index.entries.map(\.id), "HAVE order: the index's entries")
        #expect(plan.manifestChunks == 1)
        #expect(plan.batch.manifests.allSatisfy { $0.contentType.isEmpty && $0.kind == "sealed" })
        #expect(try ContentReader(store: store, readKey: key).readFile(report.id) == bytes)
    }

    @Test func innerIndexesExpandInPlaceAndMisplacedOnesAreRefused() async throws {
        let store = MemoryChunkStore()
        let chunks = (0..<3).map { i in [UInt8](repeating: UInt8(i), count: 40 + i) }
        for c in chunks { _ = try store.put(c) }
        let inner = SealedIndex(entries: chunks.dropFirst().map { .init(kind: .chunk, id: ChunkID.of($0), size: UInt32($0.count)) }, sealedRoot: [])
        let innerID = try store.put(inner.encode())
        let root = SealedIndex(
            entries: [.init(kind: .chunk, id: ChunkID.of(chunks[0]), size: 40), .init(kind: .index, id: innerID, size: UInt32(inner.encode().count))],
            sealedRoot: [UInt8](repeating: 1, count: 60))
        let rootID = try store.put(root.encode())
        let plan = try await ContentPlan.resolve(ContentID(rootID)) { id in try store.read(id) }
        #expect(plan.dataChunks.map(\.id) == chunks.map { ChunkID.of($0) })
        // An inner index as a root (no sealed root), and a root where an inner index belongs.
        await #expect(throws: NodeError.self) { _ = try await ContentPlan.resolve(ContentID(innerID)) { id in try store.read(id) } }
        let nested = SealedIndex(entries: [.init(kind: .index, id: rootID, size: 100)], sealedRoot: [UInt8](repeating: 2, count: 60))
        let nestedID = try store.put(nested.encode())
        await #expect(throws: NodeError.self) { _ = try await ContentPlan.resolve(ContentID(nestedID)) { id in try store.read(id) } }
    }
}
