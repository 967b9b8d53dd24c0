import Testing

@testable import HyperMesh
import STOQSimulation
import HyperMeshBenchmarks

func randomShards(_ count: Int, size: Int, using rng: inout SplitMix64) -> [[UInt8]] {
    (0..<count).map { _ in (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
}

/// All r-element subsets of 0..<n.
func combinations(_ n: Int, _ r: Int) -> [[Int]] {
    if r == 0 { return [[]] }
    if n < r { return [] }
    return combinations(n - 1, r - 1).map { $0 + [n - 1] } + combinations(n - 1, r)
}

@Suite struct ErasureCoderTests {
    @Test func everyPatternOfFourLostOutOfFourteenRebuildsBitIdentical() throws {
        let coder = try ErasureCoder()
        var rng = SplitMix64(seed: 14)
        let data = randomShards(10, size: 128, using: &rng)
        let all = try coder.encodeAll(data)
        #expect(all.count == 14)
        let patterns = combinations(14, 4)
        #expect(patterns.count == 1001)
        for lost in patterns {
            var slots: [[UInt8]?] = all
            for i in lost { slots[i] = nil }
            try coder.reconstruct(&slots)
            #expect(slots.map { $0! } == all, "pattern \(lost)")
        }
    }

    @Test func fiveLostGivesAClearErrorWithCounts() throws {
        let coder = try ErasureCoder()
        var rng = SplitMix64(seed: 5)
        let all = try coder.encodeAll(randomShards(10, size: 64, using: &rng))
        var slots: [[UInt8]?] = all
        for i in [0, 3, 7, 11, 13] { slots[i] = nil }
        let error = #expect(throws: HyperMeshError.self) { try coder.reconstruct(&slots) }
        #expect(error?.code == .notEnoughShards)
        #expect(error?.reason.contains("5 of 14 shards are missing") == true)
        #expect(error?.reason.contains("9 remain but 10 are needed") == true)
    }

    @Test func seededRandomRoundTrips() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        for round in 0..<40 {
            let k = Int.random(in: 1...16, using: &rng)
            let m = Int.random(in: 1...8, using: &rng)
            let size = Int.random(in: 1...700, using: &rng)
            let coder = try ErasureCoder(dataShards: k, parityShards: m)
            let data = randomShards(k, size: size, using: &rng)
            let all = try coder.encodeAll(data)
            var slots: [[UInt8]?] = all
            let lostCount = Int.random(in: 0...m, using: &rng)
            for i in Array(0..<(k + m)).shuffled(using: &rng).prefix(lostCount) { slots[i] = nil }
            let decoded = try coder.decodeData(slots)
            #expect(decoded == data, "seed \(seed) round \(round) k=\(k) m=\(m) size=\(size)")
            try coder.reconstruct(&slots)
            #expect(slots.map { $0! } == all, "seed \(seed) round \(round)")
        }
    }

    @Test func repairOnlyChosenShards() throws {
        let coder = try ErasureCoder()
        var rng = SplitMix64(seed: 7)
        let all = try coder.encodeAll(randomShards(10, size: 256, using: &rng))
        var slots: [[UInt8]?] = all
        for i in [1, 5, 10, 12] { slots[i] = nil }
        try coder.reconstruct(&slots, only: [5, 12])
        #expect(slots[5] == all[5] && slots[12] == all[12])
        #expect(slots[1] == nil && slots[10] == nil)
    }

    @Test func encodeIntoAndRebuildIntoMatchAllocatingForms() throws {
        let coder = try ErasureCoder(dataShards: 6, parityShards: 3)
        var rng = SplitMix64(seed: 9)
        let data = randomShards(6, size: 1000, using: &rng)
        var parity = [[UInt8]](repeating: [UInt8](repeating: 0, count: 1000), count: 3)
        try coder.encode(data, into: &parity)
        #expect(parity == (try coder.encode(data)))
        let all = data + parity
        var out = [[UInt8]](repeating: [UInt8](repeating: 0, count: 1000), count: 2)
        try coder.rebuild(
            sources: [2, 3, 4, 5, 6, 8].map { all[$0] }, sourceIndices: [2, 3, 4, 5, 6, 8], outputIndices: [0, 7], into: &out
        )
        #expect(out == [all[0], all[7]])
    }

    @Test func decodeTablesAreCachedPerPatternInABoundedLRU() throws {
        let coder = try ErasureCoder(dataShards: 4, parityShards: 2, decodeCacheSize: 3)
        var rng = SplitMix64(seed: 3)
        let all = try coder.encodeAll(randomShards(4, size: 32, using: &rng))
        for lost in [[0], [1], [0], [2], [3], [4]] {
            var slots: [[UInt8]?] = all
            for i in lost { slots[i] = nil }
            try coder.reconstruct(&slots)
            #expect(slots.map { $0! } == all)
        }
        #expect(coder.engine.cachedPatterns == 3)
    }

    @Test func rejectsBadParametersAndMismatchedShards() throws {
        #expect(throws: HyperMeshError.self) { try ErasureCoder(dataShards: 0, parityShards: 4) }
        #expect(throws: HyperMeshError.self) { try ErasureCoder(dataShards: 60, parityShards: 5) }
        let coder = try ErasureCoder(dataShards: 2, parityShards: 1)
        let e = #expect(throws: HyperMeshError.self) { try coder.encode([[1, 2], [3]]) }
        #expect(e?.code == .shardSizeMismatch)
        #expect(throws: HyperMeshError.self) { try coder.encode([[1, 2]]) }
        #expect(throws: HyperMeshError.self) { try coder.encode([[], []]) }
    }

    @Test func benchmarkEntryRunsAndChecksItsRebuild() throws {
        let r = try ErasureBenchmark.run(shardSize: 4096, minimumDuration: .milliseconds(5))
        #expect(r.encodeGBps > 0 && r.rebuildGBps > 0 && r.rebuildAllocatingGBps > 0)
        #expect(r.line.hasPrefix("swift k=10 m=4 shard=4096 encode_gbps="))
    }
}

@Suite struct ShardStripeTests {
    @Test func stripeEncodeAndRebuildMatchTheArrayForms() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<20 {
            let k = Int.random(in: 1...12, using: &rng), m = Int.random(in: 1...6, using: &rng)
            let size = Int.random(in: 1...300, using: &rng)
            let coder = try ErasureCoder(dataShards: k, parityShards: m)
            let data = randomShards(k, size: size, using: &rng)
            let all = try coder.encodeAll(data)
            let stripe = ShardStripe(shardCount: k + m, shardSize: size)
            for i in 0..<k { stripe.setShard(i, data[i]) }
            try coder.encode(stripe)
            #expect((0..<(k + m)).map { stripe.shard($0) } == all, "seed \(seed)")
            #expect((0..<(k + m)).allSatisfy { stripe.sha256($0) == Digest256.hashing(all[$0]) })
            let lost = Array(Array(0..<(k + m)).shuffled(using: &rng).prefix(Int.random(in: 1...m, using: &rng))).sorted()
            for i in lost { stripe.setShard(i, [UInt8](repeating: 0xAA, count: size)) }
            let sources = Array((0..<(k + m)).filter { !lost.contains($0) }.prefix(k))
            try coder.rebuild(stripe, sources: sources, outputs: lost)
            #expect((0..<(k + m)).map { stripe.shard($0) } == all, "seed \(seed) lost \(lost)")
        }
    }

    @Test func stripeRejectsBadIndicesAndPadsShortShards() throws {
        let coder = try ErasureCoder(dataShards: 3, parityShards: 2)
        let stripe = ShardStripe(shardCount: 5, shardSize: 10)
        stripe.fill([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], acrossShards: 3)
        #expect(stripe.shard(1) == [11, 12, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(stripe.shard(2) == [UInt8](repeating: 0, count: 10))
        #expect(throws: HyperMeshError.self) { try coder.rebuild(stripe, sources: [0, 1], outputs: [2]) }
        #expect(throws: HyperMeshError.self) { try coder.rebuild(stripe, sources: [2, 1, 0], outputs: [3]) }
        #expect(throws: HyperMeshError.self) { try coder.rebuild(stripe, sources: [0, 1, 2], outputs: [2]) }
        #expect(throws: HyperMeshError.self) { try coder.rebuild(stripe, sources: [0, 1, 2], outputs: [5]) }
        #expect(throws: HyperMeshError.self) { try coder.encode(ShardStripe(shardCount: 4, shardSize: 10)) }
    }
}
