import ArgumentParser
import Foundation
import STOQ
import STOQBenchmarks

/// `stoq bench …`: benchmark parts of `make bench` for the sans-IO layers (each figure beside its peer).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks of the sans-IO layers (routing, swarm, edge cache), each figure beside its peer.",
        subcommands: [Routing.self]
    )

    struct Routing: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Route queries on a simulated network while the matrix takes updates; Vivaldi error; beside a dense Dijkstra."
        )
        @Option(help: "Nodes in the network.") var nodes: Int = 10_000
        @Option(help: "Seconds of queries.") var seconds: Double = 2
        @Option(help: "Seed.") var seed: UInt64 = 1
        @Flag(help: "Skip the dense O(N²) Dijkstra peer.") var noDensePeer = false
        @Option(help: "Build a pair-routing index after every Nth publish (queries answer on a snapshot at most N publishes old).")
        var indexEvery: Int = 2

        func run() async throws {
            print(RoutingBenchmark.run(
                nodes: nodes, seed: seed, queryDuration: seconds, includeDensePeer: !noDensePeer, indexEvery: max(1, indexEvery)
            ))
        }
    }
}
