import Foundation

/// Figures from one run of ``ErasureBenchmark/run(dataShards:parityShards:shardSize:lost:minimumDuration:seed:)``.
public struct ErasureBenchmarkResult: Hashable, Sendable {
    /// k.
    public let dataShards: Int
    /// m.
    public let parityShards: Int
    /// Bytes per shard.
    public let shardSize: Int
    /// Shards rebuilt per rebuild operation.
    public let lost: Int
    /// Encode throughput over the data bytes (k × shard size per call), GB/s (10⁹ bytes).
    public let encodeGBps: Double
    /// Rebuild throughput over the data bytes (k × shard size per call), GB/s, into caller buffers.
    public let rebuildGBps: Double
    /// Rebuild throughput with `reconstruct`, which allocates the rebuilt shards, GB/s.
    public let rebuildAllocatingGBps: Double
    /// Encode calls timed.
    public let encodeIterations: Int
    /// Rebuild calls timed.
    public let rebuildIterations: Int

    /// One machine-readable line: `swift k=… m=… shard=… encode_gbps=… rebuildN_gbps=… …`.
    public var line: String {
        func f(_ x: Double) -> String { String(format: "%.3f", x) }
        return "swift k=\(dataShards) m=\(parityShards) shard=\(shardSize) encode_gbps=\(f(encodeGBps)) "
            + "rebuild\(lost)_gbps=\(f(rebuildGBps)) rebuild\(lost)_alloc_gbps=\(f(rebuildAllocatingGBps)) "
            + "iterations=\(encodeIterations)/\(rebuildIterations)"
    }
}

/// The erasure-coding benchmark behind `stoq bench` and `scripts/bench-erasure.sh`.
///
/// It times the public ``ErasureCoder`` calls on real random data: `encode(_:into:)` and
/// `rebuild(sources:sourceIndices:outputIndices:into:)` for `lost` missing data shards (the
/// worst case: data shards must be rebuilt from parity), checks once that the rebuild is
/// bit-identical, and reports GB/s over the k × shard-size data bytes of each call — the same
/// measure the raw ISA-L harness (scripts/bench/isal_bench.c) prints.
public enum ErasureBenchmark {
    /// Runs the benchmark.
    /// - Parameters:
    ///   - dataShards: k (default 10).
    ///   - parityShards: m (default 4).
    ///   - shardSize: bytes per shard (default 1 MiB).
    ///   - lost: data shards lost and rebuilt (default 4, at most m).
    ///   - minimumDuration: time per measured loop.
    ///   - seed: seed for the random data.
    public static func run(
        dataShards: Int = 10, parityShards: Int = 4, shardSize: Int = 1 << 20, lost: Int = 4,
        minimumDuration: Duration = .seconds(1), seed: UInt64 = 1
    ) throws -> ErasureBenchmarkResult {
        guard lost >= 1, lost <= parityShards, lost <= dataShards else {
            throw HyperMeshError(.invalidParameters, "lost must be in 1...min(k, m)")
        }
        let coder = try ErasureCoder(dataShards: dataShards, parityShards: parityShards)
        var rng = SplitMix64(seed: seed)
        let data: [[UInt8]] = (0..<dataShards).map { _ in
            var shard = [UInt8](repeating: 0, count: shardSize)
            shard.withUnsafeMutableBytes { raw in
                var i = 0
                while i + 8 <= raw.count {
                    raw.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
                    i += 8
                }
                while i < raw.count {
                    raw[i] = UInt8(truncatingIfNeeded: rng.next())
                    i += 1
                }
            }
            return shard
        }
        var parity = [[UInt8]](repeating: [UInt8](repeating: 0, count: shardSize), count: parityShards)
        let bytesPerCall = Double(dataShards * shardSize)

        // Encode.
        try coder.encode(data, into: &parity)  // warm-up
        let (encodeIterations, encodeTime) = try timeLoop(minimumDuration) { try coder.encode(data, into: &parity) }

        // Rebuild `lost` data shards from the remaining data and parity shards.
        let all = data + parity
        let outputIndices = Array(0..<lost)
        let sourceIndices = Array(lost..<(lost + dataShards))
        let sources = sourceIndices.map { all[$0] }
        var outputs = [[UInt8]](repeating: [UInt8](repeating: 0, count: shardSize), count: lost)
        try coder.rebuild(sources: sources, sourceIndices: sourceIndices, outputIndices: outputIndices, into: &outputs)
        guard outputs == Array(data[0..<lost]) else {
            throw HyperMeshError(.shardCorrupted, "benchmark rebuild is not bit-identical")
        }
        let (rebuildIterations, rebuildTime) = try timeLoop(minimumDuration) {
            try coder.rebuild(sources: sources, sourceIndices: sourceIndices, outputIndices: outputIndices, into: &outputs)
        }

        // Rebuild through the allocating API.
        var slots: [[UInt8]?] = all
        for i in outputIndices { slots[i] = nil }
        let (allocIterations, allocTime) = try timeLoop(minimumDuration) {
            var copy = slots
            try coder.reconstruct(&copy, only: outputIndices)
        }

        return ErasureBenchmarkResult(
            dataShards: dataShards, parityShards: parityShards, shardSize: shardSize, lost: lost,
            encodeGBps: bytesPerCall * Double(encodeIterations) / seconds(encodeTime) / 1e9,
            rebuildGBps: bytesPerCall * Double(rebuildIterations) / seconds(rebuildTime) / 1e9,
            rebuildAllocatingGBps: bytesPerCall * Double(allocIterations) / seconds(allocTime) / 1e9,
            encodeIterations: encodeIterations, rebuildIterations: rebuildIterations
        )
    }

    private static func timeLoop(_ minimum: Duration, _ body: () throws -> Void) throws -> (Int, Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        var iterations = 0
        var elapsed = Duration.zero
        repeat {
            for _ in 0..<8 { try body() }
            iterations += 8
            elapsed = clock.now - start
        } while elapsed < minimum
        return (iterations, elapsed)
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// SplitMix64: a small seeded generator for benchmarks and tests.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    /// Creates a generator from a seed.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
