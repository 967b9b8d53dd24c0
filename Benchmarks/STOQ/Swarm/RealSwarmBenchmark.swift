import Foundation
import STOQContent
import STOQIdentity
import STOQNode
import STOQSimulation
import STOQSwarm
import STOQTransport
import Synchronization

/// A `stoq node` process that ``RealSwarmBenchmark`` started as a source (through its
/// `startNode`), as far as the benchmark needs it.
public protocol BenchmarkNodeProcess: Sendable {
    /// Its process id, to read its CPU time from `/proc/PID/stat`.
    var processIdentifier: Int32 { get }
    /// Sends it a signal (SIGKILL for the failover runs and at the end).
    func signal(_ signal: Int32)
}

/// `stoq bench swarm --real`: multi-source retrieval over real QUIC on [::1].
///
/// Source nodes are `stoq node` child processes (own stores, own endpoints, each with a
/// per-connection token bucket) that the caller starts through `startNode`, so process handling
/// stays in the CLI; the receiver is this process, fetching with ``ContentFetcher``
/// into a fresh store: every chunk is verified (SHA-256) and the content is encrypted
/// (ChaCha20-Poly1305), as in production. Figures, each beside its peer from the same run:
///
/// - the receiver's single-connection rate: one unthrottled source;
/// - goodput with 2, 4 and 8 sources, each limited to `fraction × single / n`, as a ratio of
///   `min(sum of limits, single-connection rate)`;
/// - time to first byte and ms per MB of every fetch;
/// - failover: sources killed (SIGKILL) mid-fetch; time from the kill to the moment their
///   requests were moved to the other sources, p50/p99.
///
/// Beside each figure, what explains it: CPU per process during the fetch (receiver, each source,
/// the rest of the machine: on 2 cores the 8-source run is CPU-bound), UDP datagrams the kernel
/// dropped, and per source its share of what its bucket allowed, the fraction of the fetch it
/// was *idle* (no request outstanding) or *awaiting* (requests outstanding, no byte of any yet),
/// first-byte times, requests and window. `--trace-ms N` adds each source's MB/s per N ms;
/// `--throttle serve` limits the sources with the chunk server's ``ServeThrottle`` instead of the
/// transport's token bucket.
@available(macOS 15.0, *)
public struct RealSwarmBenchmark {
    /// Starts one source: `stoq node` with `arguments` (standard error to `logPath`), returning
    /// the process once it printed its `ready` line, and the address that line gave.
    public typealias StartNode = @Sendable (_ name: String, _ arguments: [String], _ logPath: String) async throws
        -> (process: any BenchmarkNodeProcess, address: PeerAddress)

    /// MiB of content fetched in every run.
    public var mebibytes: Int
    /// The sources' limits add up to this fraction of the receiver's single-connection rate.
    public var fraction: Double
    /// Sources killed mid-fetch, one per run, for the failover figure (0 skips it).
    public var failoverRuns: Int
    /// Source counts of the goodput runs (e.g. 2, 4, 8).
    public var sourceCounts: [Int]
    /// Which token bucket limits the sources: the transport's (`stoq node --rate-limit`: QUIC
    /// stream bytes of the connection) or the chunk server's (`--connection-serve-rate`:
    /// ``ServeThrottle``, response bytes in quanta).
    public var throttle: Throttle = .transport
    /// Where a source's rate limit is enforced.
    public enum Throttle: String, CaseIterable, Sendable {
        case transport, serve
    }
    /// Print each source's bytes per interval of this many milliseconds (nil: no trace).
    public var traceMilliseconds: Int? = nil
    /// Starts the source processes.
    public var startNode: StartNode

    /// Creates the benchmark; see the properties for each parameter.
    public init(
        mebibytes: Int, fraction: Double, failoverRuns: Int, sourceCounts: [Int], throttle: Throttle = .transport,
        traceMilliseconds: Int? = nil, startNode: @escaping StartNode
    ) {
        self.mebibytes = mebibytes
        self.fraction = fraction
        self.failoverRuns = failoverRuns
        self.sourceCounts = sourceCounts
        self.throttle = throttle
        self.traceMilliseconds = traceMilliseconds
        self.startNode = startNode
    }

    struct Fetch {
        var report: FetchReport
        /// CPU seconds used during the fetch: by this process (the receiver), by each source
        /// process (in the order of the sources), and by the whole machine (every process,
        /// ours and other users').
        var receiverCPU: Double = 0
        var sourceCPU: [Double] = []
        var machineCPU: Double = 0
        /// UDP/IPv6 datagrams the kernel dropped for a full socket receive buffer during the
        /// fetch, and datagrams delivered (machine-wide counters: other users' traffic counts).
        var udpDrops: Int = 0
        var udpDatagrams: Int = 0
        var seconds: Double { report.seconds }
        var goodput: Double { Double(report.fetchedBytes) / max(report.seconds, 1e-9) }
        var msPerMB: Double { report.seconds * 1000 / (Double(report.fetchedBytes) / 1e6) }
        var ttfbMs: Double { (report.secondsToFirstDataByte ?? .nan) * 1000 }
    }

    /// Runs every part and prints its lines as they come (unbuffered standard output).
    public func run() async throws {
        let scratch = access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : NSTemporaryDirectory()
        let work = scratch + "stoq-bench-swarm-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        var children: [any BenchmarkNodeProcess] = []
        defer {
            for child in children { child.signal(SIGKILL) }
            try? FileManager.default.removeItem(atPath: work)
        }
        // Every node process is started before the first one is killed, and none after (starting a
        // child after another was SIGKILLed crashed Foundation's process monitoring here): one
        // unthrottled, then one set per source count, then 3 survivors and one victim per kill.
        let failoverSources = 4
        let nodeCount = 1 + sourceCounts.reduce(0, +) + (failoverRuns > 0 ? failoverSources - 1 + failoverRuns : 0)
        say("swarm over real QUIC on [::1]: \(mebibytes) MiB of encrypted media chunks (~256 KiB), sources are `stoq node` processes limited by the \(throttle == .transport ? "transport's token bucket (--rate-limit)" : "chunk server's ServeThrottle (--connection-serve-rate)"); \(ProcessInfo.processInfo.activeProcessorCount) cores")

        // Identity and content.
        let ca = try CertificateAuthority.create(commonName: "STOQ bench CA")
        let certs = work + "/certs"
        try ca.write(to: certs)
        for index in 0..<nodeCount {
            try ca.issue(name: "source-\(index)", dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: certs, name: "source-\(index)")
        }
        let receiver = try ca.issue(name: "receiver", dnsNames: ["localhost"], ipAddresses: ["::1"])
        var generator = SplitMix64(seed: 0xbe0c)
        var data = [UInt8](repeating: 0, count: mebibytes << 20)
        for i in stride(from: 0, to: data.count, by: 8) {
            withUnsafeBytes(of: generator.next()) { raw in for j in 0..<min(8, data.count - i) { data[i + j] = raw[j] } }
        }
        let root: ContentID
        let chunkCount: Int
        do {
            let seed = try DiskChunkStore(directory: work + "/seed")
            let keys = try PublisherKeys(secret: (0..<32).map { _ in UInt8.random(in: 0...255) })
            let put = try ContentPublisher(store: seed, keys: keys).put(bytes: data, name: "bench", contentType: "video/mp4")
            root = put.id
            chunkCount = put.chunks
        }
        data = []
        for index in 0..<nodeCount {
            try cloneStore(from: work + "/seed", to: work + "/source-\(index)")
        }
        say("content \(root): \(chunkCount) chunks")

        func startSource(_ index: Int, rate: UInt64?) async throws -> (any BenchmarkNodeProcess, PeerAddress) {
            let name = "source-\(index)"
            var args = ["node", "--name", name, "--listen", "[::1]:0", "--cert", "\(certs)/\(name).pem", "--key", "\(certs)/\(name).key",
                        "--ca", "\(certs)/ca.pem", "--store", "\(work)/\(name)", "--role", "origin"]
            if let rate {
                switch throttle {
                case .transport: args += ["--rate-limit", "\(rate)"]
                case .serve: args += ["--connection-serve-rate", "\(rate)"]
                }
            }
            let (child, address) = try await startNode(name, args, "\(work)/\(name).log")
            children.append(child)
            return (child, address)
        }
        var nextNode = 0
        func startNext(rate: UInt64?) async throws -> (any BenchmarkNodeProcess, PeerAddress) {
            defer { nextNode += 1 }
            return try await startSource(nextNode, rate: rate)
        }
        var runNumber = 0
        func fetch(from addresses: [PeerAddress], processes: [any BenchmarkNodeProcess], onProgress: (@Sendable (SwarmProgress) -> Void)? = nil,
                   onEvent: (@Sendable (String) -> Void)? = nil) async throws -> Fetch {
            runNumber += 1
            let directory = "\(work)/receiver-\(runNumber)"
            let endpoint = try await Endpoint.bind(
                host: "::1", port: 0,
                tls: TLSConfiguration(certificateChainPEM: receiver.certificateChainPEM, privateKeyPEM: receiver.privateKeyPEM, trustRootsPEM: ca.certificatePEM),
                configuration: EndpointConfiguration())
            let peers = PeerSet(endpoint: endpoint)
            var sources: [any ChunkSource] = []
            for address in addresses { sources.append(try await peers.client(for: address)) }
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let report: FetchReport
            let before = CPUSample(processes: processes)
            let after: CPUSample
            do {
                let store = try DiskChunkStore(directory: directory)
                report = try await ContentFetcher(
                    store: store, sources: sources, onProgress: onProgress, onEvent: onEvent,
                    traceInterval: traceMilliseconds.map { .milliseconds($0) }).fetch(root)
                after = CPUSample(processes: processes)
            } catch {
                await peers.closeAll()
                await endpoint.close()
                throw error
            }
            await peers.closeAll()
            await endpoint.close()
            return Fetch(report: report, receiverCPU: after.receiver - before.receiver,
                         sourceCPU: zip(after.sources, before.sources).map { $0 - $1 }, machineCPU: after.machine - before.machine,
                         udpDrops: after.udpDrops - before.udpDrops, udpDatagrams: after.udpDatagrams - before.udpDatagrams)
        }

        // 1. The receiver's single-connection rate (best of three, one unthrottled source).
        let (singleProcess, singleAddress) = try await startNext(rate: nil)
        var singles: [Fetch] = []
        for _ in 0..<3 { singles.append(try await fetch(from: [singleAddress], processes: [singleProcess])) }
        let best = singles.max { $0.goodput < $1.goodput }!
        let singleRate = best.goodput
        say(String(format: "single connection   %7.1f MB/s  (%.0f Mbit/s; runs %@)  ttfb %.1f ms  %.1f ms/MB",
                     singleRate / 1e6, singleRate * 8 / 1e6, singles.map { String(format: "%.1f", $0.goodput / 1e6) }.joined(separator: ", "),
                     best.ttfbMs, best.msPerMB))
        say("  " + cpuLine(best))

        // 2. Goodput with n rate-limited sources.
        var all: [Fetch] = singles
        var results: [(n: Int, ratio: Double)] = []
        for n in sourceCounts {
            let limit = UInt64(fraction * singleRate / Double(n))
            var started: [(any BenchmarkNodeProcess, PeerAddress)] = []
            for _ in 0..<n { started.append(try await startNext(rate: limit)) }
            let result = try await fetch(from: started.map(\.1), processes: started.map(\.0))
            all.append(result)
            // What the token buckets allow in the fetch's time: the rate plus the bucket each
            // starts with (its burst), capped by the single-connection rate.
            let burst: Double = switch throttle {
            case .transport: Double(RateLimit(bytesPerSecond: limit).burst)
            case .serve: Double(ServeThrottleSettings(connectionBytesPerSecond: limit).throttleConfiguration.connectionBurst)
            }
            let allowance = min(Double(n) * (Double(limit) * result.seconds + burst), singleRate * result.seconds)
            let ratio = Double(result.report.fetchedBytes) / allowance
            results.append((n, ratio))
            let shares = result.report.sources.map { String(format: "%.0f", Double($0.bytes) / 1_048_576) }.joined(separator: "/")
            let stalls = result.report.sources.reduce(0) { $0 + $1.stalls }
            let failures = result.report.sources.reduce(0) { $0 + $1.failures }
            say(String(format: "%d sources x %5.1f MB/s: goodput %6.1f MB/s in %.2f s = %5.1f %% of what the buckets allow (sum of rates x time + bursts, at most single x time; %.1f %% of the plain sum); ttfb %.1f ms; %.1f ms/MB; MiB per source %@; stalls %d; failed requests %d",
                         n, Double(limit) / 1e6, result.goodput / 1e6, result.seconds, ratio * 100, result.goodput / (Double(limit) * Double(n)) * 100,
                         result.ttfbMs, result.msPerMB, shares, stalls, failures))
            say("  " + cpuLine(result))
            for line in timelineLines(result, limit: Double(limit), burst: burst) { say("  " + line) }
        }

        // 3. Failover: 4 rate-limited sources, one killed at 30 % of the bytes.
        var failovers: [Double] = []
        if failoverRuns > 0 {
            let n = failoverSources
            let limit = UInt64(fraction * singleRate / Double(n))
            var survivors: [(any BenchmarkNodeProcess, PeerAddress)] = []
            for _ in 0..<(n - 1) { survivors.append(try await startNext(rate: limit)) }
            var victims: [(any BenchmarkNodeProcess, PeerAddress)] = []
            for _ in 0..<failoverRuns { victims.append(try await startNext(rate: limit)) }
            for (run, (child, address)) in victims.enumerated() {
                let state = FailoverTiming()
                let verbose = ProcessInfo.processInfo.environment["STOQ_BENCH_EVENTS"] != nil
                var started = survivors
                started.insert((child, address), at: run % n)
                let result = try await fetch(
                    from: started.map(\.1), processes: started.map(\.0),
                    onProgress: { progress in
                        if progress.totalBytes > 0, progress.bytesDone * 10 >= progress.totalBytes * 3, state.markKilled() { child.signal(SIGKILL) }
                    },
                    onEvent: { event in
                        state.noteFailover()
                        if verbose { FileHandle.standardError.write(Data("EVENT \(event)\n".utf8)) }
                    })
                all.append(result)
                if let seconds = state.failoverSeconds { failovers.append(seconds) } else { say("failover run \(run): no failover observed") }
            }
        }

        // Summary.
        let ttfb = all.map(\.ttfbMs).filter { !$0.isNaN }.sorted()
        let msPerMB = all.map(\.msPerMB).sorted()
        say("summary")
        for (n, ratio) in results {
            say(String(format: "  goodput %d sources      %5.1f %% of min(sum of limits, single-connection rate) over the fetch, bursts included  (target >= 90 %%)  %@", n, ratio * 100, ratio >= 0.9 ? "ok" : "BELOW TARGET"))
        }
        say(String(format: "  time to first byte     p50 %.1f ms, max %.1f ms over %d fetches  (target <= 50 ms)", percentile(ttfb, 0.5), ttfb.last ?? .nan, ttfb.count))
        say(String(format: "  retrieval              p50 %.1f ms/MB, max %.1f ms/MB  (target <= 100 ms/MB)", percentile(msPerMB, 0.5), msPerMB.last ?? .nan))
        if !failovers.isEmpty {
            let sorted = failovers.sorted()
            say(String(format: "  failover (SIGKILL)     p50 %.0f ms, p99 %.0f ms over %d kills  (target p99 <= 500 ms, goal 200 ms)",
                         percentile(sorted, 0.5) * 1000, percentile(sorted, 0.99) * 1000, sorted.count))
        }
    }

    /// A copy of a closed store: chunk files hard-linked (they are immutable), metadata copied.
    private func cloneStore(from source: String, to target: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: target + "/chunks", withIntermediateDirectories: true)
        guard let walker = fm.enumerator(atPath: source + "/chunks") else { throw BenchmarkError("cannot read \(source)/chunks: the store written just before has no chunk folder; check that \(source) is writable and has room") }
        while let relative = walker.nextObject() as? String {
            let from = source + "/chunks/" + relative, to = target + "/chunks/" + relative
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: from, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
            } else if link(from, to) != 0 {
                try fm.copyItem(atPath: from, toPath: to)
            }
        }
        for name in try fm.contentsOfDirectory(atPath: source) where name.hasPrefix("meta.sqlite") {
            try fm.copyItem(atPath: source + "/" + name, toPath: target + "/" + name)
        }
    }

    /// CPU of one fetch: the receiver's, the sources' (sum and spread) and the rest of the
    /// machine's (other users), each in cores (CPU seconds per second of the fetch).
    private func cpuLine(_ fetch: Fetch) -> String {
        let seconds = max(fetch.seconds, 1e-9)
        let sources = fetch.sourceCPU.reduce(0, +)
        let others = max(0, fetch.machineCPU - fetch.receiverCPU - sources)
        let spread = fetch.sourceCPU.count > 1
            ? String(format: " (each %.2f-%.2f)", (fetch.sourceCPU.min() ?? 0) / seconds, (fetch.sourceCPU.max() ?? 0) / seconds) : ""
        return String(format: "cpu in cores: receiver %.2f, %d source process%@ %.2f%@, rest of the machine %.2f, of %d cores; receiver %.1f ns/byte; UDP datagrams dropped (receive buffer full, machine-wide) %d of %d",
                      fetch.receiverCPU / seconds, fetch.sourceCPU.count, fetch.sourceCPU.count == 1 ? "" : "es", sources / seconds, spread,
                      others / seconds, ProcessInfo.processInfo.activeProcessorCount, fetch.receiverCPU * 1e9 / Double(max(fetch.report.fetchedBytes, 1)),
                      fetch.udpDrops, fetch.udpDatagrams)
    }

    /// One line per source: its share of what its bucket allowed, and the receiver-side view
    /// of why it was not sending (idle: nothing asked; awaiting: asked, no byte yet).
    private func timelineLines(_ fetch: Fetch, limit: Double, burst: Double) -> [String] {
        var lines: [String] = []
        let bytesByName = Dictionary(fetch.report.sources.map { ($0.name, $0.bytes) }, uniquingKeysWith: +)
        let discardedByName = Dictionary(fetch.report.sources.map { ($0.name, $0.discardedBytes) }, uniquingKeysWith: +)
        for (position, t) in fetch.report.timelines.enumerated() {
            let bytes = Double(bytesByName[t.name] ?? 0)
            let cpu = position < fetch.sourceCPU.count ? String(format: "; cpu %.2f cores", fetch.sourceCPU[position] / max(fetch.seconds, 1e-9)) : ""
            lines.append(String(format: "source %d: %5.1f MiB (+%.1f MiB discarded) = %5.1f %% of its bucket; idle %4.1f %% (%.1f %% in the endgame), awaiting first byte %4.1f %%; first byte p50 %.1f ms p90 %.1f ms; requests mean %.2f max %d; window mean %.0f KiB%@",
                                position, bytes / 1_048_576, Double(discardedByName[t.name] ?? 0) / 1_048_576, bytes / (limit * t.seconds + burst) * 100, t.idleFraction * 100,
                                t.endgameIdleSeconds / max(t.seconds, 1e-9) * 100, t.awaitingFraction * 100,
                                t.firstByteMilliseconds(quantile: 0.5), t.firstByteMilliseconds(quantile: 0.9),
                                t.meanOutstandingRequests, t.maxOutstandingRequests, t.meanWindowBytes / 1024, cpu))
            if !t.bytesPerBin.isEmpty {
                let rates = t.bytesPerBin.map { String(format: "%.0f", Double($0) / t.binSeconds / 1e6) }.joined(separator: " ")
                lines.append(String(format: "  MB/s per %.0f ms: %@", t.binSeconds * 1000, rates))
            }
        }
        let fetches = fetch.report.timelines
        if !fetches.isEmpty {
            let idle = fetches.map(\.idleFraction).reduce(0, +) / Double(fetches.count)
            let awaiting = fetches.map(\.awaitingFraction).reduce(0, +) / Double(fetches.count)
            lines.append(String(format: "sources on average: idle %.1f %%, awaiting first byte %.1f %%", idle * 100, awaiting * 100))
        }
        return lines
    }

    private func percentile(_ sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded(.up)))]
    }
}


/// Writes a line to stdout at once (unbuffered), so progress reaches pipes and files as it happens.
private func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// CPU time so far (seconds) of this process, of some child processes, and of the whole machine.
private struct CPUSample {
    var receiver: Double
    var sources: [Double]
    var machine: Double
    var udpDrops = 0
    var udpDatagrams = 0

    init(processes: [any BenchmarkNodeProcess]) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        receiver = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        sources = processes.map { child in
            // /proc/PID/stat: after the ")" that ends the command name, utime and stime are the 12th and 13th fields.
            guard let stat = try? String(contentsOfFile: "/proc/\(child.processIdentifier)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return 0 }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
            return (user + system) / tick
        }
        // /proc/stat "cpu" line: user nice system idle iowait irq softirq steal (ticks); busy = all but idle and iowait.
        if let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
           let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) {
            let values = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
            machine = values.count == 8 ? (values.reduce(0, +) - values[3] - values[4]) / tick : 0
        } else {
            machine = 0
        }
        if let snmp = try? String(contentsOfFile: "/proc/net/snmp6", encoding: .utf8) {
            for line in snmp.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard fields.count == 2, let value = Int(fields[1]) else { continue }
                if fields[0] == "Udp6RcvbufErrors" { udpDrops = value }
                if fields[0] == "Udp6InDatagrams" { udpDatagrams = value }
            }
        }
    }
}

/// When a failover run killed its source and when the fetcher first moved requests away from it.
@available(macOS 15.0, *)
private final class FailoverTiming: Sendable {
    private let instants = Mutex<(kill: ContinuousClock.Instant?, failover: ContinuousClock.Instant?)>((nil, nil))

    /// Records the kill; true the first time only (the caller then sends the signal).
    func markKilled() -> Bool {
        instants.withLock { value in
            guard value.kill == nil else { return false }
            value.kill = .now
            return true
        }
    }

    /// Records the first failover event after the kill.
    func noteFailover() {
        instants.withLock { value in
            if value.kill != nil, value.failover == nil { value.failover = .now }
        }
    }

    /// Seconds from the kill to the first failover, if both happened.
    var failoverSeconds: Double? {
        instants.withLock { value in
            guard let kill = value.kill, let failover = value.failover else { return nil }
            return (failover - kill).seconds
        }
    }
}
