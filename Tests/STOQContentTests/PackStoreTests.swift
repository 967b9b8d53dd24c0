import Foundation
import Testing
@testable import STOQContent

/// Flips one byte of a file in place (a pack is read-only: mode 0444, but the owner may still write
/// through a new descriptor after chmod).
func flipByte(_ path: String, at offset: Int64) throws {
    chmod(path, 0o644)
    let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    try h.seek(toOffset: UInt64(offset))
    let b = try h.read(upToCount: 1)!
    try h.seek(toOffset: UInt64(offset))
    try h.write(contentsOf: Data([b[0] ^ 0x55]))
    try h.close()
    chmod(path, 0o444)
}

/// Appends bytes to a file.
func appendBytes(_ path: String, _ bytes: [UInt8]) throws {
    chmod(path, 0o644)
    let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    try h.seekToEnd()
    try h.write(contentsOf: Data(bytes))
    try h.close()
    chmod(path, 0o444)
}

func files(under dir: String) -> [String] {
    (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).filter {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: dir + "/" + $0, isDirectory: &d) && !d.boolValue
    }
}

/// The pack-file format of the disk store (StoreFormat.packs): torn tails, a lost index, compaction,
/// repairs and the migration of a store of chunk files.
@Suite struct PackStoreTests {
    @Test func chunksGoToPacksNotFiles() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        let store = try DiskChunkStore(directory: dir, format: .packs, packTarget: 256 << 10)
        var rng = SeededRNG(seed: 5)
        let data = rng.bytes(1_000_000)
        let r = try ContentPublisher(store: store, keys: keys).put(bytes: data, name: "x")
        #expect(files(under: dir + "/chunks").isEmpty)
        let packs = files(under: dir + "/packs")
        #expect(packs.count >= 4 && packs.count <= 6, "1 MB in 256 KiB packs: \(packs)")
        #expect(try ContentReader(store: store, keys: keys).readFile(r.id) == data)
        #expect(try store.verify(repair: false).isClean)
        #expect(store.format == .packs)
    }

    @Test func tornTailIsCutOnOpen() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        let id: ContentID
        do {
            let store = try DiskChunkStore(directory: dir, format: .packs)
            id = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(300_000, seed: 1), name: "kept").id
        }
        // A record torn by a crash: its header claims 1000 bytes, 10 made it to the disk.
        let pack = dir + "/packs/" + PackSet.name(1)
        let before = try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int
        try appendBytes(pack, Array("STQR".utf8) + [0, 0, 3, 232] + [UInt8](repeating: 7, count: 42))
        let store = try DiskChunkStore(directory: dir) // a packs/ folder: packs format without asking
        #expect(store.format == .packs)
        #expect(store.droppedTornBytes == 50)
        #expect(try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int == before)
        #expect(try ContentReader(store: store, keys: keys).readFile(id) == textLike(300_000, seed: 1))
        #expect(try store.verify(repair: false).isClean)
        // New writes continue after the cut.
        let more = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(50_000, seed: 2), name: "more")
        #expect(try ContentReader(store: store, keys: keys).readFile(more.id) == textLike(50_000, seed: 2))
    }

    @Test func lostIndexIsRebuiltFromPacks() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        var rng = SeededRNG(seed: 9)
        let data = rng.bytes(400_000)
        let id: ContentID
        do {
            let store = try DiskChunkStore(directory: dir, format: .packs, packTarget: 100 << 10)
            id = try ContentPublisher(store: store, keys: keys).put(bytes: data, name: "x").id
        }
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: dir + "/meta.sqlite" + s) }
        // And a torn tail on top: the rebuild copies it to the quarantine and cuts it.
        let last = try FileManager.default.contentsOfDirectory(atPath: dir + "/packs").sorted().last!
        try appendBytes(dir + "/packs/" + last, Array("STQR".utf8) + [0, 1, 0, 0, 1, 2, 3])
        let store = try DiskChunkStore(directory: dir)
        let rebuilt = try #require(store.rebuilt)
        #expect(rebuilt.problem == .missing && rebuilt.pins == [id] && rebuilt.missing == 0)
        #expect(rebuilt.quarantined == 1)
        #expect(try ContentReader(store: store, keys: keys).readFile(id) == data)
        #expect(try store.verify(repair: false).isClean)
    }

    @Test func gcCompactsPacksAndKeepsLiveData() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        let store = try DiskChunkStore(directory: dir, format: .packs, packTarget: 128 << 10)
        let pub = ContentPublisher(store: store, keys: keys)
        var rng = SeededRNG(seed: 21)
        let a = rng.bytes(600_000), b = rng.bytes(200_000)
        let ra = try pub.put(bytes: a, name: "a")
        let rb = try pub.put(bytes: b, name: "b")
        let packsBefore = try store.footprint()
        try store.unpin(ra.id)
        let report = try store.gc()
        #expect(report.removedChunks > 0 && report.packsCompacted > 0 && report.packBytesReclaimed > 500_000)
        let packsAfter = try store.footprint()
        #expect(packsAfter.packBytes < packsBefore.packBytes - 500_000)
        #expect(try ContentReader(store: store, keys: keys).readFile(rb.id) == b)
        #expect(throws: ContentError(.notFound, "")) { try store.read(ra.id.manifest) }
        #expect(try store.verify(repair: false).isClean)
        // Nothing comes back after a reopen either (dead records are not orphans).
        let again = try store.gc()
        #expect(again.removedChunks == 0)
        #expect(try store.verify(repair: false).isClean)
    }

    @Test func evictedRecordsAreDeadSpaceNotOrphans() throws {
        let dir = tempDir("packs")
        let store = try DiskChunkStore(directory: dir, format: .packs)
        let loose = try store.put(Array("evict me".utf8))
        #expect(try store.evict([loose]) > 0)
        #expect(try store.verify(repair: false).isClean)
        _ = try store.gc()
        #expect(try store.footprint().packs == 0 || (try store.footprint().packBytes) <= PackSet.headerSize)
    }

    @Test func repairQuarantinesOrphanedAndDamagedRecords() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        let store = try DiskChunkStore(directory: dir, format: .packs)
        let r = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(200_000, seed: 3), name: "x")
        // Written, never committed: an orphan record.
        let bytes: [UInt8] = Array(repeating: 9, count: 100)
        let orphan = ChunkID.of(bytes)
        try store.writeChunk(orphan, bytes)
        _ = try store.packSet!.sync()
        store.packSet!.committed([orphan])
        guard case .file(let m) = try ContentReader(store: store, keys: keys).manifest(r.id),
              case .record(let n, let offset, _) = try store.place(of: m.entries[0].id) else { Issue.record("no record"); return }
        let victim = m.entries[0].id
        store.packSet!.forget(n)
        try flipByte(dir + "/packs/" + PackSet.name(n), at: offset + Int64(PackSet.recordHeader) + 3)
        let v = try store.verify(repair: false)
        #expect(v.orphaned == [orphan] && v.damaged == [victim] && v.brokenPins == [r.id])
        let fixed = try store.verify(repair: true)
        let q = try #require(fixed.quarantine)
        #expect(fixed.quarantinedFiles == 2)
        let copies = files(under: q + "/packs")
        #expect(copies.contains { $0.hasSuffix(orphan.hex) } && copies.contains { $0.hasSuffix(victim.hex) })
        #expect(FileManager.default.contents(atPath: q + "/packs/" + copies.first { $0.hasSuffix(orphan.hex) }!) == Data(bytes))
        let after = try store.verify(repair: false)
        #expect(after.isConsistent && after.missing == [victim] && after.orphaned.isEmpty)
        _ = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(200_000, seed: 3), name: "x")
        #expect(try ContentReader(store: store, keys: keys).readFile(r.id) == textLike(200_000, seed: 3))
        #expect(try store.verify(repair: false).isClean)
    }

    @Test func storeOfChunkFilesIsServedThenMigrated() throws {
        let dir = tempDir("packs")
        let keys = PublisherKeys.random()
        let old: ContentID
        do {
            let store = try DiskChunkStore(directory: dir, format: .files)  // the older layout
            #expect(store.format == .files)
            old = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(300_000, seed: 7), name: "old").id
        }
        let oldFiles = files(under: dir + "/chunks").count
        #expect(oldFiles > 5)
        let store = try DiskChunkStore(directory: dir, format: .packs)
        // Served as is: the files are read where they are; new content goes to packs.
        #expect(try ContentReader(store: store, keys: keys).readFile(old) == textLike(300_000, seed: 7))
        let new = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(100_000, seed: 8), name: "new").id
        #expect(files(under: dir + "/chunks").count == oldFiles)
        #expect(try store.verify(repair: false).isClean)
        #expect(try store.migrateToPacks() == oldFiles)
        #expect(files(under: dir + "/chunks").isEmpty)
        #expect(try ContentReader(store: store, keys: keys).readFile(old) == textLike(300_000, seed: 7))
        #expect(try ContentReader(store: store, keys: keys).readFile(new) == textLike(100_000, seed: 8))
        #expect(try store.verify(repair: false).isClean)
        #expect(throws: ContentError(.invalidArgument, "")) { try DiskChunkStore(directory: tempDir("x"), format: .files).migrateToPacks() }
    }

    /// Issue 16: a record hashed less than `verifyInterval` ago is read without hashing (its header is
    /// still checked); past the interval it is hashed again, and the time is kept in the index.
    @Test func readsHashOncePerVerifyInterval() throws {
        let dir = tempDir("packs-verify")
        final class Clock: @unchecked Sendable { var now: Int64 = 1_000_000 }
        let clock = Clock()
        var rng = SeededRNG(seed: 12)
        let bytes = rng.bytes(5000)
        let id = ChunkID.of(bytes)
        let place: ChunkPlace
        do {
            let store = try DiskChunkStore(directory: dir, format: .packs)
            store.clock = { clock.now }
            store.verifyInterval = 100
            try store.writeChunk(id, bytes)
            var b = CommitBatch()
            b.chunks = [(id, bytes.count)]
            try store.commit(b)
            // Hashed when written: reads within the interval trust it.
            #expect(try store.read(id) == bytes)
            #expect(store.readCounts.hashed == 0 && store.readCounts.trusted == 1)
            clock.now += 100
            #expect(try store.read(id) == bytes)
            #expect(try store.read(id) == bytes)
            #expect(store.readCounts.hashed == 1 && store.readCounts.trusted == 2)
            place = try store.place(of: id)
            // A clock set back: a verification time in the future does not count.
            clock.now -= 1000
            _ = try store.read(id)
            #expect(store.readCounts.hashed == 2)
            clock.now += 1000
            _ = try store.read(id)
            #expect(store.readCounts.hashed == 3)
        }
        // The time of the read's hash outlived the process (written when the store closed).
        let store = try DiskChunkStore(directory: dir)
        store.clock = { clock.now }
        store.verifyInterval = 100
        _ = try store.read(id)
        #expect(store.readCounts.trusted == 1 && store.readCounts.hashed == 0)
        guard case .record(let n, let offset, _) = place else { Issue.record("not a record"); return }
        store.packSet!.forget(n)
        // Damage to the bytes goes unseen within the interval (receivers still check every chunk) and
        // is found by the first read after it; damage to the header is found on every read.
        try flipByte(dir + "/packs/" + PackSet.name(n), at: offset + Int64(PackSet.recordHeader) + 7)
        #expect(try store.read(id) != bytes)
        clock.now += 200
        #expect(throws: ContentError(.idMismatch, "")) { try store.read(id) }
        try flipByte(dir + "/packs/" + PackSet.name(n), at: offset + Int64(PackSet.recordHeader) + 7)
        #expect(try store.read(id) == bytes)
        try flipByte(dir + "/packs/" + PackSet.name(n), at: offset + 10)
        #expect(throws: ContentError(.idMismatch, "")) { try store.read(id) }
        // 0: every read hashes.
        try flipByte(dir + "/packs/" + PackSet.name(n), at: offset + 10)
        store.verifyInterval = 0
        let before = store.readCounts.hashed
        _ = try store.read(id); _ = try store.read(id)
        #expect(store.readCounts.hashed == before + 2)
    }
}

/// Issue 16 item 4: packs are the default for new stores, and what a failed put leaves in the packs
/// is cut by a truncate when the store opens (no copy: a full disk has no room for one).
extension PackStoreTests {
    @Test func newStoresArePacksAndExistingStoresKeepTheirLayout() throws {
        let keys = PublisherKeys.random()
        let fresh = tempDir("default-new")
        do {
            let store = try DiskChunkStore(directory: fresh)
            #expect(store.format == .packs)
            _ = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(50_000, seed: 1), name: "x")
        }
        #expect(!FileManager.default.fileExists(atPath: fresh + "/chunks"), "a store made in packs has no chunks/ folder")
        #expect(try DiskChunkStore.existingFormat(fresh) == .packs)
        #expect(try DiskChunkStore(directory: fresh).verify(repair: false).isClean)
        // A store of chunk files (made before packs were the default) stays one when opened without a format.
        let old = tempDir("default-old")
        do {
            let store = try DiskChunkStore(directory: old, format: .files)
            _ = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(50_000, seed: 2), name: "y")
        }
        #expect(try DiskChunkStore.existingFormat(old) == .files)
        do {
            let store = try DiskChunkStore(directory: old)
            #expect(store.format == .files)
            _ = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(50_000, seed: 3), name: "z")
        }
        #expect(!FileManager.default.fileExists(atPath: old + "/packs"), "opening a store of chunk files converted it")
        // Also with its index lost: the chunk files say what it is (and the index is rebuilt from them).
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: old + "/meta.sqlite" + s) }
        #expect(try DiskChunkStore.existingFormat(old) == .files)
        let rebuilt = try DiskChunkStore(directory: old)
        #expect(rebuilt.format == .files && rebuilt.rebuilt?.problem == .missing)
        // An empty store made as files stays files; `.files` on a new store makes the older layout.
        let empty = tempDir("default-empty-files")
        _ = try DiskChunkStore(directory: empty, format: .files)
        #expect(try DiskChunkStore(directory: empty).format == .files)
        #expect(try DiskChunkStore.existingFormat(tempDir("default-nothing")) == nil)
    }

    @Test func recordsAFailedPutLeftAreCutOnOpenWithoutACopy() throws {
        let dir = tempDir("packs-uncommitted")
        let keys = PublisherKeys.random()
        let id: ContentID
        let pack = dir + "/packs/" + PackSet.name(1)
        let committedSize: Int
        do {
            let store = try DiskChunkStore(directory: dir, format: .packs)
            let pub = ContentPublisher(store: store, keys: keys)
            id = try pub.put(bytes: textLike(200_000, seed: 1), name: "kept").id
            committedSize = try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int
            // A put that fails part way (a full disk): whole records written, even synced, never committed.
            store.failWritesAfterBytes = 150_000
            var rng = SeededRNG(seed: 2)
            #expect(throws: ContentError(.diskFull, "")) { try pub.put(bytes: rng.bytes(400_000), name: "failed") }
            _ = try store.packSet!.sync()
        }
        let grown = try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int
        #expect(grown > committedSize + 100_000, "the failed put wrote whole records")
        let store = try DiskChunkStore(directory: dir)
        #expect(store.droppedTornBytes == Int64(grown - committedSize))
        #expect(try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int == committedSize)
        let v = try store.verify(repair: true)
        #expect(v.orphaned.isEmpty && v.quarantine == nil && v.isClean, "\(v)")
        #expect(try ContentReader(store: store, keys: keys).readFile(id) == textLike(200_000, seed: 1))
        // The next put writes after the cut.
        let more = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(60_000, seed: 3), name: "more")
        #expect(try ContentReader(store: store, keys: keys).readFile(more.id) == textLike(60_000, seed: 3))
        #expect(try store.verify(repair: false).isClean)
        // ... in the same pack: a reopened store continues its last pack, it does not start one per run.
        #expect(files(under: dir + "/packs") == [PackSet.name(1)])
        #expect(try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int > committedSize)
    }

    /// A guard: a record the index names past the pack's recorded length (a length recorded short) is
    /// kept, with the length raised, and only what follows it is cut.
    @Test func anIndexedRecordPastTheRecordedLengthIsKept() throws {
        let dir = tempDir("packs-short-length")
        let keys = PublisherKeys.random()
        let id: ContentID
        let pack = dir + "/packs/" + PackSet.name(1)
        let size: Int
        do {
            let store = try DiskChunkStore(directory: dir, format: .packs)
            id = try ContentPublisher(store: store, keys: keys).put(bytes: textLike(200_000, seed: 4), name: "kept").id
            size = try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int
            try store.db.write { db in try db.execute(sql: "UPDATE packs SET length = ?", arguments: [PackSet.headerSize + 10]) }
            // And a shorter length written later does not lower it again.
            try store.db.write { db in
                try db.execute(sql: "UPDATE packs SET length = ?", arguments: [size])
                try db.execute(sql: DiskChunkStore.recordPackLength, arguments: [1, 100])
            }
            #expect(try store.db.read { db in try Int64.fetchOne(db, sql: "SELECT length FROM packs WHERE pack = 1") } == Int64(size))
            try store.db.write { db in try db.execute(sql: "UPDATE packs SET length = ?", arguments: [PackSet.headerSize + 10]) }
        }
        try appendBytes(pack, Array("STQR".utf8) + [0, 0, 3, 232] + [UInt8](repeating: 7, count: 42))
        let store = try DiskChunkStore(directory: dir)
        #expect(store.droppedTornBytes == 50)
        #expect(try FileManager.default.attributesOfItem(atPath: pack)[.size] as! Int == size)
        #expect(try store.db.read { db in try Int64.fetchOne(db, sql: "SELECT length FROM packs WHERE pack = 1") } == Int64(size))
        #expect(try ContentReader(store: store, keys: keys).readFile(id) == textLike(200_000, seed: 4))
        #expect(try store.verify(repair: false).isClean)
    }
}
