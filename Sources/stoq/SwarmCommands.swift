import ArgumentParser
import STOQSwarm

/// `stoq bench-swarm`: the multi-source scheduler under the simulator (virtual time).
struct BenchSwarm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-swarm",
        abstract: "Swarm goodput with 2/4/8 sources and failover p50/p99 under the simulator (part of `make bench`).")

    @Option(help: "Seed of every simulated run.")
    var seed: UInt64 = 1

    @Option(help: "Seeded runs for the failover distribution.")
    var failoverRuns: Int = 200

    func run() throws {
        SwarmBenchmark.run(seed: seed, failoverRuns: failoverRuns)
    }
}
