import Foundation
import Testing
@testable import STOQContent

/// The store commands end to end through the built `stoq` binary: put, get (bit-identical, modes),
/// ls, pin, unpin, gc, store verify; a chunk file altered on disk; a full disk (a 2 MiB tmpfs).
@Suite struct CLIStoreTests {
    func stoq(_ bin: String, _ args: [String]) throws -> CrashTests.Output { try CrashTests.stoq(bin, args) }

    @Test func putGetLsPinUnpinGC() throws {
        guard let bin = CrashTests.binary else { print("putGetLsPinUnpinGC: skipped — stoq binary not built"); return }
        let work = tempDir("cli")
        let store = work + "/store"
        try FileManager.default.createDirectory(atPath: work + "/src/sub", withIntermediateDirectories: true)
        try Data(textLike(150_000, seed: 11)).write(to: URL(fileURLWithPath: work + "/src/a.txt"))
        try Data(textLike(90_000, seed: 12)).write(to: URL(fileURLWithPath: work + "/src/sub/run.sh"))
        chmod(work + "/src/sub/run.sh", 0o750)
        chmod(work + "/src/a.txt", 0o640)
        try Data(textLike(120_000, seed: 13)).write(to: URL(fileURLWithPath: work + "/other.txt"))

        let put = try stoq(bin, ["put", work + "/src", work + "/other.txt", "--store", store])
        #expect(put.status == 0, "\(put.stderr)")
        let lines = put.stdout.split(separator: "\n")
        let dirID = try #require(lines.first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let fileID = try #require(lines.dropFirst().first?.split(whereSeparator: \.isWhitespace).first.map(String.init))
        #expect(dirID.hasPrefix("stoq:") && fileID.hasPrefix("stoq:"))
        #expect(put.stderr.contains("put: 3 files") && put.stderr.contains("dedup"), "\(put.stderr)")

        // A second put of the same tree stores nothing new.
        let again = try stoq(bin, ["put", work + "/src", "--store", store])
        #expect(again.status == 0 && again.stdout.hasPrefix(dirID), "\(again.stdout)")
        #expect(again.stderr.contains("new 0 chunks") && again.stderr.contains("dedup 100.0%"), "\(again.stderr)")

        // get restores bit-identical files with their modes.
        let get = try stoq(bin, ["get", dirID, "-o", work + "/out", "--store", store])
        #expect(get.status == 0, "\(get.stderr)")
        for f in ["a.txt", "sub/run.sh"] {
            #expect(FileManager.default.contents(atPath: work + "/out/" + f) == FileManager.default.contents(atPath: work + "/src/" + f), "\(f)")
        }
        #expect(try Posix.info(work + "/out/sub/run.sh").mode == 0o750)
        #expect(try Posix.info(work + "/out/a.txt").mode == 0o640)

        // ls lists both pins; unpin + gc removes exactly the unpinned file's chunks.
        let ls = try stoq(bin, ["ls", "--store", store])
        #expect(ls.status == 0 && ls.stdout.contains(dirID) && ls.stdout.contains(fileID) && ls.stdout.contains("2 pinned"), "\(ls.stdout)")
        let unpin = try stoq(bin, ["unpin", fileID, "--store", store])
        #expect(unpin.status == 0, "\(unpin.stderr)")
        let unpinTwice = try stoq(bin, ["unpin", fileID, "--store", store])
        #expect(unpinTwice.status != 0 && unpinTwice.stderr.contains("not pinned"), "\(unpinTwice.stderr)")
        let gc = try stoq(bin, ["gc", "--store", store])
        #expect(gc.status == 0 && !gc.stdout.contains("removed 0 chunks"), "\(gc.stdout)")
        let gone = try stoq(bin, ["get", fileID, "-o", work + "/other.out", "--store", store])
        #expect(gone.status != 0 && gone.stderr.contains("not in the store"), "\(gone.stderr)")
        let kept = try stoq(bin, ["get", dirID, "-o", work + "/out2", "--store", store])
        #expect(kept.status == 0, "\(kept.stderr)")
        let gc2 = try stoq(bin, ["gc", "--store", store])
        #expect(gc2.stdout.contains("removed 0 chunks"), "\(gc2.stdout)")

        // pin of unknown content is refused; pin of stored content makes gc keep it.
        let bogus = try stoq(bin, ["pin", fileID, "--store", store])
        #expect(bogus.status != 0 && bogus.stderr.contains("not in the store"), "\(bogus.stderr)")
        let unpinDir = try stoq(bin, ["unpin", dirID, "--store", store])
        #expect(unpinDir.status == 0)
        let repin = try stoq(bin, ["pin", dirID, "--name", "tree", "--store", store])
        #expect(repin.status == 0, "\(repin.stderr)")
        let gc3 = try stoq(bin, ["gc", "--store", store])
        #expect(gc3.stdout.contains("removed 0 chunks"), "\(gc3.stdout)")
        let verify = try stoq(bin, ["store", "verify", "--store", store])
        #expect(verify.status == 0 && verify.stdout.contains("consistent"), "\(verify.stdout)")
        try? FileManager.default.removeItem(atPath: work)
    }

    @Test func alteredChunkFileIsReportedAndRepairable() throws {
        guard let bin = CrashTests.binary else { print("alteredChunkFile: skipped — stoq binary not built"); return }
        let work = tempDir("cli-alter")
        let store = work + "/store"
        try Data(textLike(200_000, seed: 21)).write(to: URL(fileURLWithPath: work + "/a.txt"))
        let put = try stoq(bin, ["put", work + "/a.txt", "--store", store, "--store-format", "files"])
        let id = try #require(put.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        // Flip one byte of one stored chunk file (the largest: a data chunk, not a manifest).
        var files = [(String, Int)]()
        let root = store + "/chunks"
        for a in try FileManager.default.subpathsOfDirectory(atPath: root) {
            let p = root + "/" + a
            if let attrs = try? FileManager.default.attributesOfItem(atPath: p), attrs[.type] as? FileAttributeType == .typeRegular {
                files.append((p, (attrs[.size] as? Int) ?? 0))
            }
        }
        let victim = try #require(files.max { $0.1 < $1.1 }?.0)
        chmod(victim, 0o644)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: victim)))
        bytes[bytes.count / 2] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: victim))

        let get = try stoq(bin, ["get", id, "-o", work + "/out.txt", "--store", store])
        #expect(get.status != 0 && get.stderr.contains("damaged"), "\(get.stderr)")
        let verify = try stoq(bin, ["store", "verify", "--store", store])
        #expect(verify.status != 0 && verify.stdout.contains("1 damaged") && verify.stdout.contains("broken pin"), "\(verify.stdout)")
        let repair = try stoq(bin, ["store", "verify", "--repair", "--store", store])
        #expect(repair.status != 0 && repair.stdout.contains("(repaired)"), "\(repair.stdout)")
        // Putting the content again writes the dropped chunk back (the plaintext index no longer names it).
        let reput = try stoq(bin, ["put", work + "/a.txt", "--store", store])
        #expect(reput.status == 0 && reput.stdout.hasPrefix(id), "\(reput.stdout)\(reput.stderr)")
        #expect(reput.stderr.contains("new 1 chunks"), "\(reput.stderr)")
        let ok = try stoq(bin, ["store", "verify", "--store", store])
        #expect(ok.status == 0 && ok.stdout.contains("consistent"), "\(ok.stdout)")
        let get2 = try stoq(bin, ["get", id, "-o", work + "/out2.txt", "--store", store])
        #expect(get2.status == 0 && FileManager.default.contents(atPath: work + "/out2.txt") == FileManager.default.contents(atPath: work + "/a.txt"))
        try? FileManager.default.removeItem(atPath: work)
    }

    /// On a full disk, a failed put leaves a store `store verify --repair` fixes without free space:
    /// chunk files move to the quarantine by rename, and the records a failed put left in the packs are
    /// cut by a truncate when the next command opens the store.
    @Test(arguments: StoreFormat.allCases)
    func fullDiskGivesAClearErrorAndKeepsTheStore(_ format: StoreFormat) throws {
        guard let bin = CrashTests.binary else { print("fullDisk: skipped — stoq binary not built"); return }
        let work = tempDir("cli-full")
        let mnt = work + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]) == 0 else {
            print("fullDiskGivesAClearError: skipped (mount -t tmpfs not permitted here)")
            return
        }
        defer { _ = run("/bin/umount", [mnt]); try? FileManager.default.removeItem(atPath: work) }
        let store = mnt + "/store"
        try Data(textLike(100_000, seed: 31)).write(to: URL(fileURLWithPath: work + "/small.txt"))
        var rng = SeededRNG(seed: 32)
        try Data(rng.bytes(4 << 20)).write(to: URL(fileURLWithPath: work + "/big.bin"))
        let first = try stoq(bin, ["put", work + "/small.txt", "--store", store, "--store-format", format.rawValue])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(FileManager.default.fileExists(atPath: store + "/packs") == (format == .packs))
        let id = try #require(first.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        let full = try stoq(bin, ["put", work + "/big.bin", "--store", store])
        #expect(full.status == 1, "\(full.stdout)")
        #expect(full.stderr.contains("full"), "\(full.stderr)")
        #expect(!full.stderr.contains("Fatal error"), "\(full.stderr)")
        let repair = try stoq(bin, ["store", "verify", "--repair", "--store", store])
        #expect(repair.status == 0 && repair.stdout.contains(" 0 damaged, 0 missing") && !repair.stdout.contains("broken pin"), "\(repair.stdout)\(repair.stderr)")
        if format == .packs {
            #expect(repair.stderr.contains("uncommitted records") && repair.stdout.contains(" 0 orphaned"), "\(repair.stdout)\(repair.stderr)")
        }
        let clean = try stoq(bin, ["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)\(clean.stderr)")
        let get = try stoq(bin, ["get", id, "-o", work + "/small.out", "--store", store])
        #expect(get.status == 0 && FileManager.default.contents(atPath: work + "/small.out") == FileManager.default.contents(atPath: work + "/small.txt"), "\(get.stderr)")
    }
}
