import Crypto
import Foundation
import STOQContent
import STOQSimulation
import STOQEdge

/// Cache benchmarks for `stoq bench`: every figure beside its peer from the same run.
public enum EdgeBenchmark {
    /// One capacity's outcome of ``zipf(items:requests:exponent:capacities:chunkSize:seed:)``.
    public struct ZipfResult: Sendable, Equatable {
        /// Cache capacity in chunks (the byte bound is this × the chunk size).
        public var capacityChunks: Int
        /// Hit ratio of ``LRUCachePolicy``.
        public var lruHitRatio: Double
        /// Hit ratio of ``TinyLFUCachePolicy``.
        public var tinyLFUHitRatio: Double
        /// `tinyLFUHitRatio / lruHitRatio`.
        public var ratio: Double { lruHitRatio == 0 ? .infinity : tinyLFUHitRatio / lruHitRatio }
    }

    /// A seeded Zipf workload: `requests` ranks in `0 ..< items`, rank `k` drawn with
    /// probability proportional to `1 / (k + 1)^exponent`.
    public static func zipfWorkload(items: Int, requests: Int, exponent: Double, seed: UInt64) -> [Int] {
        precondition(items > 0 && requests >= 0, "zipfWorkload: need items > 0")
        var cdf = [Double](repeating: 0, count: items)
        var sum = 0.0
        for k in 0..<items {
            sum += 1 / pow(Double(k + 1), exponent)
            cdf[k] = sum
        }
        var random = SplitMix64(seed: seed)
        var out = [Int]()
        out.reserveCapacity(requests)
        for _ in 0..<requests {
            let u = random.nextUnitDouble() * sum
            var lo = 0, hi = items - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
            }
            out.append(lo)
        }
        return out
    }

    /// A distinct chunk id per rank (SHA-256 of the rank), so popularity is unrelated to id order.
    public static func chunkIDs(count: Int, seed: UInt64) -> [ChunkID] {
        (0..<count).map { rank in
            var bytes = [UInt8](repeating: 0, count: 16)
            for i in 0..<8 {
                bytes[i] = UInt8(truncatingIfNeeded: UInt64(rank) >> UInt64(8 * i))
                bytes[8 + i] = UInt8(truncatingIfNeeded: seed >> UInt64(8 * i))
            }
            return ChunkID.of(bytes)
        }
    }

    /// Runs a workload through a policy the way an edge does (access; on a miss, admit).
    /// - Returns: the policy's stats at the end.
    public static func replay<P: CachePolicy>(_ policy: inout P, ids: [ChunkID], workload: [Int], size: Int) -> CacheStats {
        for rank in workload {
            let id = ids[rank]
            if policy.recordAccess(id, size: size) == .miss {
                _ = policy.admit(id, size: size)
            }
        }
        return policy.stats
    }

    /// Hit ratios of LRU and W-TinyLFU on one seeded Zipf workload at several capacities.
    /// - Parameters:
    ///   - items: distinct chunks.
    ///   - requests: accesses.
    ///   - exponent: Zipf skew (1.0 in the target).
    ///   - capacities: cache sizes in chunks.
    ///   - chunkSize: bytes per chunk.
    ///   - seed: the workload's seed.
    public static func zipf(items: Int = 100_000, requests: Int = 1_000_000, exponent: Double = 1.0, capacities: [Int] = [100, 1_000, 10_000], chunkSize: Int = 64 * 1024, seed: UInt64 = 42) -> [ZipfResult] {
        let workload = zipfWorkload(items: items, requests: requests, exponent: exponent, seed: seed)
        let ids = chunkIDs(count: items, seed: seed)
        return capacities.map { chunks in
            var lru = LRUCachePolicy(capacity: chunks * chunkSize)
            var tiny = TinyLFUCachePolicy(capacity: chunks * chunkSize, averageEntrySize: chunkSize)
            let l = replay(&lru, ids: ids, workload: workload, size: chunkSize)
            let t = replay(&tiny, ids: ids, workload: workload, size: chunkSize)
            return ZipfResult(capacityChunks: chunks, lruHitRatio: l.hitRatio, tinyLFUHitRatio: t.hitRatio)
        }
    }

    /// A printable table of ``zipf(items:requests:exponent:capacities:chunkSize:seed:)``.
    public static func zipfReport(items: Int = 100_000, requests: Int = 1_000_000, exponent: Double = 1.0, capacities: [Int] = [100, 1_000, 10_000], chunkSize: Int = 64 * 1024, seed: UInt64 = 42) -> String {
        let results = zipf(items: items, requests: requests, exponent: exponent, capacities: capacities, chunkSize: chunkSize, seed: seed)
        var lines = ["edge cache: Zipf(\(exponent)) over \(items) chunks of \(chunkSize) B, \(requests) requests, seed \(seed)",
                     "capacity(chunks)  capacity(MiB)   LRU hit   W-TinyLFU hit   TinyLFU/LRU"]
        for r in results {
            lines.append(String(format: "%16d  %13.1f   %7.4f   %13.4f   %11.3fx", r.capacityChunks, Double(r.capacityChunks * chunkSize) / 1_048_576, r.lruHitRatio, r.tinyLFUHitRatio, r.ratio))
        }
        return lines.joined(separator: "\n")
    }
}
