import STOQContent
@testable import STOQHTTP
import XCTest

final class ManifestCacheTests: XCTestCase {
    func testBoundedByBytesOldestOutFirst() throws {
        let cache = ManifestCache(capacityBytes: 1000)
        let manifest = AnyManifest.directory(try DirectoryManifest(entries: []))
        let ids = (0..<5).map { ChunkID.of([UInt8($0)]) }
        for id in ids { cache.keep(id, manifest, size: 240) }
        XCTAssertNil(cache.manifest(ids[0]), "the oldest entry beyond 1000 bytes stays")
        XCTAssertNotNil(cache.manifest(ids[4]))
        cache.keep(ChunkID.of([9]), manifest, size: 251)  // more than a quarter of the capacity: not kept
        XCTAssertNil(cache.manifest(ChunkID.of([9])))
    }

    func testARepeatedRequestReadsNoManifestAgain() async throws {
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let id = try ContentPublisher(store: store, keys: keys, fanout: 3, workers: 1).put(bytes: pseudoRandomBytes(200_000, seed: 3), name: "x.bin").id
        let source = MemorySource(store: store, key: keys.readKey)
        let responder = ContentResponder(source: source)
        _ = try await drive(responder, "/stoq/\(id)")
        let first = source.requested.count
        let again = try await drive(responder, "/stoq/\(id)")
        XCTAssertEqual(again.status, 200)
        let manifestIDs = Set(source.requested.prefix(first)).filter { (try? AnyManifest.decode(store.read($0))) != nil }
        XCTAssertGreaterThan(manifestIDs.count, 1, "the fixture needs a manifest tree")
        // The second GET asked for data chunks only: every manifest came from the cache.
        XCTAssertTrue(Set(source.requested.dropFirst(first)).isDisjoint(with: manifestIDs))
        XCTAssertGreaterThan(source.requested.count, first)
        XCTAssertFalse(source.requested.dropFirst(first).contains(id.manifest))
    }
}
