import Foundation
import Testing
@testable import STOQContent

/// `put` of a directory goes through the cross-file pipeline (ContentPublisher+Pipeline.swift): many
/// small files prepared on worker threads, written and recorded in walk order.
@Suite struct PipelinedPutTests {
    /// A tree of many small files (and one over the pipeline's whole-file limit), with repeated files
    /// and a block shared by many files, a link, an empty file and nested directories.
    static func makeTree() throws -> (path: String, files: Int, shared: [UInt8]) {
        let src = tempDir("many-small")
        var rng = SeededRNG(seed: 16)
        let shared = rng.bytes(12_000)
        var files = 0
        for d in 0..<6 {
            let dir = src + "/d\(d)" + (d % 2 == 0 ? "/inner" : "")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for f in 0..<70 {
                let bytes: [UInt8]
                switch f % 5 {
                case 0: bytes = Array("the same small file\n".utf8)         // repeated across the tree
                case 1: bytes = textLike(Int(rng.next() % 30_000), seed: rng.next())
                case 2: bytes = rng.bytes(Int(rng.next() % 5_000)) + shared  // a block shared across files
                case 3: bytes = rng.bytes(Int(rng.next() % 200))
                default: bytes = textLike(25_000, seed: UInt64(f))            // the same content in every d
                }
                try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/f\(f).\(f % 2 == 0 ? "txt" : "bin")"))
                files += 1
            }
        }
        try Data().write(to: URL(fileURLWithPath: src + "/empty"))
        try Data(rng.bytes(Int(ContentPublisher.pipelineFileLimit) + 300_000)).write(to: URL(fileURLWithPath: src + "/d1/large.bin"))
        try FileManager.default.createSymbolicLink(atPath: src + "/link", withDestinationPath: "d1/f1.bin")
        return (src, files + 2, shared)
    }

    @Test(arguments: Backend.allCases)
    func manySmallFilesRoundTripAndDedupAcrossFiles(backend: Backend) throws {
        let (src, files, _) = try Self.makeTree()
        let store = try backend.make()
        let keys = PublisherKeys.random()
        let pub = ContentPublisher(store: store, keys: keys)
        let r = try pub.put(path: src)
        #expect(r.files == files && r.links == 1 && r.skipped.isEmpty)
        #expect(r.newChunks + r.reusedChunks == r.chunks)
        // 6 × 14 copies of "the same small file" and 6 copies of each 25 kB text: one stored each.
        #expect(r.reusedChunks >= 6 * 14 - 1 + 5 * 14, "dedup across files: \(r)")
        #expect(r.dedupRatio > 0.1, "\(r.dedupRatio)")
        // Byte-identical restore.
        let out = tempDir("many-small-out") + "/t"
        let rr = try ContentReader(store: store, keys: keys).restore(r.id, to: out)
        #expect(rr.files == files && rr.links == 1)
        let enumerator = try #require(FileManager.default.enumerator(atPath: src))
        var compared = 0
        while let rel = enumerator.nextObject() as? String {
            let info = try Posix.info(src + "/" + rel)
            guard info.isRegular else { continue }
            #expect(FileManager.default.contents(atPath: out + "/" + rel) == FileManager.default.contents(atPath: src + "/" + rel), "\(rel)")
            compared += 1
        }
        #expect(compared == files)
        #expect(try Posix.readLink(out + "/link") == "d1/f1.bin")
        // A file's id inside the tree is the one a put of that file alone gives (same manifest bytes).
        let alone = try pub.put(path: src + "/d1/f1.bin").id
        let alone2 = try pub.put(path: src + "/d1/large.bin").id
        guard case .directory(let top) = try ContentReader(store: store, keys: keys).manifest(r.id),
              let d1 = top.entries.first(where: { $0.name == "d1" }),
              case .directory(let d1m) = try ContentReader(store: store, keys: keys).manifest(d1.id) else {
            Issue.record("no d1 directory"); return
        }
        #expect(d1m.entries.first { $0.name == "f1.bin" }?.id == alone)
        #expect(d1m.entries.first { $0.name == "large.bin" }?.id == alone2)
        // Putting the tree again writes nothing and gives the same id.
        let again = try pub.put(path: src)
        #expect(again.id == r.id && again.newChunks == 0 && again.storedBytes == 0, "\(again)")
        if let disk = store as? DiskChunkStore { #expect(try disk.verify(repair: false).isClean) }
    }

    @Test func sealedTreeRoundTrips() throws {
        let (src, files, _) = try Self.makeTree()
        let store = try Backend.packs.make()
        let key = PublicKeyring.newKey()
        let r = try ContentPublisher(store: store, keys: .random()).putSealed(path: src, contentKey: key)
        #expect(r.files == files)
        let out = tempDir("many-small-sealed") + "/t"
        _ = try ContentReader(store: store, readKey: key).restore(r.id, to: out)
        #expect(FileManager.default.contents(atPath: out + "/d4/inner/f7.bin") == FileManager.default.contents(atPath: src + "/d4/inner/f7.bin"))
        #expect(FileManager.default.contents(atPath: out + "/d1/large.bin") == FileManager.default.contents(atPath: src + "/d1/large.bin"))
    }
}
