import Foundation
import STOQSimulation
import STOQSwarm

/// The swarm benchmark under the simulator: goodput with 2, 4 and 8 sources against the
/// ideal `min(sum of source rates, receiver rate)`, and failover time after a source dies.
///
/// Virtual time, so the figures do not depend on the machine; `stoq bench` calls ``run(seed:failoverRuns:print:)``.
public enum SwarmBenchmark {
    /// One goodput measurement.
    public struct GoodputFigure: Sendable {
        /// Sources used.
        public var sources: Int
        /// Sum of the sources' rates, bytes per second.
        public var sumOfSourceRates: Double
        /// The receiver's rate, bytes per second.
        public var receiverRate: Double
        /// Achieved goodput, bytes per second.
        public var goodput: Double
        /// `goodput / min(sumOfSourceRates, receiverRate)`.
        public var ratio: Double
        /// Verified bytes per source.
        public var bytesPerSource: [Int]
        /// Whether the fetch completed.
        public var completed: Bool
    }

    /// The failover distribution.
    public struct FailoverFigure: Sendable {
        /// Runs measured.
        public var runs: Int
        /// Median, milliseconds.
        public var p50: Double
        /// 99th percentile, milliseconds.
        public var p99: Double
        /// Worst, milliseconds.
        public var max: Double
        /// Runs that completed.
        public var completedRuns: Int
    }

    /// Everything measured.
    public struct Report: Sendable {
        /// Goodput with 2, 4 and 8 sources.
        public var goodput: [GoodputFigure]
        /// Failover after a source is killed mid-transfer (detected by stall).
        public var failover: FailoverFigure
    }

    /// The rates (bytes per second) of the benchmark's heterogeneous sources, first `n` used.
    public static let sourceRates: [Double] = [4e6, 2e6, 6e6, 3e6, 5e6, 1.5e6, 8e6, 2.5e6]
    /// The receiver's rate in the goodput runs (below the sum of 8 sources, above that of 2 and 4).
    public static let receiverRate: Double = 25e6

    /// The goodput scenario with `sourceCount` sources (about four seconds of ideal transfer).
    public static func goodputScenario(sources sourceCount: Int, seed: UInt64) -> SwarmSimulation.Scenario {
        let rates = Array(sourceRates.prefix(sourceCount))
        let ideal = min(rates.reduce(0, +), receiverRate)
        let chunkSize = 256 << 10
        let chunkCount = max(16, Int(ideal * 4 / Double(chunkSize)))
        let specs = rates.enumerated().map { number, rate in
            SwarmSimulation.SourceSpec(rateBytesPerSecond: rate, oneWayLatency: .milliseconds(Double(5 + 5 * (number % 4))))
        }
        return SwarmSimulation.Scenario(chunkCount: chunkCount, chunkSize: chunkSize, sources: specs, receiverRateBytesPerSecond: receiverRate, seed: seed)
    }

    /// Measures goodput with `sourceCount` sources.
    public static func goodput(sources sourceCount: Int, seed: UInt64) -> GoodputFigure {
        let scenario = goodputScenario(sources: sourceCount, seed: seed)
        let result = SwarmSimulation.run(scenario)
        let sum = scenario.sources.reduce(0) { $0 + $1.rateBytesPerSecond }
        let ideal = min(sum, receiverRate)
        return GoodputFigure(
            sources: sourceCount, sumOfSourceRates: sum, receiverRate: receiverRate, goodput: result.goodputBytesPerSecond,
            ratio: result.goodputBytesPerSecond / ideal, bytesPerSource: result.bytesPerSource, completed: result.completed)
    }

    /// The failover scenario: four 4 MB/s sources, one killed at a seeded time mid-transfer.
    public static func failoverScenario(seed: UInt64) -> SwarmSimulation.Scenario {
        var random = SimRandom(seed: seed)
        let killAt = SimDuration.milliseconds(100 + random.nextUnitDouble() * 600)
        var specs = (0 ..< 4).map { number in
            SwarmSimulation.SourceSpec(rateBytesPerSecond: 4e6, oneWayLatency: .milliseconds(Double(2 + random.nextIndex(20))))
        }
        specs[random.nextIndex(4)].killAt = killAt
        return SwarmSimulation.Scenario(chunkCount: 64, chunkSize: 256 << 10, sources: specs, receiverRateBytesPerSecond: 100e6, seed: seed)
    }

    /// Measures the failover distribution over `runs` seeded runs; also returns the seeds of
    /// runs that did not complete.
    public static func failover(runs: Int, seed: UInt64) -> (figure: FailoverFigure, times: [Double], incomplete: [UInt64]) {
        var times: [Double] = []
        var incomplete: [UInt64] = []
        for run in 0 ..< runs {
            let runSeed = seed &+ UInt64(run) &* 7919
            let result = SwarmSimulation.run(failoverScenario(seed: runSeed))
            times.append(contentsOf: result.failoverTimes.map(\.milliseconds))
            if !result.completed { incomplete.append(runSeed) }
        }
        let sorted = times.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
        }
        let figure = FailoverFigure(runs: runs, p50: percentile(0.5), p99: percentile(0.99), max: sorted.last ?? 0, completedRuns: runs - incomplete.count)
        return (figure, times, incomplete)
    }

    /// Runs the whole benchmark and prints one line per figure (each beside its target).
    ///
    /// - Parameters:
    ///   - seed: the seed of every run.
    ///   - failoverRuns: seeded runs for the failover distribution.
    ///   - print: where lines go (standard output by default).
    @discardableResult
    public static func run(seed: UInt64 = 1, failoverRuns: Int = 200, print: (String) -> Void = { Swift.print($0) }) -> Report {
        var figures: [GoodputFigure] = []
        for count in [2, 4, 8] {
            let figure = goodput(sources: count, seed: seed)
            figures.append(figure)
            let shares = figure.bytesPerSource.map { String(format: "%.1f", Double($0) / 1e6) }.joined(separator: "/")
            print(String(format: "swarm goodput %d sources: %.2f MB/s vs ideal min(sum %.1f, receiver %.1f) MB/s = %.3f (target >= 0.90)",
                         count, figure.goodput / 1e6, figure.sumOfSourceRates / 1e6, figure.receiverRate / 1e6, figure.ratio)
                  + (figure.completed ? "" : " INCOMPLETE") + "; MB per source " + shares)
        }
        let failover = failover(runs: failoverRuns, seed: seed).figure
        print(String(format: "swarm failover (kill mid-transfer, stall detection, %d runs): p50 %.1f ms, p99 %.1f ms, max %.1f ms (target p99 <= 500, goal 200); %d/%d completed",
                     failover.runs, failover.p50, failover.p99, failover.max, failover.completedRuns, failover.runs))
        return Report(goodput: figures, failover: failover)
    }
}
