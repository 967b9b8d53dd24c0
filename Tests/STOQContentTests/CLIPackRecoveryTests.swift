import Foundation
import Testing
@testable import STOQContent

/// ``CLIRecoveryTests`` on a store in pack files (`--store-format packs`), through the built `stoq`
/// binary: a lost, emptied, corrupted or partly lost index is rebuilt from the packs and
/// `verify --repair` loses nothing and leaves the packs as they were; a damaged record is reported,
/// copied to the quarantine and put back by a second put. (Killed puts: ``CrashTests``.)
@Suite struct CLIPackRecoveryTests {
    /// Each pack file's bytes, by name.
    static func packs(_ store: String) -> [String: Data] {
        let dir = store + "/packs"
        var out = [String: Data]()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".pack") {
            out[name] = FileManager.default.contents(atPath: dir + "/" + name)
        }
        return out
    }

    /// ``CLIRecoveryTests/populated(_:)`` in packs format.
    static func populated(_ work: String) throws -> (store: String, tree: String, file: String) {
        let store = work + "/store"
        try FileManager.default.createDirectory(atPath: work + "/src/sub/deeper", withIntermediateDirectories: true)
        try Data(textLike(180_000, seed: 41)).write(to: URL(fileURLWithPath: work + "/src/a.txt"))
        try Data(textLike(60_000, seed: 42)).write(to: URL(fileURLWithPath: work + "/src/sub/b.txt"))
        var rng = SeededRNG(seed: 43)
        try Data(rng.bytes(300_000)).write(to: URL(fileURLWithPath: work + "/src/sub/deeper/c.bin"))
        try Data(textLike(120_000, seed: 44)).write(to: URL(fileURLWithPath: work + "/single.txt"))
        let put = try CLIRecoveryTests.stoq(["put", work + "/src", work + "/single.txt", "--store", store, "--store-format", "packs"])
        #expect(put.status == 0, "\(put.stderr)")
        let lines = put.stdout.split(separator: "\n")
        let tree = try #require(lines.first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let file = try #require(lines.dropFirst().first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        #expect(CLIRecoveryTests.chunkFiles(store).isEmpty, "packs format wrote chunk files")
        return (store, tree, file)
    }

    @Test(arguments: CLIRecoveryTests.IndexDamage.allCases)
    func lostIndexIsRebuiltFromPacksAndRepairLosesNothing(_ damage: CLIRecoveryTests.IndexDamage) throws {
        guard CrashTests.binary != nil else { print("lostIndex(packs): skipped — stoq binary not built"); return }
        let work = tempDir("cli-pack-index-\(damage.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let (store, tree, file) = try Self.populated(work)
        let before = Self.packs(store)
        #expect(!before.isEmpty)
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

        let verify = try CLIRecoveryTests.stoq(["store", "verify", "--store", store])
        #expect(verify.stderr.contains("rebuilt it from the") && verify.stderr.contains("2 roots pinned"), "\(verify.stderr)")
        #expect(verify.stdout.contains(" 0 damaged, 0 missing, 0 orphaned, 0 unindexed"), "\(verify.stdout)")
        #expect(verify.status == 0 && verify.stdout.contains("consistent"), "\(verify.stdout)\(verify.stderr)")
        let repair = try CLIRecoveryTests.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.status == 0 && !repair.stdout.contains("orphaned stoq:"), "\(repair.stdout)")
        #expect(Self.packs(store) == before, "repair changed the packs")
        let gc = try CLIRecoveryTests.stoq(["gc", "--store", store])
        #expect(gc.stdout.contains("removed 0 chunks"), "\(gc.stdout)")
        #expect(Self.packs(store) == before, "gc changed the packs")

        let ls = try CLIRecoveryTests.stoq(["ls", "--store", store])
        #expect(ls.stdout.contains(tree) && ls.stdout.contains(file) && ls.stdout.contains("2 pinned"), "\(ls.stdout)")
        let get = try CLIRecoveryTests.stoq(["get", tree, "-o", work + "/out", "--store", store])
        #expect(get.status == 0 && CLIRecoveryTests.sameTree(work + "/src", work + "/out"), "\(get.stderr)")
        let getFile = try CLIRecoveryTests.stoq(["get", file, "-o", work + "/single.out", "--store", store])
        #expect(getFile.status == 0 && FileManager.default.contents(atPath: work + "/single.out") == FileManager.default.contents(atPath: work + "/single.txt"), "\(getFile.stderr)")
        let again = try CLIRecoveryTests.stoq(["put", work + "/src", "--store", store])
        #expect(again.status == 0 && again.stdout.hasPrefix(tree) && again.stderr.contains("new 0 chunks"), "\(again.stdout)\(again.stderr)")
    }

    @Test func partlyLostIndexRowsAreIndexedAgainFromPacks() throws {
        guard CrashTests.binary != nil else { print("partlyLostIndex(packs): skipped — stoq binary not built"); return }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3") else {
            Issue.record("sqlite3 is missing: run scripts/bootstrap.sh"); return
        }
        let work = tempDir("cli-pack-index-rows")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let (store, tree, file) = try Self.populated(work)
        let before = Self.packs(store)
        let fileManifest = try #require(ContentID(file)).manifest.hex.uppercased()
        let sql = "DELETE FROM chunks WHERE hex(id) < '8' OR hex(id) = '\(fileManifest)'; DELETE FROM pins WHERE hex(id) = '\(fileManifest)';"
        #expect(run("/usr/bin/sqlite3", [store + "/meta.sqlite", sql]) == 0)
        let verify = try CLIRecoveryTests.stoq(["store", "verify", "--store", store])
        #expect(verify.status != 0 && verify.stdout.contains("\nunindexed "), "\(verify.stdout)")
        #expect(verify.stdout.contains(" 0 orphaned"), "\(verify.stdout)")
        let repair = try CLIRecoveryTests.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.status == 0 && repair.stdout.contains("recovered pin \(file)"), "\(repair.stdout)\(repair.stderr)")
        #expect(Self.packs(store) == before, "repair changed the packs")
        let clean = try CLIRecoveryTests.stoq(["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)")
        let gc = try CLIRecoveryTests.stoq(["gc", "--store", store])
        #expect(gc.stdout.contains("removed 0 chunks"), "\(gc.stdout)")
        let get = try CLIRecoveryTests.stoq(["get", tree, "-o", work + "/out", "--store", store])
        #expect(get.status == 0 && CLIRecoveryTests.sameTree(work + "/src", work + "/out"), "\(get.stderr)")
        let getFile = try CLIRecoveryTests.stoq(["get", file, "-o", work + "/single.out", "--store", store])
        #expect(getFile.status == 0, "\(getFile.stderr)")
    }

    @Test func damagedRecordIsQuarantinedAndPutAgain() throws {
        guard CrashTests.binary != nil else { print("damagedRecord(packs): skipped — stoq binary not built"); return }
        let work = tempDir("cli-pack-damage")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let store = work + "/store"
        try Data(textLike(200_000, seed: 51)).write(to: URL(fileURLWithPath: work + "/a.txt"))
        let put = try CLIRecoveryTests.stoq(["put", work + "/a.txt", "--store", store, "--store-format", "packs"])
        let id = try #require(put.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        // One byte in the middle of the first record's bytes (header 16, record header 40).
        let pack = try #require(Self.packs(store).keys.sorted().first)
        try flipByte(store + "/packs/" + pack, at: 16 + 40 + 100)
        let get = try CLIRecoveryTests.stoq(["get", id, "-o", work + "/out.txt", "--store", store])
        #expect(get.status != 0 && get.stderr.contains("damaged"), "\(get.stderr)")
        let verify = try CLIRecoveryTests.stoq(["store", "verify", "--store", store])
        #expect(verify.status != 0 && verify.stdout.contains("1 damaged") && verify.stdout.contains("broken pin"), "\(verify.stdout)")
        let repair = try CLIRecoveryTests.stoq(["store", "verify", "--repair", "--store", store])
        #expect(repair.stdout.contains("(repaired)"), "\(repair.stdout)")
        let q = try #require(try FileManager.default.contentsOfDirectory(atPath: store + "/quarantine").first)
        let kept = try FileManager.default.contentsOfDirectory(atPath: store + "/quarantine/\(q)/packs")
        #expect(kept.count == 1 && kept[0].hasPrefix(pack + ".16."), "\(kept)")
        let reput = try CLIRecoveryTests.stoq(["put", work + "/a.txt", "--store", store])
        #expect(reput.status == 0 && reput.stdout.hasPrefix(id), "\(reput.stderr)")
        let clean = try CLIRecoveryTests.stoq(["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)")
        let again = try CLIRecoveryTests.stoq(["get", id, "-o", work + "/out.txt", "--store", store])
        #expect(again.status == 0 && FileManager.default.contents(atPath: work + "/out.txt") == FileManager.default.contents(atPath: work + "/a.txt"), "\(again.stderr)")
    }
}
