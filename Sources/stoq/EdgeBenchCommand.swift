import ArgumentParser
import Foundation
import STOQBenchmarks

/// `stoq bench edge` (old spelling `bench-edge`, hidden): cache hit ratios of W-TinyLFU beside plain LRU on one seeded Zipf workload.
struct BenchEdge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge",
        abstract: "Edge cache hit ratios: W-TinyLFU beside LRU at the same capacities on a seeded Zipf workload."
    )
    @Option(help: "Distinct chunks.") var items: Int = 100_000
    @Option(help: "Requests.") var requests: Int = 1_000_000
    @Option(help: "Zipf exponent.") var exponent: Double = 1.0
    @Option(help: "Cache capacities in chunks, comma separated.") var capacities: String = "100,1000,10000"
    @Option(help: "Chunk size in bytes.") var chunkSize: Int = 64 * 1024
    @Option(help: "Workload seed.") var seed: UInt64 = 42

    func validate() throws {
        guard items > 0, requests > 0, chunkSize > 0 else { throw ValidationError("--items, --requests and --chunk-size must be positive") }
        guard !parsedCapacities.isEmpty, parsedCapacities.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--capacities is a comma-separated list of positive chunk counts, e.g. 100,1000,10000")
        }
    }

    private var parsedCapacities: [Int] { capacities.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() throws {
        print(EdgeBenchmark.zipfReport(items: items, requests: requests, exponent: exponent, capacities: parsedCapacities, chunkSize: chunkSize, seed: seed))
    }
}
