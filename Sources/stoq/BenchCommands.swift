import ArgumentParser
import Foundation
import STOQ
import STOQBenchmarks

/// `stoq bench PART`: every benchmark of `make bench`, one family (issue 14). The old spellings
/// (`bench-transport`, `dht bench`, `block bench-net`, …) stay as hidden commands (LegacyCommands.swift).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks, one per part: transport, content, store, swarm, edge, routing, dht, relay, block, erasure (`make bench` runs them all).",
        discussion: """
            Each part prints its figures beside a peer's where one exists (scripts/bench.sh runs \
            the peers). `stoq bench PART --help` shows a part's options.
            """,
        subcommands: [
            BenchTransport.self,
            BenchContent.self,
            BenchStore.self,
            BenchSwarm.self,
            BenchEdge.self,
            Routing.self,
            DHTCommand.Bench.self,
            RelayCommand.Bench.self,
            BlockBenchNetCommand.self,
            BlockBenchErasureCommand.self,
        ]
    )

    struct Routing: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "routing",
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
