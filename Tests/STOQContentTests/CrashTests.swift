import Foundation
import Testing
@testable import STOQContent

/// Runs the built `stoq` binary and `kill -9`s `stoq put` at random moments, then checks that
/// `stoq store verify --repair` leaves a consistent store and that everything committed before is intact.
@Suite struct CrashTests {
    static var binary: String? {
        // `make test` points STOQ_BIN at the release build (the binary users run).
        if let bin = ProcessInfo.processInfo.environment["STOQ_BIN"], FileManager.default.isExecutableFile(atPath: bin) { return bin }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        for p in ["\(root)/.build/debug/stoq", "\(root)/.build/release/stoq"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        return nil
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    static func stoq(_ bin: String, _ args: [String]) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Both store formats: chunk files, and pack files (whose torn tails opening cuts).
    @Test(arguments: StoreFormat.allCases)
    func killDashNineDuringPut(_ format: StoreFormat) throws {
        guard let bin = Self.binary else {
            print("killDashNineDuringPut: skipped — build the stoq binary first (swift build --product stoq)")
            return
        }
        let seed = UInt64.random(in: 0...UInt64.max)
        print("killDashNineDuringPut(\(format)) seed \(seed)")
        var rng = SeededRNG(seed: seed)
        let work = tempDir("crash")
        let store = work + "/store"
        // Content committed before the crashes: a file and a directory.
        try FileManager.default.createDirectory(atPath: work + "/base/d", withIntermediateDirectories: true)
        try Data(textLike(300_000, seed: 1)).write(to: URL(fileURLWithPath: work + "/base/a.txt"))
        try Data(rng.bytes(200_000)).write(to: URL(fileURLWithPath: work + "/base/d/b.bin"))
        let first = try Self.stoq(bin, ["put", work + "/base", "--store", store, "--store-format", format.rawValue])
        #expect(first.status == 0, "\(first.stderr)")
        let baseID = try #require(first.stdout.split(whereSeparator: \.isWhitespace).first.map(String.init))
        var committed = [(String, String)]() // (id, file)
        var killed = 0
        var i = -1
        var maximumDelay: UInt64 = 700_000  // µs
        while killed < 24 && i < 120 {
            i += 1
            let f = work + "/in-\(i).bin"
            // Each input shares a prefix with the base text and adds fresh bytes, so kills land in
            // chunk writes, in dedup lookups and in commits.
            // Every sixth put is small and left to finish, so completed puts are checked as well.
            let finish = i % 6 == 5
            let fresh = finish ? 50_000 : 3_000_000 + Int(rng.next() % 3_000_000)
            try Data(textLike(100_000, seed: 1) + rng.bytes(fresh)).write(to: URL(fileURLWithPath: f))
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["put", "--progress", f, "--store", store, "--store-format", format.rawValue]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Fault injection: kill after a random delay (not a timing assertion).
            // The delay bound shrinks whenever a put finished before its kill, so the kills keep
            // landing mid-put however fast this machine and build are.
            if !finish {
                usleep(UInt32(rng.next() % maximumDelay))
                if p.isRunning {
                    kill(p.processIdentifier, SIGKILL)
                } else {
                    maximumDelay = max(10_000, maximumDelay / 2)
                }
            }
            p.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            if p.terminationReason == .uncaughtSignal { killed += 1 }
            if let id = text.split(whereSeparator: \.isWhitespace).first, id.hasPrefix("stoq:") { committed.append((String(id), f)) }
        }
        print("killDashNineDuringPut(\(format)): \(killed) of \(i + 1) puts killed, \(committed.count) completed")
        #expect(killed >= 20, "want at least 20 kills; the delays were too long for this machine")
        #expect(Posix.isDirectory(store + "/packs") == (format == .packs))
        let repair = try Self.stoq(bin, ["store", "verify", "--repair", "--store", store, "--store-format", format.rawValue])
        #expect(repair.status == 0, "\(repair.stdout)\(repair.stderr)")
        let problems = repair.stdout.split(separator: "\n").filter { $0.hasPrefix("damaged ") || $0.hasPrefix("missing ") || $0.hasPrefix("broken pin") }
        #expect(problems.isEmpty, "committed data was lost: \(repair.stdout)")
        #expect(repair.stdout.contains(" 0 damaged, 0 missing"), "\(repair.stdout)")
        let clean = try Self.stoq(bin, ["store", "verify", "--store", store])
        #expect(clean.status == 0 && clean.stdout.contains("consistent"), "\(clean.stdout)")
        // Nothing committed before is lost.
        let out = work + "/restored"
        let get = try Self.stoq(bin, ["get", baseID, "-o", out, "--store", store])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(FileManager.default.contents(atPath: out + "/a.txt") == FileManager.default.contents(atPath: work + "/base/a.txt"))
        #expect(FileManager.default.contents(atPath: out + "/d/b.bin") == FileManager.default.contents(atPath: work + "/base/d/b.bin"))
        for (id, f) in committed {
            let g = try Self.stoq(bin, ["get", id, "-o", work + "/got", "--store", store])
            #expect(g.status == 0, "\(g.stderr)")
            #expect(FileManager.default.contents(atPath: work + "/got") == FileManager.default.contents(atPath: f))
        }
        // And the store still works after the crashes.
        let again = try Self.stoq(bin, ["put", work + "/in-0.bin", "--store", store])
        #expect(again.status == 0, "\(again.stderr)")
        try? FileManager.default.removeItem(atPath: work)
    }
}

@Suite struct CLIContentTests {
    @Test func chunkStatsJSONHasExactlyTheDocumentedKeys() throws {
        guard let bin = CrashTests.binary else { print("chunkStatsJSON: skipped — stoq binary not built"); return }
        let dir = tempDir("chunkjson")
        try Data(textLike(300_000, seed: 2)).write(to: URL(fileURLWithPath: dir + "/a.txt"))
        try Data(textLike(300_000, seed: 2)).write(to: URL(fileURLWithPath: dir + "/b.txt"))
        let out = try CrashTests.stoq(bin, ["chunk", "--stats", "--json", "--avg", "8192", dir])
        #expect(out.status == 0, "\(out.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        #expect(Set(obj.keys) == ["files", "bytes", "chunks", "unique_chunks", "unique_bytes", "dedup_ratio", "mb_per_s"])
        #expect(obj["files"] as? Int == 2 && obj["bytes"] as? Int == 600_000)
        #expect(abs((obj["dedup_ratio"] as? Double ?? 0) - 0.5) < 0.01)
        let fixed = try CrashTests.stoq(bin, ["chunk", "--stats", "--fixed", dir])
        #expect(fixed.status == 0 && fixed.stdout.contains("dedup ratio"))
    }

    @Test func getRefusesBadIDsAndUnknownContent() throws {
        guard let bin = CrashTests.binary else { print("getRefuses: skipped — stoq binary not built"); return }
        let store = tempDir("getstore")
        let bad = try CrashTests.stoq(bin, ["get", "stoq:nonsense", "-o", store + "/x", "--store", store])
        #expect(bad.status != 0 && bad.stderr.contains("not a content id"))
        let missing = try CrashTests.stoq(bin, ["get", ContentID(ChunkID.of([1])).description, "-o", store + "/x", "--store", store])
        #expect(missing.status != 0 && missing.stderr.contains("not in the store"))
    }
}
