import Foundation
import Testing
@testable import STOQContent

@Suite struct PublicKeyringTests {
    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-keyring-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aPublicContentOpensWithItsOwnKeyOnly() throws {
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let publisher = ContentPublisher(store: store, keys: keys)
        let text = textLike(120_000, seed: 21)
        let key = PublicKeyring.newKey()
        let open = try publisher.put(bytes: text, name: "public", readKey: key)
        let closed = try publisher.put(bytes: text, name: "private")
        #expect(open.id != closed.id, "the key tables differ, so the manifests and ids do")
        #expect(open.newChunks == 0 || closed.newChunks == 0, "the data chunks are shared (deduplicated)")
        #expect(try ContentReader(store: store, readKey: key).readFile(open.id) == text)
        #expect(try ContentReader(store: store, keys: keys).readFile(closed.id) == text)
        // The content key opens nothing else, and the publisher's read key does not open it.
        #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: store, readKey: key).readFile(closed.id) }
        #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: store, keys: keys).readFile(open.id) }
        #expect(throws: ContentError(.invalidArgument, "")) { try publisher.put(bytes: text, readKey: [1, 2, 3]) }
    }

    @Test func keysPersistAndAppendsFromAnotherProcessAreSeen() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = PublicKeyring.publisherPath(in: dir)
        let ring = try PublicKeyring(path: path)
        #expect(ring.count == 0)
        let a = ContentID(ChunkID.of([1])), b = ContentID(ChunkID.of([2]))
        let ka = PublicKeyring.newKey(), kb = PublicKeyring.newKey()
        try ring.add(a, key: ka)
        // Another writer (a `stoq put --public` while the node runs) appends: a miss reads it.
        let other = try PublicKeyring(path: path)
        #expect(other.key(for: a) == ka)
        try other.add(b, key: kb)
        #expect(ring.key(for: b) == kb)
        #expect(throws: ContentError(.invalidArgument, "")) { try ring.add(a, key: [0]) }
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // A torn record at the end (a crash during an append) is ignored.
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data([1, 2, 3]))
        handle.closeFile()
        let reopened = try PublicKeyring(path: path)
        #expect(reopened.count == 2 && reopened.key(for: a) == ka && reopened.key(for: b) == kb)
    }

    @Test func aBoundedKeyringDropsTheOldestAndCompactsItsFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = PublicKeyring.learntPath(in: dir)
        let ring = try PublicKeyring(path: path, capacity: 3)
        let ids = (0..<10).map { ContentID(ChunkID.of([UInt8($0)])) }
        for id in ids { try ring.add(id, key: PublicKeyring.newKey()) }
        #expect(ring.count == 3)
        #expect(ring.contents == Array(ids.suffix(3)))
        #expect(ring.key(for: ids[0]) == nil)
        let size = try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size <= 6 * PublicKeyring.recordSize, "the file is compacted, not grown without bound")
        let reopened = try PublicKeyring(path: path, capacity: 3)
        #expect(reopened.contents == Array(ids.suffix(3)))
    }
}
