import Foundation
import Logging
import STOQContent
import STOQExchange
import STOQIdentity
import STOQRouting

/// A node's accounts for operators (issue 14 §5): totals that survive restarts
/// (`STORE/counters.json`), one info line per finished transfer, and the names and live transfers
/// `stoq status` shows.
extension Node {
    /// How often the totals are written while the node runs.
    static let countersInterval: Duration = .seconds(5)
    /// How often finished transfers are looked for (and logged).
    static let transfersInterval: Duration = .seconds(1)

    /// The totals now: the saved ones plus what this run counted.
    public func totals() async -> PersistentCounters {
        var run = PersistentCounters()
        let served = server.served
        run.servedBytes = served.bytes
        run.servedChunks = served.requests
        if let edge {
            let c = await edge.counters
            run.cacheHits = c.hits
            run.cacheMisses = c.misses
            run.cacheUpstreamBytes = c.upstreamBytes
        }
        if let uploads = uploadCoordinator {
            let u = await uploads.counters
            run.uploads = u.committed
            run.uploadBytes = Int(clamping: u.bytes)
        }
        return savedCounters.adding(run)
    }

    /// Writes ``totals()`` to `STORE/counters.json` (atomically); a failure is logged.
    public func saveCounters() async {
        let totals = await totals()
        do {
            try totals.save(path: configuration.store + "/" + PersistentCounters.fileName)
        } catch {
            logger.warning("could not save the node's counters; they restart from the last saved values", metadata: ["error": "\(error)"])
        }
    }

    /// Logs one info line per transfer finished since the last call (`all`: every transfer, the
    /// node is closing).
    func logFinishedTransfers(all: Bool = false) {
        let finished = tracker.sweep(all: all)
        audit?.record(finished, peerNames: peerNames)
        for f in finished {
            var metadata: Logger.Metadata = [
                "content": "\(f.content)", "bytes": "\(f.bytes)", "chunks": "\(f.chunks)",
                "seconds": "\(String(format: "%.3f", f.seconds))", "rate_bytes_per_second": "\(Int(f.bytesPerSecond.rounded()))",
            ]
            switch f.direction {
            case .serve:
                metadata["peer"] = "\(f.peers.joined(separator: ", "))"
                logger.info("served content", metadata: metadata)
            case .fetch:
                metadata["peers"] = "\(f.peers.joined(separator: ", "))"
                logger.info("fetched content from upstream", metadata: metadata)
            }
        }
    }

    /// Logs finished transfers every second and saves the totals every few seconds (when they
    /// changed) until ``close()``.
    func keepAccounts() async {
        var lastSaved = savedCounters
        var sinceSave: Duration = .zero
        while !stopping.isSet {
            // Wakes at once when the node closes: `run()` ends as soon as `close()` is done,
            // not up to a second later.
            await stopping.sleep(for: Self.transfersInterval)
            if stopping.isSet { break }
            logFinishedTransfers()
            audit?.tick()
            sinceSave += Self.transfersInterval
            if sinceSave >= Self.countersInterval {
                sinceSave = .zero
                let now = await totals()
                if now != lastSaved {
                    await saveCounters()
                    lastSaved = now
                }
            }
        }
    }

    /// The most transfers the status document lists (it must stay well under the 512 KiB a
    /// client reads); ``transfersStatus()`` says how many more there are.
    static let listedTransfers = 100

    /// The live transfers for the status document (the busiest ``listedTransfers``).
    func transfersStatus() -> [[String: Any]] {
        tracker.snapshot().sorted { $0.bytesPerSecond > $1.bytesPerSecond }.prefix(Self.listedTransfers).map { t in
            [
                "direction": t.direction.rawValue, "content": t.content, "peer": t.peers.first ?? "?", "peers": t.peers,
                "bytes": t.bytes, "chunks": t.chunks, "in_flight": t.inFlight,
                "seconds": (t.seconds * 1000).rounded() / 1000, "idle_seconds": (t.idleSeconds * 1000).rounded() / 1000,
                "rate_bytes_per_second": Int(t.bytesPerSecond.rounded()),
            ]
        }
    }

    /// The totals for the status document.
    func totalsStatus() async -> [String: Any] {
        let t = await totals()
        return ["served_bytes": t.servedBytes, "served_chunks": t.servedChunks, "cache_hits": t.cacheHits, "cache_misses": t.cacheMisses,
                "cache_upstream_bytes": t.cacheUpstreamBytes, "uploads": t.uploads, "upload_bytes": t.uploadBytes]
    }

    /// The routing section with each node's name where a connection showed its certificate.
    func namedRouting(_ routing: [String: Any]) -> [String: Any] {
        var byRoutingID: [String: PeerNames.Identity] = [:]
        for identity in peerNames.identities {
            if let id = RoutingNodeID(prefixOf: identity.nodeID.bytes) { byRoutingID[id.description] = identity }
        }
        var routing = routing
        if let id = routing["id"] as? String, let me = byRoutingID[id] { routing["name"] = me.label }
        if let nodes = routing["nodes"] as? [[String: Any]] {
            routing["nodes"] = nodes.map { entry -> [String: Any] in
                guard let id = entry["id"] as? String, let identity = byRoutingID[id] else { return entry }
                var entry = entry
                entry["name"] = identity.label
                return entry
            }
        }
        return routing
    }
}

/// Set once when the node closes; a loop waiting on it (``sleep(for:)``) wakes at once.
///
/// `@unchecked Sendable`: state behind `lock`.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    /// Sleepers to wake when the flag is set (each is cancelled by its own task).
    private var sleepers: [UInt64: Task<Void, Never>] = [:]
    private var nextSleeper: UInt64 = 0

    func set() {
        let woken = lock.withLock { () -> [Task<Void, Never>] in
            value = true
            defer { sleepers = [:] }
            return Array(sleepers.values)
        }
        for task in woken { task.cancel() }
    }

    var isSet: Bool { lock.withLock { value } }

    /// Sleeps for `duration`, or until the flag is set or the calling task is cancelled,
    /// whichever comes first.
    func sleep(for duration: Duration) async {
        let sleeper = Task<Void, Never> { _ = try? await Task.sleep(for: duration) }
        let id: UInt64? = lock.withLock {
            if value { return nil }
            nextSleeper &+= 1
            sleepers[nextSleeper] = sleeper
            return nextSleeper
        }
        guard let id else {
            sleeper.cancel()
            return
        }
        await withTaskCancellationHandler {
            await sleeper.value
        } onCancel: {
            sleeper.cancel()
        }
        lock.withLock { _ = sleepers.removeValue(forKey: id) }
    }
}
