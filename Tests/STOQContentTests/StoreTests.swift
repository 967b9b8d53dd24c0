import Foundation
import Testing
@testable import STOQContent

/// Each scenario runs against both backends.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory, disk, packs
    var testDescription: String { rawValue }
    func make() throws -> any ChunkStore {
        switch self {
        case .memory: return MemoryChunkStore()
        case .disk: return try DiskChunkStore(directory: tempDir("store"), format: .files)
        // Small packs, so the scenarios cross pack boundaries.
        case .packs: return try DiskChunkStore(directory: tempDir("store"), format: .packs, packTarget: 64 << 10)
        }
    }
}

@Suite struct StoreTests {
    @Test(arguments: Backend.allCases)
    func roundTripFilesWithTreesAndDedup(backend: Backend) throws {
        let store = try backend.make()
        let keys = PublisherKeys.random()
        let pub = ContentPublisher(store: store, keys: keys, fanout: 4)
        let v1 = textLike(600_000, seed: 11)
        var v2 = v1
        v2.replaceSubrange(300_000..<300_010, with: Array("EDITED!!!!".utf8))
        v2 += textLike(20_000, seed: 12)
        let r1 = try pub.put(bytes: v1, name: "v1")
        let r2 = try pub.put(bytes: v2, name: "v2")
        #expect(r1.newChunks == r1.chunks - r1.reusedChunks)
        #expect(r2.dedupRatio > 0.8, "dedup across versions \(r2.dedupRatio)")
        let reader = ContentReader(store: store, keys: keys)
        #expect(try reader.readFile(r1.id) == v1)
        #expect(try reader.readFile(r2.id) == v2)
        guard case .file(let root) = try reader.manifest(r1.id) else { Issue.record("not a file"); return }
        #expect(root.kind == .node, "fanout 4 forces a tree")
        // Re-put: nothing new.
        let r3 = try pub.put(bytes: v1, name: "v1 again")
        #expect(r3.id == r1.id && r3.newChunks == 0 && r3.storedBytes == 0)
        // Empty file.
        let e = try pub.put(bytes: [], name: "empty")
        #expect(try reader.readFile(e.id) == [])
        // Another publisher cannot read the key table.
        #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: store, keys: .random()).readFile(r1.id) }
    }

    @Test(arguments: Backend.allCases)
    func pinsAndGC(backend: Backend) throws {
        let store = try backend.make()
        let keys = PublisherKeys.random()
        let pub = ContentPublisher(store: store, keys: keys)
        let a = try pub.put(bytes: textLike(200_000, seed: 1), name: "a")
        let b = try pub.put(bytes: textLike(200_000, seed: 2), name: "b")
        #expect(try store.pins().count == 2)
        #expect(try store.gc().removedChunks == 0)
        try store.unpin(a.id)
        #expect(throws: ContentError(.notFound, "")) { try store.unpin(a.id) }
        let report = try store.gc()
        #expect(report.removedChunks > 0)
        #expect(throws: ContentError(.notFound, "")) { try store.read(a.id.manifest) }
        #expect(try ContentReader(store: store, keys: keys).readFile(b.id) == textLike(200_000, seed: 2))
        #expect(try store.verify(repair: false).isClean)
        // Unreferenced chunks go too.
        _ = try store.put([1, 2, 3])
        #expect(try store.gc().removedChunks == 1)
    }

    @Test(arguments: Backend.allCases)
    func readsVerifyIDs(backend: Backend) throws {
        let store = try backend.make()
        let keys = PublisherKeys.random()
        let r = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(100_000, seed: 4), name: "x")
        guard case .file(let m) = try ContentReader(store: store, keys: keys).manifest(r.id) else { return }
        let victim = m.entries[0].id
        switch store {
        case let mem as MemoryChunkStore: mem.corrupt(victim, with: [0, 1, 2])
        case let disk as DiskChunkStore:
            if case .record(let n, let offset, _) = try disk.place(of: victim) {
                try flipByte(disk.directory + "/packs/" + PackSet.name(n), at: offset + Int64(PackSet.recordHeader) + 5)
                break
            }
            let path = disk.path(of: victim)
            var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[5] ^= 0x55
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        default: break
        }
        #expect(throws: ContentError(.idMismatch, "")) { try store.read(victim) }
        #expect(throws: ContentError(.idMismatch, "")) { try ContentReader(store: store, keys: keys).readFile(r.id) }
        let v = try store.verify(repair: false)
        #expect(v.damaged == [victim])
        #expect(v.brokenPins == [r.id])
        let fixed = try store.verify(repair: true)
        #expect(fixed.repaired)
        // The damaged chunk is gone; verify keeps reporting the pin as broken until it is put again.
        let after = try store.verify(repair: false)
        #expect(after.isConsistent && after.missing == [victim] && after.brokenPins == [r.id])
        // Putting the content again restores it.
        _ = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(100_000, seed: 4), name: "x")
        #expect(try ContentReader(store: store, keys: keys).readFile(r.id) == textLike(100_000, seed: 4))
        #expect(try store.verify(repair: false).isClean)
    }

    @Test func diskOrphansAndTempFiles() throws {
        let dir = tempDir("store")
        let store = try DiskChunkStore(directory: dir, format: .files)
        let bytes: [UInt8] = Array(repeating: 9, count: 100)
        let id = ChunkID.of(bytes)
        try store.writeChunk(id, bytes) // written, never committed: an orphan
        _ = FileManager.default.createFile(atPath: dir + "/chunks/.tmp-123-456", contents: Data([1]))
        let v = try store.verify(repair: false)
        #expect(v.orphaned == [id] && v.tempFiles == 1)
        let repaired = try store.verify(repair: true)
        #expect(try store.verify(repair: false).isClean)
        #expect(!FileManager.default.fileExists(atPath: store.path(of: id)))
        // Moved to the quarantine at the same relative path, not deleted.
        let q = try #require(repaired.quarantine)
        #expect(repaired.quarantinedFiles == 2 && q.hasPrefix(dir + "/quarantine/"))
        #expect(FileManager.default.contents(atPath: q + "/" + store.path(of: id).dropFirst(dir.count + 1)) == Data(bytes))
        #expect(FileManager.default.fileExists(atPath: q + "/chunks/.tmp-123-456"))
    }

    @Test(arguments: StoreFormat.allCases)
    func injectedFullDiskLeavesStoreConsistent(_ format: StoreFormat) throws {
        let store = try DiskChunkStore(directory: tempDir("store"), format: format)
        let keys = PublisherKeys.random()
        let pub = ContentPublisher(store: store, keys: keys)
        let kept = try pub.put(bytes: textLike(100_000, seed: 1), name: "kept")
        store.failWritesAfterBytes = 50_000
        var rng = SeededRNG(seed: 3)
        #expect(throws: ContentError(.diskFull, "")) { try pub.put(bytes: rng.bytes(400_000), name: "too big") }
        store.failWritesAfterBytes = nil
        #expect(try ContentReader(store: store, keys: keys).readFile(kept.id) == textLike(100_000, seed: 1))
        #expect(try store.pins().map(\.name) == ["kept"])
        let v = try store.verify(repair: true)
        #expect(v.damaged.isEmpty && v.missing.isEmpty)
        #expect(try store.verify(repair: false).isClean)
    }

    /// A put that fills a real 2 MiB tmpfs fails with `.diskFull`, and the store reopened on the still
    /// full disk (as the next command would) repairs without needing space: chunk files go to the
    /// quarantine by rename; pack records the failed put left are cut by a truncate when it opens.
    @Test(arguments: StoreFormat.allCases)
    func realFullDiskOnTmpfs(_ format: StoreFormat) throws {
        let dir = tempDir("tmpfs")
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", dir]) == 0 else {
            print("realFullDiskOnTmpfs: skipped (mount -t tmpfs not permitted here)")
            return
        }
        defer { _ = run("/bin/umount", [dir]) }
        let keys = PublisherKeys.random()
        let kept: ContentID
        do {
            let store = try DiskChunkStore(directory: dir + "/s", format: format)
            let pub = ContentPublisher(store: store, keys: keys)
            kept = try pub.put(bytes: textLike(100_000, seed: 1), name: "kept").id
            var rng = SeededRNG(seed: 4)
            do {
                _ = try pub.put(bytes: rng.bytes(4 << 20), name: "too big")
                Issue.record("a 4 MiB put fit in a 2 MiB tmpfs")
            } catch let e as ContentError {
                #expect(e.code == .diskFull, "\(e)")
            }
            #expect(try ContentReader(store: store, keys: keys).readFile(kept) == textLike(100_000, seed: 1))
        }
        let store = try DiskChunkStore(directory: dir + "/s")
        #expect(store.format == format)
        if format == .packs { #expect(store.droppedTornBytes > 0) }
        let v = try store.verify(repair: true)
        #expect(v.damaged.isEmpty && v.missing.isEmpty && v.brokenPins.isEmpty)
        if format == .packs { #expect(v.orphaned.isEmpty && v.quarantine == nil, "\(v)") }
        #expect(try store.verify(repair: false).isClean)
        #expect(try ContentReader(store: store, keys: keys).readFile(kept) == textLike(100_000, seed: 1))
    }

    @Test func directoriesRestoreWithModesAndRefuseEscapes() throws {
        let src = tempDir("src")
        try FileManager.default.createDirectory(atPath: src + "/sub/deeper", withIntermediateDirectories: true)
        try Data(textLike(70_000, seed: 1)).write(to: URL(fileURLWithPath: src + "/a.txt"))
        try Data([0, 1, 2]).write(to: URL(fileURLWithPath: src + "/sub/bin"))
        try Data().write(to: URL(fileURLWithPath: src + "/sub/deeper/empty"))
        chmod(src + "/sub/bin", 0o755)
        chmod(src + "/a.txt", 0o600)
        let store = try DiskChunkStore(directory: tempDir("store"), format: .files)
        let keys = PublisherKeys.random()
        let r = try ContentPublisher(store: store, keys: keys).put(path: src)
        #expect(r.files == 3)
        let out = tempDir("out") + "/restored"
        let reader = ContentReader(store: store, keys: keys)
        let rr = try reader.restore(r.id, to: out)
        #expect(rr.files == 3 && rr.directories == 3)
        #expect(FileManager.default.contents(atPath: out + "/a.txt") == Data(textLike(70_000, seed: 1)))
        #expect(FileManager.default.contents(atPath: out + "/sub/bin") == Data([0, 1, 2]))
        #expect(try Posix.info(out + "/sub/bin").mode == 0o755)
        #expect(try Posix.info(out + "/a.txt").mode == 0o600)
        // A forged directory manifest naming "../escape" is refused, nothing written outside.
        let good = try DirectoryManifest(entries: [.init(name: "..xescape", mode: 0o644, kind: .file, id: r.id, size: 1)])
        var bytes = good.encode()
        let nameAt = 4 + 1 + 4 + 32 + 2
        bytes.replaceSubrange(nameAt..<(nameAt + 9), with: Array("../escape".utf8))
        let forged = try store.put(bytes)
        let out2 = tempDir("out2") + "/x"
        #expect(throws: ContentError.self) { try reader.restore(ContentID(forged), to: out2) }
        #expect(!FileManager.default.fileExists(atPath: Posix.parent(out2) + "/escape"))
        // A symlink in the way is not followed.
        let out3 = tempDir("out3")
        try FileManager.default.createSymbolicLink(atPath: out3 + "/link", withDestinationPath: "/tmp")
        #expect(throws: ContentError(.pathEscape, "")) { try reader.restore(r.id, to: out3 + "/link") }
    }

    @Test func linkEntriesAreRestoredAsWrittenAndNeverEscapeByName() throws {
        let store = try DiskChunkStore(directory: tempDir("store"), format: .files)
        let keys = PublisherKeys.random()
        let reader = ContentReader(store: store, keys: keys)
        // A link whose target points outside the output directory is restored as written, not followed.
        let tree = try DirectoryManifest(entries: [.init(name: "out", linkTo: "../../../etc"), .init(name: "abs", linkTo: "/")])
        let id = try store.put(tree.encode())
        let dest = tempDir("links") + "/restored"
        let rr = try reader.restore(ContentID(id), to: dest)
        #expect(rr.links == 2 && rr.files == 0)
        #expect(try Posix.readLink(dest + "/out") == "../../../etc" && Posix.readLink(dest + "/abs") == "/")
        // Restoring again over the same links is fine; a link over an existing directory is refused.
        _ = try reader.restore(ContentID(id), to: dest)
        try FileManager.default.removeItem(atPath: dest + "/abs")
        try FileManager.default.createDirectory(atPath: dest + "/abs", withIntermediateDirectories: false)
        #expect(throws: ContentError(.pathEscape, "")) { try reader.restore(ContentID(id), to: dest) }
        // A forged link entry named "../escape" is refused before anything is written outside.
        let good = try DirectoryManifest(entries: [.init(name: "..xescape", linkTo: "/tmp")])
        var bytes = good.encode()
        let nameAt = 4 + 1 + 4 + 32 + 2
        bytes.replaceSubrange(nameAt..<(nameAt + 9), with: Array("../escape".utf8))
        let forged = try store.put(bytes)
        let parent = tempDir("links-forged")
        #expect(throws: ContentError.self) { try reader.restore(ContentID(forged), to: parent + "/x") }
        #expect(!Posix.exists(parent + "/escape"))
        // A name with a "/" inside is refused the same way.
        let slash = try DirectoryManifest(entries: [.init(name: "aXb", linkTo: "/tmp")])
        var sb = slash.encode()
        sb[nameAt + 1] = UInt8(ascii: "/")
        let forged2 = try store.put(sb)
        #expect(throws: ContentError.self) { try reader.restore(ContentID(forged2), to: parent + "/y") }
        #expect(!Posix.exists(parent + "/y/a"))
    }

    @Test func indexRebuiltInProcessFromChunkFiles() throws {
        let dir = tempDir("store-rebuild")
        let keys = PublisherKeys.random()
        let src = tempDir("src-rebuild")
        try FileManager.default.createDirectory(atPath: src + "/d", withIntermediateDirectories: true)
        try Data(textLike(40_000, seed: 5)).write(to: URL(fileURLWithPath: src + "/d/x.txt"))
        try FileManager.default.createSymbolicLink(atPath: src + "/l", withDestinationPath: "d/x.txt")
        let id: ContentID
        do {
            let store = try DiskChunkStore(directory: dir, format: .files)
            #expect(store.rebuilt == nil)
            id = try ContentPublisher(store: store, keys: keys, fanout: 2).put(path: src).id
        }
        // A new store is not a rebuild; a store whose index vanished is.
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: dir + "/meta.sqlite" + s) }
        let store = try DiskChunkStore(directory: dir, format: .files)
        let r = try #require(store.rebuilt)
        #expect(r.problem == .missing && r.pins == [id] && r.manifests >= 2 && r.quarantine == nil, "\(r)")
        #expect(try store.verify(repair: false).isClean)
        let out = tempDir("out-rebuild") + "/o"
        _ = try ContentReader(store: store, keys: keys).restore(id, to: out)
        #expect(FileManager.default.contents(atPath: out + "/d/x.txt") == Data(textLike(40_000, seed: 5)))
        #expect(try Posix.readLink(out + "/l") == "d/x.txt")
        #expect(try store.gc().removedChunks == 0)
        #expect(try DiskChunkStore(directory: tempDir("fresh")).rebuilt == nil)
    }
}

@discardableResult
func run(_ exe: String, _ args: [String]) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    p.standardError = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    do { try p.run() } catch { return -1 }
    p.waitUntilExit()
    return p.terminationStatus
}
