import Foundation
import STOQContent
import Testing
@testable import STOQExchange

/// A tree with symbolic links and an empty directory fetched through ``ContentFetcher`` (the path
/// `stoq get --peers` takes) from an in-memory source: the plan asks for no chunk for a link, and the
/// fetched store restores the links as written.
@Suite struct ContentPlanLinkTests {
    /// Serves chunks from a store, counting what is asked.
    final class StoreSource: ChunkSource, @unchecked Sendable {
        // `@unchecked Sendable`: `asked` is only touched while holding `lock`.
        let store: any ChunkStore
        let lock = NSLock()
        var asked = Set<ChunkID>()
        init(_ store: any ChunkStore) { self.store = store }
        var name: String { "memory" }
        func fetchChunk(_ id: ChunkID, progress: (@Sendable (Int) -> Void)?) async throws -> [UInt8] {
            lock.withLock { _ = asked.insert(id) }
            return try store.read(id)
        }
    }

    @Test func linksNeedNoChunkAndSurviveAFetch() async throws {
        let base = NSTemporaryDirectory() + "/plan-links-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let src = base + "/src"
        try FileManager.default.createDirectory(atPath: src + "/empty", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: src + "/a.txt"))
        try FileManager.default.createSymbolicLink(atPath: src + "/rel", withDestinationPath: "a.txt")
        try FileManager.default.createSymbolicLink(atPath: src + "/abs", withDestinationPath: "/nonexistent/target")
        let keys = PublisherKeys.random()
        let origin = MemoryChunkStore()
        let id = try ContentPublisher(store: origin, keys: keys).put(path: src).id

        let plan = try await ContentPlan.resolve(id) { try origin.read($0) }
        let linkIDs = Set(["a.txt", "/nonexistent/target"].map { ChunkID.of(Array($0.utf8)) })
        #expect(plan.batch.edges.allSatisfy { !linkIDs.contains($0.child) })
        #expect(plan.batch.chunks.allSatisfy { !linkIDs.contains($0.id) })

        let source = StoreSource(origin)
        let client = MemoryChunkStore()
        _ = try await ContentFetcher(store: client, sources: [source]).fetch(id)
        #expect(source.lock.withLock { source.asked.isDisjoint(with: linkIDs) })
        let out = base + "/out"
        let r = try ContentReader(store: client, keys: keys).restore(id, to: out)
        #expect(r.links == 2 && r.files == 1 && r.directories == 2)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/rel") == "a.txt")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/abs") == "/nonexistent/target")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/empty").isEmpty)
    }
}
