import Crypto
import Foundation
import STOQContent

/// `stoq bench content`: chunking and hashing throughput on one input, as one JSON object for
/// scripts/bench-content.sh (which runs pyfastcdc on the same bytes and prints the table).
public enum ContentBenchmark {
    /// Measures every figure on the bytes of `input` and returns them as one line of JSON
    /// (sorted keys; the names are what scripts/bench-content.sh reads).
    ///
    /// - Parameters:
    ///   - input: file read into memory once.
    ///   - min: FastCDC minimum chunk size.
    ///   - avg: FastCDC average chunk size (and the fixed-size chunker's size).
    ///   - max: FastCDC maximum chunk size.
    ///   - repetitions: runs per figure; the best is reported.
    public static func run(input: String, min: Int = 4096, avg: Int = 16384, max: Int = 1 << 20, repetitions: Int = 3) throws -> String {
        let data = try Array(Data(contentsOf: URL(fileURLWithPath: input)))
        let cdc = try FastCDC(minSize: min, avgSize: avg, maxSize: max)
        let fixed = try FixedSizeChunker(size: avg)
        // Each figure is the best of N runs, by wall clock and by CPU time (thread CPU time for one-core
        // figures, process CPU time for all-core figures). On a shared, loaded machine the CPU-time figure
        // is the per-core speed; the wall figure is what this run actually got.
        func cpuSeconds(_ clock: clockid_t) -> Double {
            var ts = timespec()
            clock_gettime(clock, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }
        func best(threads: Bool = false, _ body: () throws -> Int) rethrows -> (gbps: Double, cpu: Double, chunks: Int) {
            var top = 0.0, topCPU = 0.0, chunks = 0
            let clock = threads ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_THREAD_CPUTIME_ID
            for _ in 0..<Swift.max(1, repetitions) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let c0 = cpuSeconds(clock)
                chunks = try body()
                let c = cpuSeconds(clock) - c0
                let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                top = Swift.max(top, Double(data.count) / 1e9 / s)
                topCPU = Swift.max(topCPU, Double(data.count) / 1e9 / c)
            }
            return (top, topCPU, chunks)
        }
        // Cut only, one core: the hot loop over the whole buffer.
        let cut = best { cdc.boundaries(data).count }
        // Cut + SHA-256, one core, no streaming machinery.
        func cutAndHash(_ c: any Chunker) -> Int { data.withUnsafeBytes { Self.cutAndHash(c, $0) } }
        let cdcSha1 = best { cutAndHash(cdc) }
        let fixedSha1 = best { cutAndHash(fixed) }
        // The streaming engine (reads segments, re-synchronises seams) on one and on all cores.
        let source = MemorySource(data)
        let stream1 = try best { try ChunkStreamer(chunker: cdc, workers: 1).records(source).count }
        let streamAll = try best(threads: true) { try ChunkStreamer(chunker: cdc, workers: 0).records(source).count }
        let streamFixedAll = try best(threads: true) { try ChunkStreamer(chunker: fixed, workers: 0).records(source).count }
        let sha = best { _ = SHA256.hash(data: data); return 1 }
        // Ceilings for the all-core figures: each core takes 1/N of the buffer in place (no streaming,
        // no reads, no seams): SHA-256 alone, and cut + SHA-256 (each part cut from its own start).
        let cores = ProcessInfo.processInfo.activeProcessorCount
        func split(_ body: @escaping @Sendable (UnsafeRawBufferPointer) -> Int) -> Int {
            let counts = Counts(cores)
            let d = data
            DispatchQueue.concurrentPerform(iterations: cores) { i in
                d.withUnsafeBytes { raw in
                    let lo = raw.count * i / cores, hi = raw.count * (i + 1) / cores
                    counts.set(i, body(UnsafeRawBufferPointer(rebasing: raw[lo..<hi])))
                }
            }
            return counts.sum
        }
        let shaAll = best(threads: true) { split { _ = ChunkID.of($0); return 1 } }
        let splitAll = best(threads: true) { [cdc] in
            split { Self.cutAndHash(cdc, $0) }
        }
        let obj: [String: Any] = [
            "bytes": data.count, "min": min, "avg": avg, "max": max, "cores": ProcessInfo.processInfo.activeProcessorCount,
            "cdc_cut_gbps_1core": cut.gbps, "cdc_chunks": cut.chunks, "cdc_cut_gbps_1core_cpu": cut.cpu,
            "cdc_sha_gbps_1core": cdcSha1.gbps, "cdc_sha_gbps_1core_cpu": cdcSha1.cpu,
            "fixed_sha_gbps_1core": fixedSha1.gbps, "fixed_sha_gbps_1core_cpu": fixedSha1.cpu,
            "stream_cdc_sha_gbps_1core": stream1.gbps, "stream_cdc_sha_gbps_1core_cpu": stream1.cpu,
            "stream_cdc_sha_gbps_allcores": streamAll.gbps, "stream_cdc_sha_cpu_seconds_per_gb_allcores": 1 / streamAll.cpu,
            "sha256_gbps_1core": sha.gbps, "sha256_gbps_1core_cpu": sha.cpu,
            "sha256_gbps_allcores": shaAll.gbps, "split_cdc_sha_gbps_allcores": splitAll.gbps,
            "stream_fixed_sha_gbps_allcores": streamFixedAll.gbps,
            "stream_cdc_sha_chunks_allcores": streamAll.chunks,
            "loadavg": (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8).split(separator: " ").first.map(String.init) ?? "") ?? "",
        ]
        return String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self)
    }
}

extension ContentBenchmark {
    /// Cuts `raw` from its start and hashes every chunk; returns the number of chunks.
    static func cutAndHash(_ c: any Chunker, _ raw: UnsafeRawBufferPointer) -> Int {
        var pos = 0, n = 0
        while pos < raw.count {
            let len = c.cut(UnsafeRawBufferPointer(rebasing: raw[pos...]))
            _ = ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + len)]))
            pos += len
            n += 1
        }
        return n
    }
}

/// Per-iteration results of a `concurrentPerform`, written under `lock` (unchecked: the lock guards `slots`).
final class Counts: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Int]
    init(_ n: Int) { slots = Array(repeating: 0, count: n) }
    func set(_ i: Int, _ v: Int) { lock.lock(); slots[i] = v; lock.unlock() }
    var sum: Int { lock.lock(); defer { lock.unlock() }; return slots.reduce(0, +) }
}
