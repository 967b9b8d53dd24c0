import Foundation
import Testing
@testable import STOQContent

@Suite struct EvictTests {
    /// A cache's evictions remove unreferenced chunks and never touch what a pinned manifest refers to.
    @Test(arguments: ["memory", "disk", "packs"])
    func evictRemovesOnlyUnreferencedChunks(backend: String) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-evict-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store: any ChunkStore = backend == "memory" ? MemoryChunkStore() : try DiskChunkStore(directory: dir, format: backend == "packs" ? .packs : nil)
        let keys = PublisherKeys.random()
        let report = try ContentPublisher(store: store, keys: keys).put(bytes: Array(repeating: 7, count: 300_000), name: "pinned")
        let loose = try store.put(Array("a cached chunk nobody refers to".utf8))
        let referenced = try store.referenceCount(loose)
        #expect(referenced == 0)
        let pinnedManifest = report.id.manifest
        let freed = try store.evict([loose, pinnedManifest])
        #expect(freed > 0)
        #expect(try !store.contains(loose))
        #expect(try store.contains(pinnedManifest))
        #expect(try ContentReader(store: store, keys: keys).readFile(report.id) == Array(repeating: 7, count: 300_000))
        #expect(try store.verify(repair: false).isClean)
    }
}
