import ArgumentParser
import Foundation
import STOQContent

/// `stoq bench store`: the disk store at scale, pack files beside one file per chunk, in the same run.
///
/// Writes N small random records (committed in batches, as a put does), pins a manifest-like chunk that
/// names every third record, then measures random reads (index lookup + read + SHA-256 check; for packs
/// also reads within the verification interval, which check the record header and skip the hash), the
/// files and index bytes used, and a gc that drops two records in three (and, for packs, compacts them).
struct BenchStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "The disk store at scale: N small records in pack files beside one file per chunk (files used, index bytes per chunk, random reads/s, gc time).")
    @Option(help: "Records written to the pack-file store.") var chunks: Int = 1_000_000
    @Option(help: "Records written to the file-per-chunk store (the peer; slower, so fewer by default).") var fileChunks: Int = 100_000
    @Option(help: "Bytes per record.") var recordSize: Int = 256
    @Option(help: "Random reads measured.") var reads: Int = 200_000
    @Option(help: "Records per commit.") var batch: Int = 65_536
    @Option(help: "Work directory (default: a new folder under $TMPDIR); removed at the end.") var work: String?
    @Flag(help: "Print JSON instead of a table.") var json = false

    struct Figures: Codable {
        var format: String
        var chunks: Int
        var writeSeconds: Double
        var writeCPUSeconds: Double
        var filesUsed: Int
        var dataBytes: Int64
        var indexBytes: Int64
        var indexBytesPerChunk: Double
        var readsPerSecond: Double
        var readsPerCPUSecond: Double
        /// Reads within ``DiskChunkStore/verifyInterval`` (packs: header checked, no hash; files: as above).
        var trustedReadsPerSecond: Double
        var totalSeconds: Double
        var gcSeconds: Double
        var gcCPUSeconds: Double
        var gcRemoved: Int
        var filesAfterGC: Int
        var bytesAfterGC: Int64
    }

    func run() throws {
        let base = work ?? (NSTemporaryDirectory() + "/stoq-bench-store-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: base) }
        var out = [Figures]()
        for (format, n) in [(StoreFormat.packs, chunks), (StoreFormat.files, fileChunks)] where n > 0 {
            Console.shared.note("bench store: \(format.rawValue), \(n) records of \(recordSize) bytes ...")
            out.append(try measure(format: format, count: n, directory: base + "/" + format.rawValue))
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            Console.shared.result(String(decoding: try e.encode(out), as: UTF8.self))
            return
        }
        Console.shared.result("store at scale: \(recordSize)-byte random records, committed \(batch) per transaction; reads = random ids, index lookup + read + SHA-256 check")
        Console.shared.result("wall = elapsed; cpu = user + system CPU of this process (on a loaded machine compare the cpu figures)")
        Console.shared.result("| format | chunks | write s wall/cpu | chunks per cpu-s | files used | data bytes | index B/chunk | reads/s wall | reads per cpu-s | reads/s wall within the verify interval | gc s wall/cpu (drop 2/3) | files after gc | total s wall |")
        for f in out {
            Console.shared.result(String(format: "| %@ | %d | %.1f / %.1f | %.0f | %d | %lld | %.1f | %.0f | %.0f | %.0f | %.1f / %.1f | %d | %.0f |",
                                         f.format, f.chunks, f.writeSeconds, f.writeCPUSeconds, Double(f.chunks) / f.writeCPUSeconds, f.filesUsed, f.dataBytes,
                                         f.indexBytesPerChunk, f.readsPerSecond, f.readsPerCPUSecond, f.trustedReadsPerSecond, f.gcSeconds, f.gcCPUSeconds, f.filesAfterGC, f.totalSeconds))
        }
        if let p = out.first(where: { $0.format == "packs" }) {
            let billion = 1e9
            let packBytes = Double(p.dataBytes) / Double(p.chunks) * billion
            Console.shared.result(String(format: "a billion chunks of 16 KiB (the default average) in packs of 128 MiB: %.0f packs (%.1f TiB of chunks); the index at %.0f B/chunk is %.0f GiB (on disk, B-tree: a lookup reads ~4 pages; the tree's inner pages, ~1%%, %.1f GiB, fit in RAM); with these %d-byte records it would be %.0f packs.",
                                                 billion * 16384 / Double(128 << 20), billion * 16384 / Double(1 << 40), p.indexBytesPerChunk,
                                                 p.indexBytesPerChunk * billion / Double(1 << 30), p.indexBytesPerChunk * billion / Double(1 << 30) / 100,
                                                 recordSize, packBytes / Double(128 << 20)))
        }
    }

    func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func fileCount(_ dir: String) -> (Int, Int64) {
        var n = 0, bytes: Int64 = 0
        let e = FileManager.default.enumerator(atPath: dir)
        while e?.nextObject() != nil {
            if let a = e?.fileAttributes, (a[.type] as? FileAttributeType) == .typeRegular {
                n += 1
                bytes += (a[.size] as? NSNumber)?.int64Value ?? 0
            }
        }
        return (n, bytes)
    }

    func measure(format: StoreFormat, count: Int, directory: String) throws -> Figures {
        try? FileManager.default.removeItem(atPath: directory)
        let store = try DiskChunkStore(directory: directory, format: format)
        var rng = SystemRandomNumberGenerator()
        var ids = [ChunkID]()
        ids.reserveCapacity(count)
        var record = [UInt8](repeating: 0, count: recordSize)
        let t0 = Date(), c0 = cpuSeconds()
        var b = CommitBatch()
        for i in 0..<count {
            // Random bytes, cheaply: a counter and a random word at the front of a fixed buffer.
            var x = rng.next() as UInt64
            withUnsafeBytes(of: &x) { for (k, v) in $0.enumerated() { record[k] = v } }
            var j = UInt64(i)
            withUnsafeBytes(of: &j) { for (k, v) in $0.enumerated() { record[8 + k] = v } }
            let id = ChunkID.of(record)
            try store.writeChunk(id, record)
            b.chunks.append((id, record.count))
            ids.append(id)
            if b.chunks.count >= batch { try store.commit(b); b = CommitBatch() }
        }
        // The root: a chunk that names every third record, pinned.
        let root = Array("bench root \(count)".utf8)
        let rootID = ChunkID.of(root)
        try store.writeChunk(rootID, root)
        b.chunks.append((rootID, root.count))
        try store.commit(b)
        b = CommitBatch()
        // The index of chunk → place alone (before the edges gc needs, which any store has too).
        let foot = try store.footprint()
        for i in stride(from: 0, to: count, by: 3) {
            b.edges.append((rootID, ids[i]))
            if b.edges.count >= batch { try store.commit(b); b = CommitBatch() }
        }
        b.pins = [(ContentID(rootID), "bench")]
        try store.commit(b)
        let writeSeconds = Date().timeIntervalSince(t0), writeCPU = cpuSeconds() - c0
        let (files, bytes) = fileCount(directory)
        // Random reads, each hashed.
        store.verifyInterval = 0
        let t1 = Date(), c1 = cpuSeconds()
        for _ in 0..<reads {
            let id = ids[Int.random(in: 0..<count)]
            _ = try store.read(id)
        }
        let readSeconds = Date().timeIntervalSince(t1), readCPU = cpuSeconds() - c1
        // Random reads within the verification interval (the records were hashed when written).
        store.verifyInterval = DiskChunkStore.defaultVerifyInterval
        let t1b = Date()
        for _ in 0..<reads {
            let id = ids[Int.random(in: 0..<count)]
            _ = try store.read(id)
        }
        let trustedSeconds = Date().timeIntervalSince(t1b)
        // gc: two records in three go.
        let t2 = Date(), c2 = cpuSeconds()
        let gc = try store.gc()
        let gcSeconds = Date().timeIntervalSince(t2), gcCPU = cpuSeconds() - c2
        let (filesAfter, bytesAfter) = fileCount(directory)
        return Figures(format: format.rawValue, chunks: count, writeSeconds: writeSeconds, writeCPUSeconds: writeCPU, filesUsed: files,
                       dataBytes: format == .packs ? foot.packBytes : bytes - foot.indexBytes,
                       indexBytes: foot.indexBytes, indexBytesPerChunk: Double(foot.indexBytes) / Double(count),
                       readsPerSecond: Double(reads) / readSeconds, readsPerCPUSecond: Double(reads) / readCPU,
                       trustedReadsPerSecond: Double(reads) / trustedSeconds, totalSeconds: Date().timeIntervalSince(t0), gcSeconds: gcSeconds, gcCPUSeconds: gcCPU, gcRemoved: gc.removedChunks,
                       filesAfterGC: filesAfter, bytesAfterGC: bytesAfter)
    }
}
