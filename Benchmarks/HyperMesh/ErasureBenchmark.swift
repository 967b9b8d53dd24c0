import Foundation
import STOQSimulation
import HyperMesh

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
    /// Encode throughput over the data bytes (k × shard size per call), GB/s (10⁹ bytes), on a
    /// 64-byte-aligned ``ShardStripe`` (the layout the ISA-L harness uses).
    public let encodeGBps: Double
    /// Rebuild throughput over the data bytes (k × shard size per call), GB/s, on a ``ShardStripe``.
    public let rebuildGBps: Double
    /// Encode throughput on `[[UInt8]]` shards into caller buffers (`encode(_:into:)`), GB/s.
    public let encodeArraysGBps: Double
    /// Rebuild throughput on `[[UInt8]]` shards into caller buffers, GB/s.
    public let rebuildArraysGBps: Double
    /// Rebuild throughput on `[[UInt8]]` with `reconstruct`, which allocates the rebuilt shards, GB/s.
    public let rebuildAllocatingGBps: Double
    /// Encode calls timed.
    public let encodeIterations: Int
    /// Rebuild calls timed.
    public let rebuildIterations: Int

    /// One machine-readable line: `swift k=… m=… shard=… encode_gbps=… rebuildN_gbps=… …`.
    public var line: String {
        func f(_ x: Double) -> String { String(format: "%.3f", x) }
        return "swift k=\(dataShards) m=\(parityShards) shard=\(shardSize) encode_gbps=\(f(encodeGBps)) "
            + "rebuild\(lost)_gbps=\(f(rebuildGBps)) arrays_encode_gbps=\(f(encodeArraysGBps)) "
            + "arrays_rebuild\(lost)_gbps=\(f(rebuildArraysGBps)) arrays_rebuild\(lost)_alloc_gbps=\(f(rebuildAllocatingGBps)) "
            + "iterations=\(encodeIterations)/\(rebuildIterations)"
    }
}

/// The erasure-coding benchmark behind `stoq bench` and `scripts/bench-erasure.sh`.
///
/// It times the public ``ErasureCoder`` calls on real random data — headline figures on a
/// ``ShardStripe`` (`encode(_:)`, `rebuild(_:sources:outputs:)`), secondary ones on `[[UInt8]]`
/// shards (`encode(_:into:)`, `rebuild(sources:sourceIndices:outputIndices:into:)`, and the
/// allocating `reconstruct`) — for `lost` missing data shards (the worst case: data shards must be
/// rebuilt from parity). It checks that every rebuild is bit-identical and reports GB/s over the
/// k × shard-size data bytes of each call, the measure the raw ISA-L harness
/// (scripts/bench/isal_bench.c) prints.
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

        let all = data + (try coder.encode(data))
        let outputIndices = Array(0..<lost)
        let sourceIndices = Array(lost..<(lost + dataShards))

        // Stripe: encode, then rebuild `lost` data shards from the next k shards.
        let stripe = ShardStripe(shardCount: dataShards + parityShards, shardSize: shardSize)
        for i in 0..<dataShards { stripe.setShard(i, data[i]) }
        try coder.encode(stripe)  // warm-up
        let (stripeEncodeIterations, stripeEncodeTime) = try timeLoop(minimumDuration) { try coder.encode(stripe) }
        guard (0..<all.count).allSatisfy({ stripe.shardEquals($0, all[$0]) }) else {
            throw HyperMeshError(.shardCorrupted, "benchmark stripe parity differs from array parity")
        }
        let (stripeRebuildIterations, stripeRebuildTime) = try timeLoop(minimumDuration) {
            try coder.rebuild(stripe, sources: sourceIndices, outputs: outputIndices)
        }
        for i in outputIndices { stripe.setShard(i, []) }
        try coder.rebuild(stripe, sources: sourceIndices, outputs: outputIndices)
        guard outputIndices.allSatisfy({ stripe.shardEquals($0, data[$0]) }) else {
            throw HyperMeshError(.shardCorrupted, "benchmark stripe rebuild is not bit-identical")
        }

        // Arrays: encode into caller buffers.
        try coder.encode(data, into: &parity)
        let (encodeIterations, encodeTime) = try timeLoop(minimumDuration) { try coder.encode(data, into: &parity) }

        // Arrays: rebuild into caller buffers.
        let sources = sourceIndices.map { all[$0] }
        var outputs = [[UInt8]](repeating: [UInt8](repeating: 0, count: shardSize), count: lost)
        try coder.rebuild(sources: sources, sourceIndices: sourceIndices, outputIndices: outputIndices, into: &outputs)
        guard outputs == Array(data[0..<lost]) else {
            throw HyperMeshError(.shardCorrupted, "benchmark rebuild is not bit-identical")
        }
        let (rebuildIterations, rebuildTime) = try timeLoop(minimumDuration) {
            try coder.rebuild(sources: sources, sourceIndices: sourceIndices, outputIndices: outputIndices, into: &outputs)
        }

        // Arrays: rebuild through the allocating API.
        var slots: [[UInt8]?] = all
        for i in outputIndices { slots[i] = nil }
        let (allocIterations, allocTime) = try timeLoop(minimumDuration) {
            var copy = slots
            try coder.reconstruct(&copy, only: outputIndices)
        }

        func gbps(_ iterations: Int, _ time: Duration) -> Double { bytesPerCall * Double(iterations) / seconds(time) / 1e9 }
        return ErasureBenchmarkResult(
            dataShards: dataShards, parityShards: parityShards, shardSize: shardSize, lost: lost,
            encodeGBps: gbps(stripeEncodeIterations, stripeEncodeTime),
            rebuildGBps: gbps(stripeRebuildIterations, stripeRebuildTime),
            encodeArraysGBps: gbps(encodeIterations, encodeTime),
            rebuildArraysGBps: gbps(rebuildIterations, rebuildTime),
            rebuildAllocatingGBps: gbps(allocIterations, allocTime),
            encodeIterations: stripeEncodeIterations, rebuildIterations: stripeRebuildIterations
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
