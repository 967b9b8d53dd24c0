import STOQSimulation
import STOQWire
import Testing
@testable import STOQSwarm
import STOQBenchmarks

/// The scheduler against simulated sources on a virtual clock. Every check prints the seed.
struct SwarmSimulationTests {
    typealias Spec = SwarmSimulation.SourceSpec

    static func expectComplete(_ result: SwarmSimulation.Result, chunkCount: Int, _ comment: String = "") {
        #expect(result.completed, "seed \(result.seed) \(comment): did not complete: \(result.failure?.description ?? "deadline")")
        #expect(result.progress.chunksDone == chunkCount, "seed \(result.seed) \(comment)")
        #expect(result.progress.bytesDone == result.progress.totalBytes, "seed \(result.seed) \(comment)")
    }

    @Test func completesWithEveryChunkVerified() {
        for seed: UInt64 in [1, 2, 3] {
            var scenario = SwarmSimulation.Scenario(
                chunkCount: 40, chunkSize: 64 << 10,
                sources: (0 ..< 4).map { Spec(rateBytesPerSecond: Double(1 + $0) * 1e6) }, seed: seed)
            scenario.lastChunkSize = 1234
            let result = SwarmSimulation.run(scenario)
            Self.expectComplete(result, chunkCount: 40)
            #expect(result.verifiedChunks == 40, "seed \(seed)")
            #expect(result.rejectedChunks == 0, "seed \(seed)")
            #expect(result.progress.sources.reduce(0) { $0 + $1.bytesDelivered } == result.progress.totalBytes, "seed \(seed)")
        }
    }

    @Test(arguments: [2, 4, 8])
    func goodputReachesNinetyPercent(sources: Int) {
        for seed: UInt64 in [11, 12] {
            let figure = SwarmBenchmark.goodput(sources: sources, seed: seed)
            #expect(figure.completed, "seed \(seed)")
            #expect(figure.ratio >= 0.9, "seed \(seed): goodput ratio \(figure.ratio) with \(sources) sources, bytes \(figure.bytesPerSource)")
        }
    }

    @Test func slowSourceGetsProportionallyFewerBytes() {
        let seed: UInt64 = 21
        let scenario = SwarmSimulation.Scenario(
            chunkCount: 96, chunkSize: 128 << 10,
            sources: [Spec(rateBytesPerSecond: 1e6), Spec(rateBytesPerSecond: 4e6), Spec(rateBytesPerSecond: 4e6)], seed: seed)
        let result = SwarmSimulation.run(scenario)
        Self.expectComplete(result, chunkCount: 96)
        let bytes = result.bytesPerSource
        let share = Double(bytes[0]) / Double(bytes.reduce(0, +))
        // Its rate share is 1/9 ≈ 0.11.
        #expect(share > 0.04 && share < 0.2, "seed \(seed): slow share \(share), bytes \(bytes)")
        #expect(bytes[0] * 2 < bytes[1] && bytes[0] * 2 < bytes[2], "seed \(seed): bytes \(bytes)")
    }

    @Test func killedSourceFailsOverWithinBudget() {
        let (figure, times, incomplete) = SwarmBenchmark.failover(runs: 60, seed: 100)
        #expect(incomplete.isEmpty, "seeds that did not complete: \(incomplete)")
        #expect(times.count == 60)
        #expect(figure.p99 <= 500, "failover p99 \(figure.p99) ms (p50 \(figure.p50), max \(figure.max)), seeds from 100")
        #expect(figure.p99 <= 260, "failover p99 \(figure.p99) ms misses the 200 ms goal by far")
    }

    @Test func healthEventFailsOverImmediately() {
        var scenario = SwarmSimulation.Scenario(
            chunkCount: 48, chunkSize: 128 << 10,
            sources: [Spec(rateBytesPerSecond: 2e6, killAt: .milliseconds(400)), Spec(rateBytesPerSecond: 2e6), Spec(rateBytesPerSecond: 2e6)], seed: 31)
        scenario.healthDetectionDelay = .milliseconds(5)
        scenario.configuration.maxStallTimeout = 450_000_000
        scenario.configuration.minStallTimeout = 450_000_000
        let result = SwarmSimulation.run(scenario)
        Self.expectComplete(result, chunkCount: 48)
        let failover = result.failoverTimes.first?.milliseconds ?? .infinity
        #expect(failover <= 6, "seed 31: failover \(failover) ms after a down event 5 ms after the kill")
        #expect(result.progress.sources[0].state == .down)
    }

    @Test func corruptSourceIsBannedAndFetchCompletes() {
        for seed: UInt64 in [41, 42] {
            let scenario = SwarmSimulation.Scenario(
                chunkCount: 32, chunkSize: 64 << 10,
                sources: [Spec(rateBytesPerSecond: 3e6, behavior: .corrupt), Spec(rateBytesPerSecond: 2e6), Spec(rateBytesPerSecond: 1e6)], seed: seed)
            let result = SwarmSimulation.run(scenario)
            Self.expectComplete(result, chunkCount: 32)
            #expect(result.rejectedChunks >= 1, "seed \(seed)")
            #expect(result.verifiedChunks == 32, "seed \(seed)")
            #expect(result.progress.sources[0].bytesDelivered == 0, "seed \(seed)")
            guard case .banned(.corruptChunk) = result.progress.sources[0].state else {
                Issue.record("seed \(seed): corrupt source not banned: \(result.progress.sources[0].state)")
                continue
            }
        }
    }

    @Test func stallForeverSourceDoesNotBlockCompletion() {
        for seed: UInt64 in [51, 52] {
            let scenario = SwarmSimulation.Scenario(
                chunkCount: 32, chunkSize: 64 << 10,
                sources: [Spec(rateBytesPerSecond: 5e6, behavior: .stallForever), Spec(rateBytesPerSecond: 2e6), Spec(rateBytesPerSecond: 2e6, behavior: .stallAfter(bytes: 300_000))],
                seed: seed)
            let result = SwarmSimulation.run(scenario)
            Self.expectComplete(result, chunkCount: 32)
            #expect(result.progress.sources[0].bytesDelivered == 0)
            #expect(result.progress.sources[0].stalls >= 1)
            #expect(result.progress.sources[2].stalls >= 1)
            // 2 MiB from one 2 MB/s source takes about 1 s; stalls must not add much.
            #expect(result.duration.seconds < 2.5, "seed \(seed): took \(result.duration)")
        }
    }

    @Test func resumeNeverRequestsPresentChunks() {
        var scenario = SwarmSimulation.Scenario(
            chunkCount: 64, chunkSize: 32 << 10,
            sources: (0 ..< 3).map { _ in Spec(rateBytesPerSecond: 2e6) }, seed: 61)
        scenario.present = Array(stride(from: 0, to: 64, by: 2)) + [63]
        let result = SwarmSimulation.run(scenario)
        Self.expectComplete(result, chunkCount: 64)
        #expect(result.requestsForPresentChunks == 0, "seed 61")
        #expect(result.progress.bytesPresentAtStart == 33 * (32 << 10))
        #expect(result.progress.sources.reduce(0) { $0 + $1.bytesDelivered } == 31 * (32 << 10))
    }

    @Test func notFoundSourceAndMissingChunk() {
        // Source 0 lacks chunks 0..<8 without saying so in its HAVE: it answers notFound.
        var scenario = SwarmSimulation.Scenario(
            chunkCount: 16, chunkSize: 32 << 10,
            sources: [Spec(rateBytesPerSecond: 4e6, behavior: .notFound(Set(0 ..< 8))), Spec(rateBytesPerSecond: 1e6)], seed: 71)
        var result = SwarmSimulation.run(scenario)
        Self.expectComplete(result, chunkCount: 16)
        // Nobody has chunk 3: the fetch fails and says which chunk.
        scenario.sources[1].behavior = .notFound([3])
        result = SwarmSimulation.run(scenario)
        #expect(!result.completed)
        #expect(result.failure?.chunkIndices == [3], "seed 71: \(String(describing: result.failure))")
    }

    @Test func threeHundredSourcesWithPartialBitfields() {
        let seed: UInt64 = 81
        var random = SimRandom(seed: seed)
        let chunkCount = 600
        var specs: [Spec] = []
        for number in 0 ..< 300 {
            var have = ChunkBitfield(count: chunkCount)
            for index in 0 ..< chunkCount where random.nextUnitDouble() < 0.05 { have[index] = true }
            // Every chunk is held by someone: source i also holds chunks i and i + 300.
            have[number] = true
            have[number + 300] = true
            let behavior: SwarmSimulation.Behavior = number % 50 == 7 ? .corrupt : (number % 50 == 13 ? .stallForever : .honest)
            specs.append(Spec(rateBytesPerSecond: 2e5 + Double(random.nextIndex(10)) * 1e5, oneWayLatency: .milliseconds(Double(5 + random.nextIndex(40))), behavior: behavior, have: have, killAt: number % 50 == 21 ? .milliseconds(300) : nil))
        }
        var scenario = SwarmSimulation.Scenario(chunkCount: chunkCount, chunkSize: 16 << 10, sources: specs, receiverRateBytesPerSecond: 50e6, seed: seed)
        scenario.segmentSize = 16 << 10
        let result = SwarmSimulation.run(scenario)
        Self.expectComplete(result, chunkCount: chunkCount, "300 sources")
        #expect(result.verifiedChunks == chunkCount)
        let used = result.progress.sources.filter { $0.bytesDelivered > 0 }.count
        #expect(used > 100, "seed \(seed): only \(used) sources delivered")
    }

    @Test func everyFaultAtOnce() {
        // A slow source, a fast one, one stalling forever, one corrupt, one killed mid-transfer.
        for seed: UInt64 in [101, 102, 103] {
            let scenario = SwarmSimulation.Scenario(
                chunkCount: 64, chunkSize: 128 << 10,
                sources: [
                    Spec(rateBytesPerSecond: 0.5e6, oneWayLatency: .milliseconds(30)),
                    Spec(rateBytesPerSecond: 6e6, oneWayLatency: .milliseconds(5)),
                    Spec(rateBytesPerSecond: 4e6, behavior: .stallForever),
                    Spec(rateBytesPerSecond: 4e6, behavior: .corrupt),
                    Spec(rateBytesPerSecond: 4e6, killAt: .milliseconds(300)),
                ],
                receiverRateBytesPerSecond: 20e6, seed: seed)
            let result = SwarmSimulation.run(scenario)
            Self.expectComplete(result, chunkCount: 64, "every fault")
            #expect(result.verifiedChunks == 64)
            let sources = result.progress.sources
            #expect(sources[2].bytesDelivered == 0 && sources[3].bytesDelivered == 0, "seed \(seed)")
            guard case .banned = sources[3].state else { Issue.record("seed \(seed): corrupt source not banned"); continue }
            #expect(sources[0].bytesDelivered < sources[1].bytesDelivered, "seed \(seed): \(result.bytesPerSource)")
            #expect((result.failoverTimes.first?.milliseconds ?? .infinity) <= 500, "seed \(seed): failover \(result.failoverTimes)")
            // 8 MiB from about 10.5 MB/s of honest sources: about 0.8 s; allow the faults 1 s more.
            #expect(result.duration.seconds < 1.8, "seed \(seed): took \(result.duration)")
        }
    }

    @Test func deterministicFromSeed() {
        let scenario = SwarmBenchmark.failoverScenario(seed: 91)
        let a = SwarmSimulation.run(scenario)
        let b = SwarmSimulation.run(scenario)
        #expect(a.duration == b.duration && a.bytesPerSource == b.bytesPerSource && a.requestsIssued == b.requestsIssued, "seed 91")
    }
}
