import ArgumentParser
import Foundation
import STOQBenchmarks
import STOQNode
import STOQSwarm

/// `stoq bench swarm` (old spelling `bench-swarm`, hidden): the multi-source scheduler under the simulator (virtual time), or with
/// `--real` over real QUIC on [::1] with `stoq node` processes as sources.
struct BenchSwarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm",
        abstract: "Swarm goodput with 2/4/8 sources and failover p50/p99: under the simulator, or with --real over QUIC on [::1] (part of `make bench`).")

    @Option(help: "Seed of every simulated run.")
    var seed: UInt64 = 1

    @Option(help: "Seeded runs (simulator) or kills (--real) for the failover distribution.")
    var failoverRuns: Int?

    @Flag(help: "Real QUIC on [::1]: `stoq node` processes as rate-limited sources, this process as the receiver.")
    var real = false

    @Option(help: "--real: MiB of content.")
    var mib: Int = 64

    @Option(help: "--real: the sources' limits add up to this fraction of the receiver's single-connection rate.")
    var loadFraction: Double = 0.6

    @Option(help: "--real: source counts, comma-separated.")
    var sources: String = "2,4,8"

    @Option(help: "--real: where the sources' limits are enforced: transport (QUIC token bucket, --rate-limit) or serve (chunk server's ServeThrottle, --connection-serve-rate).")
    var throttle: String = "transport"

    @Option(help: "--real: also print each source's MB/s per interval of this many milliseconds.")
    var traceMs: Int?

    func run() async throws {
        guard real else {
            SwarmBenchmark.run(seed: seed, failoverRuns: failoverRuns ?? 200)
            return
        }
        let counts = sources.split(separator: ",").compactMap { Int($0) }.filter { $0 >= 1 }
        guard !counts.isEmpty, loadFraction > 0, loadFraction <= 1, mib >= 1 else {
            throw ValidationError("--sources takes counts like 2,4,8; --load-fraction is in (0, 1]; --mib at least 1")
        }
        guard let place = RealSwarmBenchmark.Throttle(rawValue: throttle) else {
            throw ValidationError("--throttle takes transport or serve")
        }
        // The sources are `stoq node` processes of this same binary; the registry kills any left
        // running however the benchmark ends.
        let children = ChildRegistry()
        defer { children.killAll() }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        try await RealSwarmBenchmark(
            mebibytes: mib, fraction: loadFraction, failoverRuns: failoverRuns ?? 20, sourceCounts: counts, throttle: place,
            traceMilliseconds: traceMs.map { max(1, $0) }
        ) { name, arguments, logPath in
            let child = try ChildProcess(name: name, executable: executable, arguments: arguments, logPath: logPath)
            children.add(child)
            // "ready NAME ADDRESS ...": the third field is where the node listens.
            let fields = await child.line(startingWith: "ready")?.split(separator: " ") ?? []
            guard fields.count > 2, let address = PeerAddress(String(fields[2])) else {
                throw CLIError("\(name) did not start; see \(logPath)")
            }
            return (child, address)
        }.run()
    }
}

/// A source node of `stoq bench swarm --real`, as the benchmark sees it.
extension ChildProcess: BenchmarkNodeProcess {
    var processIdentifier: Int32 { process.processIdentifier }
}
