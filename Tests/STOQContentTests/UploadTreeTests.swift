import Foundation
import Testing
@testable import STOQContent
import STOQSimulation

/// The uploader's scan, the offer's encoding and the origin's rebuild (issue 13 §1).
@Suite struct UploadTreeTests {
    /// A directory with a text file, a binary file, a nested directory, an empty file and a link.
    func sampleDirectory(seed: UInt64) throws -> String {
        let dir = tempDir("stoq-upload")
        var rng = SeededRNG(seed: seed)
        try Data(textLike(300_000, seed: seed)).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        try Data(rng.bytes(700_000)).write(to: URL(fileURLWithPath: dir + "/blob.bin"))
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try Data(rng.bytes(50_000)).write(to: URL(fileURLWithPath: dir + "/sub/inner.dat"))
        try Data().write(to: URL(fileURLWithPath: dir + "/sub/empty"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "sub/inner.dat")
        return dir
    }

    /// Everything an origin does for an upload, against `store`: the chunks it lacks, each one
    /// verified and stored, then the commit. Returns the report and the chunks sent.
    func upload(_ scan: UploadScan, into publisher: ContentPublisher, name: String, readKey: [UInt8]? = nil) throws -> (PutReport, Int) {
        let needed = try publisher.missing(scan.tree)
        var stored: [StoredUploadChunk] = []
        for i in needed {
            let s = scan.sources[i]
            let bytes = try FileSource(path: s.path).read(at: s.offset, count: s.length)
            stored.append(try publisher.storeUploadedChunk(bytes, as: scan.tree.chunks[i], contentType: scan.tree.chunkTypes[i]))
        }
        try publisher.commitUploaded(stored)
        return (try publisher.putUploaded(scan.tree, name: name, readKey: readKey), needed.count)
    }

    @Test func anUploadedDirectoryIsTheContentALocalPutMakes() throws {
        let dir = try sampleDirectory(seed: 7)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = PublisherKeys.random()
        let local = try ContentPublisher(store: MemoryChunkStore(), keys: keys).put(path: dir)
        let store = MemoryChunkStore()
        let publisher = ContentPublisher(store: store, keys: keys)
        let scan = try UploadTree.scan(path: dir)
        #expect(scan.tree.chunks.count == scan.sources.count)
        #expect(try UploadTree.decode(scan.tree.encode()) == scan.tree)
        let (report, sent) = try upload(scan, into: publisher, name: dir)
        #expect(report.id == local.id, "the same files with the same publisher key give the same content id")
        #expect(sent == Set(scan.tree.chunks.map(\.hash)).count)
        let out = tempDir("stoq-upload-out") + "/restored"
        _ = try ContentReader(store: store, keys: keys).restore(report.id, to: out)
        #expect(FileManager.default.contents(atPath: out + "/notes.txt") == FileManager.default.contents(atPath: dir + "/notes.txt"))
        #expect(FileManager.default.contents(atPath: out + "/sub/inner.dat") == FileManager.default.contents(atPath: dir + "/sub/inner.dat"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/link") == "sub/inner.dat")
        // The same offer again needs nothing.
        #expect(try publisher.missing(scan.tree).isEmpty)
    }

    @Test func anEditedVersionNeedsOnlyItsChangedChunks() throws {
        let dir = tempDir("stoq-upload-edit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SeededRNG(seed: 11)
        var bytes = rng.bytes(4 << 20)
        let path = dir + "/big.bin"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let publisher = ContentPublisher(store: MemoryChunkStore(), keys: .random())
        let (_, first) = try upload(try UploadTree.scan(path: path), into: publisher, name: "v1")
        // Overwrite 64 KiB in the middle and append 100 KiB.
        for i in 2_000_000..<2_065_536 { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) }
        bytes += rng.bytes(100_000)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let scan = try UploadTree.scan(path: path)
        let needed = try publisher.missing(scan.tree)
        let neededBytes = needed.reduce(0) { $0 + scan.tree.chunks[$1].length }
        #expect(first > 200)
        #expect(needed.count < 30, "only the chunks around the edits are new")
        #expect(Double(neededBytes) / Double(scan.tree.bytes) < 0.1)
    }

    @Test func aPublicUploadOpensWithItsOwnKey() throws {
        let dir = tempDir("stoq-upload-public")
        let path = dir + "/a.txt"
        let text = textLike(200_000, seed: 3)
        try Data(text).write(to: URL(fileURLWithPath: path))
        let keys = PublisherKeys.random()
        let store = MemoryChunkStore()
        let key = PublicKeyring.newKey()
        let (report, _) = try upload(try UploadTree.scan(path: path), into: ContentPublisher(store: store, keys: keys), name: "a", readKey: key)
        let local = try ContentPublisher(store: MemoryChunkStore(), keys: keys).put(path: path, readKey: key)
        #expect(report.id == local.id)
        #expect(try ContentReader(store: store, readKey: key).readFile(report.id) == text)
    }

    @Test func theOriginRefusesBytesThatAreNotTheChunkOffered() throws {
        let publisher = ContentPublisher(store: MemoryChunkStore(), keys: .random())
        let bytes = [UInt8](repeating: 7, count: 5000)
        let chunk = UploadChunk(hash: ChunkID.of(bytes), length: bytes.count)
        var other = bytes
        other[10] = 8
        #expect(throws: ContentError(.idMismatch, "")) { try publisher.storeUploadedChunk(other, as: chunk, contentType: "application/octet-stream") }
        #expect(throws: ContentError(.idMismatch, "")) { try publisher.storeUploadedChunk(Array(bytes.prefix(10)), as: chunk, contentType: "application/octet-stream") }
        let ok = try publisher.storeUploadedChunk(bytes, as: chunk, contentType: "application/octet-stream")
        #expect(ok.written)
        // A commit before every chunk is stored is refused.
        let tree = try UploadTree(root: .file(UploadFile(contentType: "application/octet-stream", chunks: [chunk])))
        #expect(throws: ContentError(.notFound, "")) { try publisher.putUploaded(tree, name: "x") }
        try publisher.commitUploaded([ok])
        #expect(try publisher.missing(tree).isEmpty)
        _ = try publisher.putUploaded(tree, name: "x")
    }

    @Test func offersOutOfBoundsAreRefused() throws {
        let h = ChunkID.of([1])
        #expect(throws: ContentError(.invalidArgument, "")) { try UploadTree(root: .file(UploadFile(contentType: "x", chunks: [UploadChunk(hash: h, length: (1 << 20) + 1)]))) }
        #expect(throws: ContentError(.invalidArgument, "")) { try UploadTree(root: .file(UploadFile(contentType: "x", chunks: [UploadChunk(hash: h, length: 0)]))) }
        #expect(throws: ContentError(.invalidName, "")) { try UploadTree(root: .directory([UploadEntry(name: "..", mode: 0o644, node: .link(target: "x"))])) }
        #expect(throws: ContentError(.invalidName, "")) {
            try UploadTree(root: .directory([UploadEntry(name: "a", mode: 0o644, node: .link(target: "x")), UploadEntry(name: "a", mode: 0o644, node: .link(target: "y"))]))
        }
        #expect(throws: ContentError(.invalidArgument, "")) { try UploadTree(root: .link(target: "x")) }
        // A file that claims more chunks than the bytes hold, or more than the bound, fails before any allocation.
        var w: [UInt8] = [0, 0, 1, 0x78, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(throws: ContentError.self) { try UploadTree.decode(w) }
        w = [0, 0, 1, 0x78, 0, 0, 0, 2] + h.bytes + [0, 0, 0, 5]
        #expect(throws: ContentError(.malformed, "")) { try UploadTree.decode(w) }
        // Deep nesting.
        var deep: UploadNode = .file(UploadFile(contentType: "x", chunks: []))
        for _ in 0..<70 { deep = .directory([UploadEntry(name: "d", mode: 0o755, node: deep)]) }
        #expect(throws: ContentError(.tooLarge, "")) { try UploadTree(root: deep) }
        // Random bytes never crash the decoder.
        var rng = SeededRNG(seed: 5)
        for n in 0..<2000 { UploadTree.fuzz(rng.bytes(n % 200)) }
    }
}
