import ArgumentParser
import Crypto
import Foundation
import STOQ
import STOQNode
import STOQSwarm
import STOQSimulation

/// `stoq demo`: a small local STOQ network on [::1] that publishes and fetches content.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local STOQ CDN on [::1]: an origin, three edges and a client; kill an edge mid-fetch; report."
    )
    @Option(help: "Working directory (default: a new temporary directory).") var dir: String?
    @Option(help: "Approximate size of the sample data set in MiB.") var mib: Int = 48
    @Option(help: "Kill an edge when this fraction of the bytes has arrived (0 = never).") var killAt: Double = 0.35
    @Flag(help: "Keep the working directory.") var keep = false

    func run() async throws {
        // Default: a RAM-backed directory when there is one (the demo writes and removes ~20,000 small
        // chunk files, which takes a minute to unlink on some disks), else the temporary directory.
        let scratch = access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : NSTemporaryDirectory()
        let work = dir ?? (scratch + "stoq-demo-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let started = ContinuousClock.now
        let children = ChildRegistry()
        defer {
            children.killAll()
            if !keep && dir == nil { removeTree(work) }
        }
        let watcher = Task {
            // Ctrl-C or SIGTERM: stop the nodes too, then exit.
            _ = await TerminationSignal.wait()
            children.killAll()
            if !keep && dir == nil { removeTree(work) }
            Foundation.exit(130)
        }
        defer { watcher.cancel() }
        print("STOQ demo: a local CDN on [::1] (working in \(work))")

        // 1. Identity: one CA, a certificate per node.
        let ca = try CertificateAuthority.create(commonName: "STOQ demo CA")
        let certs = work + "/certs"
        try ca.write(to: certs)
        let names = ["origin", "edge-1", "edge-2", "edge-3", "client"]
        let regions = ["origin": "eu-central", "edge-1": "eu-west", "edge-2": "us-east", "edge-3": "ap-south", "client": "eu-west"]
        for name in names {
            let c = try ca.issue(name: name, region: regions[name], dnsNames: ["localhost"], ipAddresses: ["::1"])
            try c.write(to: certs, name: name)
        }
        print("1. certificates: CA + \(names.joined(separator: ", ")) (mutual TLS, 24 h)")

        // 2. A versioned sample data set, published into the origin's store.
        let dataset = work + "/dataset"
        let files = try SampleDataSet.write(to: dataset, mebibytes: mib)
        // The publisher key lives beside the origin's store, as `stoq put` keeps it.
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let keys = try PublisherKeys(secret: secret)
        try FileManager.default.createDirectory(atPath: work + "/stores/origin", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: work + "/stores/origin/publisher.key", contents: Data(secret), attributes: [.posixPermissions: 0o600])
        // The store is opened by one process at a time: publish, then let the origin process open it.
        let put = try ContentPublisher(store: DiskChunkStore(directory: work + "/stores/origin"), keys: keys)
            .put(path: dataset, name: "demo data set")
        print("2. published \(put.files) files, \(mebibytes(put.bytes)) -> \(put.id)")
        print("   dedup \(percent(put.dedupRatio)) (versioned files share chunks), \(mebibytes(put.storedBytes)) stored after zstd + encryption")

        // 3. Origin and three edges, each its own process and store.
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        func start(_ name: String, role: String, upstream: [String]) async throws -> (ChildProcess, String) {
            var args = ["node", "--name", name, "--listen", "[::1]:0", "--cert", "\(certs)/\(name).pem", "--key", "\(certs)/\(name).key",
                        "--ca", "\(certs)/ca.pem", "--store", "\(work)/stores/\(name)", "--role", role, "--region", regions[name]!]
            for u in upstream { args += ["--upstream", u] }
            let child = try ChildProcess(name: name, executable: executable, arguments: args, logPath: "\(work)/\(name).log")
            children.add(child)
            guard let ready = await child.line(startingWith: "ready") else {
                throw CLIError("\(name) did not start; see \(work)/\(name).log")
            }
            return (child, String(ready.split(separator: " ")[2]))
        }
        let (_, originAddress) = try await start("origin", role: "origin", upstream: [])
        var edges: [(name: String, child: ChildProcess, address: String)] = []
        for name in ["edge-1", "edge-2", "edge-3"] {
            let (child, address) = try await start(name, role: "edge", upstream: [originAddress])
            edges.append((name, child, address))
        }
        print("3. origin \(originAddress); " + edges.map { "\($0.name) \($0.address)" }.joined(separator: ", "))

        // 4. The client fetches through all three edges at once, the way `stoq get ID --peers`
        // does (the same code: PeerOptions.fetch): dialled through a PeerSet, ranked by the
        // router, every edge health-probed while it runs. One edge dies on the way.
        let victim = edges[1]
        // Notes and the report name sources by address; the demo prints the edges' names.
        let edgeNames = Dictionary(uniqueKeysWithValues: edges.map { (PeerAddress($0.address)?.description ?? $0.address, $0.name) })
        @Sendable func named(_ text: String) -> String { edgeNames.reduce(text) { $0.replacingOccurrences(of: $1.key, with: $1.value) } }
        let victimAddress = PeerAddress(victim.address)?.description ?? victim.address
        func peerFetch(_ id: ContentID, from sources: [(name: String, child: ChildProcess, address: String)], into store: any ChunkStore,
                       hooks: PeerFetchHooks) async throws -> FetchReport {
            let options = try PeerOptions.parse([
                "--peers", sources.map(\.address).joined(separator: ","),
                "--cert", "\(certs)/client.pem", "--key", "\(certs)/client.key", "--ca", "\(certs)/ca.pem",
            ])
            return try await options.fetch(id, into: store, hooks: hooks)
        }
        let killState = KillState()
        let clientStore = try DiskChunkStore(directory: work + "/stores/client")
        print("4. fetching \(put.id) through \(edges.count) edges in parallel" + (killAt > 0 ? "; \(victim.name) will be killed at \(percent(killAt))" : ""))
        let killAt = self.killAt
        let report = try await peerFetch(put.id, from: edges, into: clientStore, hooks: PeerFetchHooks(
            onProgress: { progress in
                if killAt > 0, progress.totalBytes > 0, Double(progress.bytesDone) >= killAt * Double(progress.totalBytes), killState.markKilled() {
                    victim.child.signal(SIGKILL)
                    print("   killed \(victim.name) (pid \(victim.child.process.processIdentifier)) at \(String(format: "%.0f %%", 100 * Double(progress.bytesDone) / Double(progress.totalBytes)))")
                }
            },
            onEvent: { note in
                // The first note about the killed edge after the kill: its requests have moved.
                if note.contains(victimAddress) { killState.noteFailover() }
                print("   \(named(note))")
            },
            interactive: false))

        // 5. Verify: restore the files and compare them with the originals.
        let restored = work + "/restored"
        _ = try ContentReader(store: clientStore, keys: keys).restore(put.id, to: restored)
        var identical = 0
        for file in files {
            let a = try Data(contentsOf: URL(fileURLWithPath: dataset + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: restored + "/" + file))
            if SHA256.hash(data: a) == SHA256.hash(data: b) { identical += 1 }
        }

        // 6. A second client fetches the same content from the surviving edges: their caches answer.
        let secondStore = try DiskChunkStore(directory: work + "/stores/client-2")
        let survivors = edges.filter { $0.name != victim.name || killAt == 0 }
        let second = try await peerFetch(put.id, from: survivors, into: secondStore, hooks: PeerFetchHooks(
            onEvent: { note in print("   second fetch: \(named(note))") }, interactive: false))
        var cacheLines = [String]()
        for edge in edges where edge.name != victim.name || killAt == 0 {
            edge.child.signal(SIGTERM)
            if let line = await edge.child.line(startingWith: "cache") { cacheLines.append(line) }
        }

        print("5. report")
        print("   content id    \(report.root)  verified: \(report.chunks) chunks SHA-256-checked, \(identical)/\(files.count) files bit-identical")
        print("   fetched       \(mebibytes(Int64(report.fetchedBytes))) stored bytes (\(mebibytes(Int64(report.plainBytes))) of files) in \(String(format: "%.2f", report.seconds)) s = \(String(format: "%.0f", report.megabitsPerSecond)) Mbit/s; first chunk after \(report.secondsToFirstByte.map { String(format: "%.1f ms", $0 * 1000) } ?? "-")")
        print("   per source    (plaintext bytes of the unique chunks each delivered)")
        for s in report.sources {
            let name = edgeNames[s.name] ?? s.name
            print("   from \(name.padding(toLength: 8, withPad: " ", startingAt: 0)) \(mebibytes(Int64(s.bytes)).padding(toLength: 10, withPad: " ", startingAt: 0)) \(String(format: "%4d", s.chunks)) chunks  \(name == victim.name && killAt > 0 ? "killed" : s.state)")
        }
        if let failover = killState.failoverSeconds {
            print("   failover      \(victim.name)'s requests ran elsewhere \(String(format: "%.0f", failover * 1000)) ms after it was killed")
        }
        print("   second fetch  \(mebibytes(Int64(second.fetchedBytes))) from edge caches in \(String(format: "%.2f", second.seconds)) s (\(String(format: "%.0f", second.megabitsPerSecond)) Mbit/s)")
        for line in cacheLines { print("   \(line)") }
        let total = ContinuousClock.now - started
        print("done in \(String(format: "%.1f", total.seconds)) s; every process stopped" + (keep || dir != nil ? "; files kept in \(work)" : ""))
        guard identical == files.count else { throw CLIError("restored files differ from the originals") }
    }

    private func mebibytes(_ bytes: Int64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    private func percent(_ x: Double) -> String { String(format: "%.0f %%", x * 100) }
}

/// Removes a directory tree. (`rm -rf`: Foundation's recursive remove takes a minute on the
/// stores' many small chunk files.)
func removeTree(_ path: String) {
    let rm = Process()
    rm.executableURL = URL(fileURLWithPath: "/bin/rm")
    rm.arguments = ["-rf", "--", path]
    try? rm.run()
    rm.waitUntilExit()
}

/// The demo's child processes, killed together.
///
/// `@unchecked Sendable`: the list is guarded by `lock`.
final class ChildRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [ChildProcess] = []
    func add(_ child: ChildProcess) { lock.withLock { children.append(child) } }
    func killAll() { for child in lock.withLock({ children }) { child.signal(SIGKILL) } }
}

/// When the demo killed its edge and when the client noticed.
///
/// `@unchecked Sendable`: all state behind `lock`.
final class KillState: @unchecked Sendable {
    private let lock = NSLock()
    private var killedAt: ContinuousClock.Instant?
    private var failedOverAt: ContinuousClock.Instant?
    func markKilled() -> Bool { lock.withLock { if killedAt != nil { return false }; killedAt = .now; return true } }
    func noteFailover() { lock.withLock { if killedAt != nil, failedOverAt == nil { failedOverAt = .now } } }
    var failoverSeconds: Double? { lock.withLock { guard let k = killedAt, let f = failedOverAt else { return nil }; return (f - k).seconds } }
}

/// The demo's data set: text in two versions (an edit shares most chunks), incompressible media
/// and an exact copy of it, and a few small files. Deterministic from a seed.
enum SampleDataSet {
    static func write(to dir: String, mebibytes: Int) throws -> [String] {
        var rng = SplitMix64(seed: 0x570a)
        let fm = FileManager.default
        for sub in ["docs", "media", "notes"] { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        let textSize = max(1, mebibytes / 4) << 20
        let mediaSize = max(1, mebibytes / 4) << 20
        let words = ["stoq", "quic", "edge", "chunk", "origin", "cache", "route", "latency", "manifest", "verify", "swarm", "ipv6",
                     "certificate", "stream", "deduplicate", "bandwidth", "region", "shard", "the", "a", "of", "and", "to", "in"]
        var v1 = [UInt8]()
        v1.reserveCapacity(textSize)
        while v1.count < textSize {
            for _ in 0..<(8 + Int(rng.next() % 12)) {
                v1 += Array(words[Int(rng.next() % UInt64(words.count))].utf8)
                v1.append(0x20)
            }
            v1 += Array(".\n".utf8)
        }
        // Version 2: a few paragraphs inserted and removed.
        var v2 = v1
        for k in 0..<6 {
            let at = (v2.count / 7) * (k + 1)
            if k % 2 == 0 { v2.insert(contentsOf: Array("Revised paragraph \(k): edges now cache what they serve.\n".utf8), at: at) }
            else { v2.removeSubrange(at..<(at + 3000)) }
        }
        var media = [UInt8](repeating: 0, count: mediaSize)
        for i in stride(from: 0, to: mediaSize, by: 8) { withUnsafeBytes(of: rng.next()) { raw in for j in 0..<min(8, mediaSize - i) { media[i + j] = raw[j] } } }
        var files: [(String, [UInt8])] = [
            ("docs/manual-v1.txt", v1), ("docs/manual-v2.txt", v2),
            ("media/video.bin", media), ("media/video-copy.bin", media),
        ]
        for n in 0..<5 { files.append(("notes/note-\(n).txt", Array("note \(n): STOQ is QUIC over IPv6 with mutual TLS.\n".utf8))) }
        for (path, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(path)")) }
        return files.map(\.0)
    }
}
