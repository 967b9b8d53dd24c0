import Foundation
import Testing
@testable import STOQContent

/// Issue 11, "nothing lost through a repair", through the built `stoq` binary: a store whose index is
/// deleted, emptied, corrupted or partly lost is rebuilt from its chunk files and `verify --repair`
/// loses nothing; repair quarantines instead of deleting; trees come back with links, empty
/// directories and modes; a lost publisher key is never replaced; FIFOs are refused, never read.
@Suite struct CLIRecoveryTests {
    /// Runs `stoq` with its output in files; a run still going after `limit` seconds is killed and
    /// reported as hung (a guard against a hang, not a timing assertion: a good run takes well under 1 s).
    static func stoq(_ args: [String], limit: Double = 300) throws -> CrashTests.Output {
        let bin = try #require(CrashTests.binary)
        let dir = tempDir("stoq-run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
        try p.run()
        var waited = 0.0
        while p.isRunning && waited < limit { usleep(20_000); waited += 0.02 }
        let hung = p.isRunning
        if hung { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let out = String(decoding: FileManager.default.contents(atPath: dir + "/out") ?? Data(), as: UTF8.self)
        var err = String(decoding: FileManager.default.contents(atPath: dir + "/err") ?? Data(), as: UTF8.self)
        if hung { err += "\n[hung: killed after \(Int(limit)) s]" }
        return CrashTests.Output(status: hung ? -9 : p.terminationStatus, stdout: out, stderr: err)
    }

    /// Every file under `<store>/chunks`, relative to the store.
    static func chunkFiles(_ store: String) -> Set<String> {
        let root = store + "/chunks"
        var out = Set<String>()
        for rel in (try? FileManager.default.subpathsOfDirectory(atPath: root)) ?? [] {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + rel, isDirectory: &isDir), !isDir.boolValue { out.insert("chunks/" + rel) }
        }
        return out
    }

    /// A store holding a directory tree and a separate file; returns the ids and paths.
    static func populated(_ work: String) throws -> (store: String, tree: String, file: String) {
        let store = work + "/store"
        try FileManager.default.createDirectory(atPath: work + "/src/sub/deeper", withIntermediateDirectories: true)
        try Data(textLike(180_000, seed: 41)).write(to: URL(fileURLWithPath: work + "/src/a.txt"))
        try Data(textLike(60_000, seed: 42)).write(to: URL(fileURLWithPath: work + "/src/sub/b.txt"))
        var rng = SeededRNG(seed: 43)
        try Data(rng.bytes(300_000)).write(to: URL(fileURLWithPath: work + "/src/sub/deeper/c.bin"))
        try Data(textLike(120_000, seed: 44)).write(to: URL(fileURLWithPath: work + "/single.txt"))
        let put = try stoq(["put", work + "/src", work + "/single.txt", "--store", store, "--store-format", "files"])
        #expect(put.status == 0, "\(put.stderr)")
        let lines = put.stdout.split(separator: "\n")
        let tree = try #require(lines.first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let file = try #require(lines.dropFirst().first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        return (store, tree, file)
    }

    static func sameTree(_ a: String, _ b: String) -> Bool {
        for f in ["a.txt", "sub/b.txt", "sub/deeper/c.bin"] {
            guard let x = FileManager.default.contents(atPath: a + "/" + f), x == FileManager.default.contents(atPath: b + "/" + f) else { return false }
        }
        return true
    }

    enum IndexDamage: String, CaseIterable { case deleted, emptied, corrupted }

    @Test(arguments: IndexDamage.allCases)
    func lostIndexIsRebuiltAndRepairLosesNothing(_ damage: IndexDamage) throws {
        guard CrashTests.binary != nil else { print("lostIndex: skipped — stoq binary not built"); return }
        let work = tempDir("cli-index-\(damage.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let (store, tree, file) = try Self.populated(work)
        let before = Self.chunkFiles(store)
        #expect(before.count > 5)
        let index = store + "/meta.sqlite"
        switch damage {
        case .deleted:
            for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: index + s) }
        case .emptied:
            #expect(truncate(index, 0) == 0)
        case .corrupted:
            let size = try #require(try FileManager.default.attributesOfItem(atPath: index)[.size] as? Int)
            var rng = SeededRNG(seed: 45)
            try Data(rng.bytes(max(size, 4096))).write(to: URL(fileURLWithPath: index))
        }

        // verify: the index is rebuilt before anything is judged; nothing is orphaned.
        let verify = try Self.stoq(["store", "verify", "--store", store])
        #expect(verify.stderr.contains("rebuilt it from the chunk files") && verify.stderr.contains("2 roots pinned"), "\(verify.stderr)")
        #expect(verify.stdout.contains(" 0 damaged, 0 missing, 0 orphaned, 0 unindexed"), "\(verify.stdout)")
        #expect(verify.status == 0 && verify.stdout.contains("consistent"), "\(verify.stdout)\(verify.stderr)")
        if damage == .corrupted {
            // The damaged index is kept in the quarantine, not deleted.
            let q = try FileManager.default.contentsOfDirectory(atPath: store + "/quarantine")
            #expect(q.count == 1 && FileManager.default.fileExists(atPath: store + "/quarantine/\(q[0])/meta.sqlite"), "\(q)")
        }
        let repair = try Self.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.status == 0 && !repair.stdout.contains("orphaned stoq:"), "\(repair.stdout)")
        #expect(Self.chunkFiles(store) == before, "repair changed the chunk files")
        let gc = try Self.stoq(["gc", "--store", store])
        #expect(gc.stdout.contains("removed 0 chunks"), "\(gc.stdout)")
        #expect(Self.chunkFiles(store) == before)

        // Both roots are pinned again and read back bit-identical.
        let ls = try Self.stoq(["ls", "--store", store])
        #expect(ls.stdout.contains(tree) && ls.stdout.contains(file) && ls.stdout.contains("2 pinned"), "\(ls.stdout)")
        let get = try Self.stoq(["get", tree, "-o", work + "/out", "--store", store])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(Self.sameTree(work + "/src", work + "/out"))
        let getFile = try Self.stoq(["get", file, "-o", work + "/single.out", "--store", store])
        #expect(getFile.status == 0 && FileManager.default.contents(atPath: work + "/single.out") == FileManager.default.contents(atPath: work + "/single.txt"), "\(getFile.stderr)")
        // And the store keeps working: a second put stores nothing new.
        let again = try Self.stoq(["put", work + "/src", "--store", store])
        #expect(again.status == 0 && again.stdout.hasPrefix(tree) && again.stderr.contains("new 0 chunks"), "\(again.stdout)\(again.stderr)")
    }

    @Test func partlyLostIndexRowsAreIndexedAgainNotRemoved() throws {
        guard CrashTests.binary != nil else { print("partlyLostIndex: skipped — stoq binary not built"); return }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3") else {
            Issue.record("sqlite3 is missing: run scripts/bootstrap.sh"); return
        }
        let work = tempDir("cli-index-rows")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let (store, tree, file) = try Self.populated(work)
        let before = Self.chunkFiles(store)
        // About half the chunk rows, the single file's manifest row and its pin go: the index still
        // opens and passes SQLite's checks, but no longer records what is on disk.
        let fileManifest = try #require(ContentID(file)).manifest.hex.uppercased()
        let sql = "DELETE FROM chunks WHERE hex(id) < '8' OR hex(id) = '\(fileManifest)'; DELETE FROM pins WHERE hex(id) = '\(fileManifest)';"
        #expect(run("/usr/bin/sqlite3", [store + "/meta.sqlite", sql]) == 0)
        let verify = try Self.stoq(["store", "verify", "--store", store])
        #expect(verify.status != 0 && verify.stdout.contains("\nunindexed "), "\(verify.stdout)")
        #expect(verify.stdout.contains(" 0 orphaned"), "\(verify.stdout)")
        let repair = try Self.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.status == 0, "\(repair.stdout)\(repair.stderr)")
        #expect(repair.stdout.contains("recovered pin \(file)"), "\(repair.stdout)")
        #expect(Self.chunkFiles(store) == before, "repair changed the chunk files")
        let clean = try Self.stoq(["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)")
        let gc = try Self.stoq(["gc", "--store", store])
        #expect(gc.stdout.contains("removed 0 chunks"), "\(gc.stdout)")
        let get = try Self.stoq(["get", tree, "-o", work + "/out", "--store", store])
        #expect(get.status == 0 && Self.sameTree(work + "/src", work + "/out"), "\(get.stderr)")
        let getFile = try Self.stoq(["get", file, "-o", work + "/single.out", "--store", store])
        #expect(getFile.status == 0, "\(getFile.stderr)")
    }

    @Test func repairQuarantinesInsteadOfDeleting() throws {
        guard CrashTests.binary != nil else { print("repairQuarantines: skipped — stoq binary not built"); return }
        let work = tempDir("cli-quarantine")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let store = work + "/store"
        try Data(textLike(200_000, seed: 51)).write(to: URL(fileURLWithPath: work + "/a.txt"))
        let put = try Self.stoq(["put", work + "/a.txt", "--store", store, "--store-format", "files"])
        let id = try #require(put.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        // Content put into another store with the same key, its chunk files copied in without the
        // index: a manifest found among the chunk files, and the chunks it names.
        let other = work + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: store + "/publisher.key", toPath: other + "/publisher.key")
        try Data(textLike(90_000, seed: 52)).write(to: URL(fileURLWithPath: work + "/b.txt"))
        let putOther = try Self.stoq(["put", work + "/b.txt", "--store", other, "--store-format", "files"])
        let otherID = try #require(putOther.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let copied = Self.chunkFiles(other).subtracting(Self.chunkFiles(store))
        #expect(!copied.isEmpty)
        for rel in copied {
            try FileManager.default.createDirectory(atPath: Posix.parent(store + "/" + rel), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: other + "/" + rel, toPath: store + "/" + rel)
        }
        // An orphan (bytes no manifest names), a damaged chunk and a temp file.
        var rng = SeededRNG(seed: 53)
        let orphan = rng.bytes(5000)
        let orphanID = ChunkID.of(orphan)
        let orphanRel = "chunks/\(orphanID.hex.prefix(2))/\(orphanID.hex.dropFirst(2).prefix(2))/\(orphanID.hex)"
        try FileManager.default.createDirectory(atPath: Posix.parent(store + "/" + orphanRel), withIntermediateDirectories: true)
        try Data(orphan).write(to: URL(fileURLWithPath: store + "/" + orphanRel))
        let own = Self.chunkFiles(store).subtracting(copied).subtracting([orphanRel])
        let victim = try #require(own.max { (Self.size(store + "/" + $0)) < (Self.size(store + "/" + $1)) })
        chmod(store + "/" + victim, 0o644)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: store + "/" + victim)))
        bytes[bytes.count / 3] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: store + "/" + victim))
        // (Beside the chunks, where older stores left them: `tmp/` itself is emptied when a store opens.)
        try Data("partial".utf8).write(to: URL(fileURLWithPath: store + "/chunks/.tmp-999-1"))
        let all = Self.chunkFiles(store)

        let verify = try Self.stoq(["store", "verify", "--store", store])
        #expect(verify.status != 0, "\(verify.stdout)")
        #expect(verify.stdout.contains("1 damaged") && verify.stdout.contains("1 orphaned") && verify.stdout.contains("\(copied.count) unindexed"), "\(verify.stdout)")
        let repair = try Self.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.stdout.contains("(repaired)") && repair.stdout.contains("recovered pin \(otherID)"), "\(repair.stdout)")
        #expect(repair.stdout.contains("moved 3 files to"), "\(repair.stdout)")
        // The unreferenced and damaged chunks and the temp file are in the quarantine, at their paths.
        let quarantine = try #require(try FileManager.default.contentsOfDirectory(atPath: store + "/quarantine").first)
        let q = store + "/quarantine/" + quarantine
        #expect(FileManager.default.contents(atPath: q + "/" + orphanRel) == Data(orphan))
        #expect(FileManager.default.contents(atPath: q + "/" + victim) == Data(bytes))
        #expect(FileManager.default.fileExists(atPath: q + "/chunks/.tmp-999-1"))
        #expect((FileManager.default.contents(atPath: q + "/README.txt").map { String(decoding: $0, as: UTF8.self) } ?? "").contains("move it to the same path"))
        // Everything else stayed; the copied content is indexed and readable.
        #expect(Self.chunkFiles(store) == all.subtracting([orphanRel, victim, "chunks/.tmp-999-1"]))
        let getOther = try Self.stoq(["get", otherID, "-o", work + "/b.out", "--store", store])
        #expect(getOther.status == 0 && FileManager.default.contents(atPath: work + "/b.out") == FileManager.default.contents(atPath: work + "/b.txt"), "\(getOther.stderr)")
        // Putting the damaged chunk's content again makes the store whole.
        let reput = try Self.stoq(["put", work + "/a.txt", "--store", store])
        #expect(reput.status == 0 && reput.stdout.hasPrefix(id), "\(reput.stderr)")
        let clean = try Self.stoq(["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)")
    }

    static func size(_ path: String) -> Int { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }

    @Test func treeWithLinksEmptyDirectoriesAndModesRoundTrips() throws {
        guard CrashTests.binary != nil else { print("treeRoundTrip: skipped — stoq binary not built"); return }
        let work = tempDir("cli-tree")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let src = work + "/src"
        let fm = FileManager.default
        try fm.createDirectory(atPath: src + "/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: src + "/empty/nested-empty", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: src + "/private", withIntermediateDirectories: true)
        try Data(textLike(50_000, seed: 61)).write(to: URL(fileURLWithPath: src + "/a.txt"))
        try Data("#!/bin/sh\necho hi\n".utf8).write(to: URL(fileURLWithPath: src + "/bin/run"))
        try Data().write(to: URL(fileURLWithPath: src + "/private/empty-file"))
        chmod(src + "/bin/run", 0o751)
        chmod(src + "/a.txt", 0o604)
        chmod(src + "/private", 0o700)
        chmod(src + "/empty/nested-empty", 0o750)
        let links = ["rel": "a.txt", "abs": "/etc/hostname", "dangling": "../../outside/nowhere", "dir-link": "bin", "bin/up": "../a.txt"]
        for (name, target) in links { try fm.createSymbolicLink(atPath: src + "/" + name, withDestinationPath: target) }
        #expect(run("/usr/bin/mkfifo", [src + "/fifo"]) == 0)

        let put = try Self.stoq(["put", src, "--store", work + "/store"])
        #expect(put.status == 0, "\(put.stderr)")
        #expect(put.stderr.contains("skipped \(src)/fifo") && put.stderr.contains("FIFO"), "\(put.stderr)")
        #expect(put.stderr.contains("5 links"), "\(put.stderr)")
        let id = try #require(put.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let out = work + "/out"
        let get = try Self.stoq(["get", id, "-o", out, "--store", work + "/store"])
        #expect(get.status == 0 && get.stderr.contains("5 links"), "\(get.stdout)\(get.stderr)")

        // Links are links, with their targets as written (never resolved, wherever they point).
        for (name, target) in links {
            let info = try Posix.info(out + "/" + name)
            #expect(info.isSymlink, "\(name) is not a link")
            #expect(try Posix.readLink(out + "/" + name) == target, "\(name)")
        }
        #expect(!fm.fileExists(atPath: work + "/outside"))
        // Empty directories and modes are kept; the FIFO was not stored.
        #expect(Posix.isDirectory(out + "/empty/nested-empty"))
        #expect(try fm.contentsOfDirectory(atPath: out + "/empty/nested-empty").isEmpty)
        #expect(try Posix.info(out + "/empty/nested-empty").mode == 0o750)
        #expect(try Posix.info(out + "/private").mode == 0o700)
        #expect(try Posix.info(out + "/bin/run").mode == 0o751)
        #expect(try Posix.info(out + "/a.txt").mode == 0o604)
        #expect(try Posix.info(out + "/private/empty-file").size == 0)
        #expect(fm.contents(atPath: out + "/a.txt") == fm.contents(atPath: src + "/a.txt"))
        #expect(!Posix.exists(out + "/fifo"))
        // A network reader walks the same manifests: the plan names no chunk for a link.
        let verify = try Self.stoq(["store", "verify", "--store", work + "/store"])
        #expect(verify.status == 0 && verify.stdout.contains("consistent"), "\(verify.stdout)")
    }

    @Test func missingPublisherKeyIsNeverReplaced() throws {
        guard CrashTests.binary != nil else { print("missingKey: skipped — stoq binary not built"); return }
        let work = tempDir("cli-key")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let store = work + "/store"
        try Data(textLike(80_000, seed: 71)).write(to: URL(fileURLWithPath: work + "/a.txt"))
        let put = try Self.stoq(["put", work + "/a.txt", "--store", store])
        #expect(put.status == 0 && put.stderr.contains("created the publisher key"), "\(put.stderr)")
        let id = try #require(put.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let key = store + "/publisher.key"
        try FileManager.default.moveItem(atPath: key, toPath: work + "/backup.key")

        let get = try Self.stoq(["get", id, "-o", work + "/out.txt", "--store", store])
        #expect(get.status == 1 && get.stderr.contains("publisher key") && get.stderr.contains("missing") && !get.stderr.contains("did not open"), "\(get.stderr)")
        #expect(!FileManager.default.fileExists(atPath: key), "a new key was written")
        let put2 = try Self.stoq(["put", work + "/a.txt", "--store", store])
        #expect(put2.status == 1 && put2.stderr.contains("missing"), "\(put2.stderr)")
        #expect(!FileManager.default.fileExists(atPath: key), "a new key was written")
        let verify = try Self.stoq(["store", "verify", "--store", store])
        #expect(verify.status != 0 && verify.stdout.contains("publisher key missing") && !verify.stdout.contains("consistent"), "\(verify.stdout)")
        // The key given explicitly reads the content.
        let withKey = try Self.stoq(["get", id, "-o", work + "/out.txt", "--store", store, "--publisher-key", work + "/backup.key"])
        #expect(withKey.status == 0, "\(withKey.stderr)")
        #expect(!FileManager.default.fileExists(atPath: key), "a new key was written")
        #expect(FileManager.default.contents(atPath: work + "/out.txt") == FileManager.default.contents(atPath: work + "/a.txt"))
        // A damaged key file is reported, not replaced.
        try Data(repeating: 7, count: 16).write(to: URL(fileURLWithPath: key))
        let bad = try Self.stoq(["store", "verify", "--store", store])
        #expect(bad.status != 0 && bad.stdout.contains("publisher key unreadable"), "\(bad.stdout)")
        let badGet = try Self.stoq(["get", id, "-o", work + "/out2.txt", "--store", store])
        #expect(badGet.status == 1 && badGet.stderr.contains("16 bytes"), "\(badGet.stderr)")
        #expect(FileManager.default.contents(atPath: key)?.count == 16)
        // Restored, everything works again.
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.moveItem(atPath: work + "/backup.key", toPath: key)
        let ok = try Self.stoq(["store", "verify", "--store", store])
        #expect(ok.status == 0 && ok.stdout.contains("consistent"), "\(ok.stdout)")
    }

    @Test func fifoIsRefusedNotRead() throws {
        guard CrashTests.binary != nil else { print("fifo: skipped — stoq binary not built"); return }
        let work = tempDir("cli-fifo")
        defer { try? FileManager.default.removeItem(atPath: work) }
        #expect(run("/usr/bin/mkfifo", [work + "/fifo"]) == 0)
        let chunked = try Self.stoq(["chunk", "--stats", work + "/fifo"])
        #expect(chunked.status == 1 && chunked.stderr.contains("FIFO") && chunked.stderr.contains("not a regular file"), "\(chunked.stderr)")
        let json = try Self.stoq(["chunk", "--stats", "--json", work + "/fifo"])
        #expect(json.status == 1, "\(json.stderr)")
        let put = try Self.stoq(["put", work + "/fifo", "--store", work + "/store"])
        #expect(put.status == 1 && put.stderr.contains("FIFO"), "\(put.stderr)")
        #expect(!FileManager.default.fileExists(atPath: work + "/store"), "a refused put created a store")
        // Inside a directory, chunk skips it with a warning and counts the rest.
        try Data(textLike(10_000, seed: 81)).write(to: URL(fileURLWithPath: work + "/a.txt"))
        let dir = try Self.stoq(["chunk", "--stats", "--json", work])
        #expect(dir.status == 0 && dir.stderr.contains("skipped \(work)/fifo"), "\(dir.stderr)")
        #expect(dir.stdout.contains("\"files\":1"), "\(dir.stdout)")
        // Also a link to a FIFO given by name.
        try FileManager.default.createSymbolicLink(atPath: work + "/link", withDestinationPath: work + "/fifo")
        let viaLink = try Self.stoq(["chunk", "--stats", work + "/link"])
        #expect(viaLink.status == 1 && viaLink.stderr.contains("FIFO"), "\(viaLink.stderr)")
    }
}
