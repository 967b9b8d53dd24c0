import ArgumentParser
import Foundation
import STOQBenchmarks

/// `stoq bench content` (old spelling `bench-content`, hidden): chunking and hashing throughput on one input, printed as JSON for
/// scripts/bench-content.sh (which runs pyfastcdc on the same bytes and prints the table).
struct BenchContent: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "content", abstract: "Content-layer throughput (used by scripts/bench-content.sh).")
    @Option(name: .long, help: "Input file (read into memory once).") var input: String
    @Option(name: .long) var min: Int = 4096
    @Option(name: .long) var avg: Int = 16384
    @Option(name: .long) var max: Int = 1 << 20
    @Option(name: .customLong("repeat"), help: "Repetitions per figure (best is reported).") var repetitions: Int = 3

    func run() throws {
        print(try ContentBenchmark.run(input: input, min: min, avg: avg, max: max, repetitions: repetitions))
    }
}
