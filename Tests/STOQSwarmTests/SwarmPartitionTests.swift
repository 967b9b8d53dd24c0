import STOQSimulation
import Testing
@testable import STOQSwarm

/// A swarm fetch through a partition and its healing, on the virtual clock. Seeded; every check
/// names its seed.
///
/// The bound after the heal: the fetch resumes within one ``SwarmConfiguration/maxBackoff``
/// (5 s: a source that stalled again and again backs off at most that long) plus a second, or
/// within the health detection delay plus a second when health probing reports the sources down
/// and up again; every chunk is verified, none is lost or fetched twice into the result.
struct SwarmPartitionTests {
    typealias Spec = SwarmSimulation.SourceSpec

    static func scenario(seed: UInt64, partitions: [SwarmSimulation.Partition], health: SimDuration? = nil) -> SwarmSimulation.Scenario {
        var scenario = SwarmSimulation.Scenario(
            chunkCount: 64, chunkSize: 128 << 10,
            // Rates and latencies vary with the seed (the run is otherwise jitter-free).
            sources: [Spec(rateBytesPerSecond: 3e6 + Double(seed % 5) * 1e5, oneWayLatency: .milliseconds(Double(5 + seed % 7))),
                      Spec(rateBytesPerSecond: 2e6, oneWayLatency: .milliseconds(Double(20 + seed % 13))),
                      Spec(rateBytesPerSecond: 2e6 - Double(seed % 3) * 1e5)],
            seed: seed)
        scenario.partitions = partitions
        scenario.healthDetectionDelay = health
        return scenario
    }

    /// Time to fetch `bytes` at the honest sources' combined rate (at least 6.8 MB/s), as a bound with room.
    static func transferBound(_ bytes: Int) -> Double { Double(bytes) / 6.8e6 * 1.5 + 0.5 }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func everySourceCutOffForFiveSecondsThenTheFetchResumesAndCompletes(seed: UInt64) {
        let partition = SwarmSimulation.Partition(sources: [0, 1, 2], start: .milliseconds(300), duration: .seconds(5))
        let result = SwarmSimulation.run(Self.scenario(seed: seed, partitions: [partition]))
        SwarmSimulationTests.expectComplete(result, chunkCount: 64, "all sources partitioned")
        #expect(result.verifiedChunks == 64 && result.rejectedChunks == 0, "seed \(seed)")
        // Nothing but stall timers saw the cut: each source stalled, none was banned or removed.
        for source in result.progress.sources {
            #expect(source.stalls >= 1, "seed \(seed): \(source.id) never stalled")
            #expect(source.state == .active || { if case .backingOff = source.state { true } else { false } }(), "seed \(seed): \(source.id) \(source.state)")
        }
        let healed = (partition.start + partition.duration).seconds
        let bound = healed + 5 + 1 + Self.transferBound(64 * (128 << 10))
        #expect(result.duration.seconds <= bound, "seed \(seed): took \(result.duration), bound \(bound) s")
        print("swarm, every source cut off 0.3-5.3 s, seed \(seed): done at \(result.duration) (bound \(bound) s), bytes \(result.bytesPerSource)")
    }

    @Test(arguments: [4, 5] as [UInt64])
    func withHealthProbingTheFetchResumesAsSoonAsTheSourcesAreUpAgain(seed: UInt64) {
        let partition = SwarmSimulation.Partition(sources: [0, 1, 2], start: .milliseconds(300), duration: .seconds(5))
        let detection = SimDuration.milliseconds(700)  // 1 s probes would take 0.3-1.3 s; the middle
        let result = SwarmSimulation.run(Self.scenario(seed: seed, partitions: [partition], health: detection))
        SwarmSimulationTests.expectComplete(result, chunkCount: 64, "all sources partitioned, health probing")
        let healed = (partition.start + partition.duration + detection).seconds
        let bound = healed + 1 + Self.transferBound(64 * (128 << 10))
        #expect(result.duration.seconds <= bound, "seed \(seed): took \(result.duration), bound \(bound) s")
        #expect(result.progress.sources.allSatisfy { $0.state == .active }, "seed \(seed): \(result.progress.sources.map(\.state))")
    }

    @Test(arguments: [6, 7] as [UInt64])
    func sourcesCutOffMidFetchLoseTheirWorkToTheOthersAndComeBack(seed: UInt64) {
        // Sources 0 and 1 cut off for 2 s mid-fetch; source 2 carries on alone, then 0 and 1 rejoin.
        var scenario = Self.scenario(seed: seed, partitions: [SwarmSimulation.Partition(sources: [0, 1], start: .milliseconds(400), duration: .seconds(2))])
        scenario.chunkCount = 160
        let result = SwarmSimulation.run(scenario)
        SwarmSimulationTests.expectComplete(result, chunkCount: 160, "two of three sources partitioned")
        #expect(result.verifiedChunks == 160, "seed \(seed)")
        // Source 2 alone (2 MB/s) would need about 10.5 s for all 20 MiB: the others came back.
        #expect(result.progress.sources[0].bytesDelivered > 0 && result.progress.sources[1].bytesDelivered > 0, "seed \(seed): \(result.bytesPerSource)")
        #expect(result.duration.seconds < 2.4 + 5 + 1 + Self.transferBound(160 * (128 << 10)), "seed \(seed): took \(result.duration)")
        print("swarm, two sources cut off 0.4-2.4 s, seed \(seed): done at \(result.duration), bytes \(result.bytesPerSource)")
    }

    @Test func aPartitionIsDeterministicFromItsSeed() {
        let scenario = Self.scenario(seed: 9, partitions: [SwarmSimulation.Partition(sources: [1], start: .milliseconds(200), duration: .seconds(1))])
        let a = SwarmSimulation.run(scenario), b = SwarmSimulation.run(scenario)
        #expect(a.duration == b.duration && a.bytesPerSource == b.bytesPerSource && a.requestsIssued == b.requestsIssued, "seed 9")
    }
}
