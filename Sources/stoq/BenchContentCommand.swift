import ArgumentParser
import Crypto
import Foundation
import STOQContent

/// `stoq bench-content`: chunking and hashing throughput on one input, printed as JSON for
/// scripts/bench-content.sh (which runs pyfastcdc on the same bytes and prints the table).
struct BenchContent: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-content", abstract: "Content-layer throughput (used by scripts/bench-content.sh).", shouldDisplay: false)
    @Option(name: .long, help: "Input file (read into memory once).") var input: String
    @Option(name: .long) var min: Int = 4096
    @Option(name: .long) var avg: Int = 16384
    @Option(name: .long) var max: Int = 1 << 20
    @Option(name: .customLong("repeat"), help: "Repetitions per figure (best is reported).") var repetitions: Int = 3

    func run() throws {
        let data = try Array(Data(contentsOf: URL(fileURLWithPath: input)))
        let cdc = try FastCDC(minSize: min, avgSize: avg, maxSize: max)
        let fixed = try FixedSizeChunker(size: avg)
        func best(_ body: () throws -> Int) rethrows -> (gbps: Double, chunks: Int) {
            var top = 0.0, chunks = 0
            for _ in 0..<Swift.max(1, self.repetitions) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                chunks = try body()
                let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                top = Swift.max(top, Double(data.count) / 1e9 / s)
            }
            return (top, chunks)
        }
        // Cut only, one core: the hot loop over the whole buffer.
        let cut = best { cdc.boundaries(data).count }
        // Cut + SHA-256, one core, no streaming machinery.
        func cutAndHash(_ c: any Chunker) -> Int {
            var n = 0
            data.withUnsafeBytes { raw in
                var pos = 0
                while pos < raw.count {
                    let len = c.cut(UnsafeRawBufferPointer(rebasing: raw[pos...]))
                    _ = ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + len)]))
                    pos += len
                    n += 1
                }
            }
            return n
        }
        let cdcSha1 = best { cutAndHash(cdc) }
        let fixedSha1 = best { cutAndHash(fixed) }
        let fixedCut = best { fixed.boundariesCount(data) }
        // The streaming engine (reads segments, re-synchronises seams) on one and on all cores.
        let source = MemorySource(data)
        let stream1 = try best { try ChunkStreamer(chunker: cdc, workers: 1).records(source).count }
        let streamAll = try best { try ChunkStreamer(chunker: cdc, workers: 0).records(source).count }
        let sha = best { _ = SHA256.hash(data: data); return 1 }
        let obj: [String: Any] = [
            "bytes": data.count, "min": min, "avg": avg, "max": max, "cores": ProcessInfo.processInfo.activeProcessorCount,
            "cdc_cut_gbps_1core": cut.gbps, "cdc_chunks": cut.chunks,
            "cdc_sha_gbps_1core": cdcSha1.gbps, "fixed_sha_gbps_1core": fixedSha1.gbps, "fixed_cut_gbps_1core": fixedCut.gbps,
            "stream_cdc_sha_gbps_1core": stream1.gbps, "stream_cdc_sha_gbps_allcores": streamAll.gbps,
            "sha256_gbps_1core": sha.gbps,
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
    }
}

extension FixedSizeChunker {
    func boundariesCount(_ data: [UInt8]) -> Int {
        data.withUnsafeBytes { raw in
            var pos = 0, n = 0
            while pos < raw.count { pos += cut(UnsafeRawBufferPointer(rebasing: raw[pos...])); n += 1 }
            return n
        }
    }
}
