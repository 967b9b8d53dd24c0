import ArgumentParser
import Foundation
import STOQBenchmarks

/// `stoq bench transport` (old spelling `bench-transport`, hidden): one STOQ connection over [::1] in this process, bulk transfer.
struct BenchTransport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Measure STOQ single-connection throughput and handshake time over [::1].")

    @Option(help: "Megabytes to send on one connection.")
    var megabytes: Int = 1000

    @Option(help: "Handshakes to time.")
    var handshakes: Int = 50

    @Option(help: "Idle connections to open for the memory figure (0 to skip).")
    var idleConnections: Int = 1000

    @Flag(help: "Disable UDP GSO/GRO (to compare).")
    var noOffload = false

    func run() async throws {
        try await TransportBenchmark.run(
            megabytes: megabytes, handshakes: handshakes, idleConnections: idleConnections, offload: !noOffload)
    }
}
