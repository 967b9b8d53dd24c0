import Foundation
import Logging
import STOQContent
import STOQIdentity
import STOQSwarm
import STOQTransport
import STOQWire

/// What one fetch did.
public struct FetchReport: Sendable {
    /// What one source contributed.
    public struct Source: Sendable {
        /// Its name.
        public var name: String
        /// Plaintext bytes of the verified chunks it delivered (manifest sizes; stored bytes are smaller
        /// after compression).
        public var bytes: Int
        /// Chunks it delivered.
        public var chunks: Int
        /// Its final state in the scheduler.
        public var state: String
        /// Stalls the scheduler detected on it.
        public var stalls: Int = 0
        /// Failed requests (errors, refusals, not-found answers).
        public var failures: Int = 0
        /// Chunks its HAVE bitfield offered (nil: all of them).
        public var offeredChunks: Int? = nil
        /// Its route cost from the router (lower is preferred; nil: no ranking, `.infinity`: the
        /// router does not know it).
        public var routeCost: Double? = nil
        /// For a source that fills misses from its upstream (an edge): the chunks its HAVE said it
        /// caches, which it was given first (nil: not such a source, or no HAVE came).
        public var cachedChunks: Int? = nil
        /// Bytes it sent for requests that were then cancelled (endgame losers, stalls) or failed:
        /// its bandwidth spent on nothing.
        public var discardedBytes: Int = 0
        /// The node id its handshake proved (nil: not a `stoq/1` peer, relayed, or no certificate);
        /// a node's audit record of the fetch names it.
        public var nodeID: NodeID? = nil
        /// Bytes of the manifest chunks it delivered (before the data phase; not in ``bytes``).
        public var manifestBytes: Int = 0
        /// Manifest chunks it delivered (not in ``chunks``).
        public var manifestChunks: Int = 0
    }
    /// The content fetched.
    public var root: ContentID
    /// Plaintext size of the content.
    public var plainBytes: UInt64
    /// Stored (ciphertext) bytes of the data chunks that were fetched.
    public var fetchedBytes: Int
    /// Bytes of the manifest chunks fetched from the sources (those the store held are not
    /// counted; not in ``fetchedBytes``).
    public var manifestBytesFetched: Int = 0
    /// Data chunks in the content.
    public var chunks: Int
    /// Data chunks that were already in the local store (resume).
    public var chunksAlreadyPresent: Int
    /// Manifest chunks walked.
    public var manifestChunks: Int
    /// Seconds from start to the last verified chunk.
    public var seconds: Double
    /// Seconds to the first verified chunk.
    public var secondsToFirstByte: Double?
    /// Seconds to the first byte of chunk data received (before verification).
    public var secondsToFirstDataByte: Double? = nil
    /// Per source.
    public var sources: [Source]
    /// For each source that failed mid-fetch: seconds from its first failed request's start to the
    /// moment its work was handed to others.
    public var failovers: [(source: String, seconds: Double)]
    /// The source the scheduler asked for the first data chunk (nil when nothing was requested).
    public var firstRequestedSource: String? = nil
    /// How each source was used during the data phase (idle and turnaround time, first-byte
    /// times, windows), in the order of ``sources``.
    public var timelines: [FetchSourceTimeline] = []
    /// Timer wake-ups of the fetch that ran late beyond the scheduler's tolerance (this process was
    /// starved of CPU); their lateness was not counted as silence of the sources.
    public var lateWakeups: Int = 0
    /// The latest of those wake-ups, in seconds.
    public var maxWakeupLateness: Double = 0
    /// Goodput in Mbit/s over the data phase.
    public var megabitsPerSecond: Double { seconds > 0 ? Double(fetchedBytes) * 8 / seconds / 1e6 : 0 }
}

/// Fetches content by id from several sources at once, verifying every chunk before it is stored.
///
/// The scheduling decisions (windows, rarest-first, endgame, failover, bans) are the sans-IO
/// ``SwarmScheduler``'s; this type only pumps it: it starts the requests the scheduler asks for,
/// reports their outcomes with the current time, and wakes it at its timeouts.
public final class ContentFetcher: Sendable {
    /// The local store the content lands in.
    public let store: any ChunkStore
    /// The sources.
    public let sources: [any ChunkSource]
    /// Scheduler settings.
    public let configuration: SwarmConfiguration
    private let logger: Logger
    private let onProgress: (@Sendable (SwarmProgress) -> Void)?
    private let onEvent: (@Sendable (String) -> Void)?
    private let healthChanges: AsyncStream<PeerHealthChange>?
    private let preference: SourcePreference?
    private let traceInterval: Duration?

    /// Creates a fetcher.
    /// - Parameters:
    ///   - store: where chunks are written (verified) and the content is pinned at the end.
    ///   - sources: peers to fetch from (at least one).
    ///   - onProgress: called as chunks arrive (progress bars).
    ///   - onEvent: called with human-readable notes (bans, failovers).
    ///   - healthChanges: peer health changes (``PeerHealthService/changes()``); a source whose
    ///     name is the address of a peer that went down loses its requests at once.
    ///   - preference: route costs of the sources (e.g. ``NodeRouter/sourcePreference()``): the
    ///     cheapest source is offered requests first, in the first round and in every later one;
    ///     the measured throughput still sizes each source's window once data flows.
    ///   - traceInterval: when set, the report's timelines also count the bytes each source
    ///     delivered per interval of this length (``FetchSourceTimeline/bytesPerBin``).
    public init(
        store: any ChunkStore, sources: [any ChunkSource], configuration: SwarmConfiguration = .init(),
        logger: Logger = Logger(label: "stoq.fetch"),
        onProgress: (@Sendable (SwarmProgress) -> Void)? = nil,
        onEvent: (@Sendable (String) -> Void)? = nil,
        healthChanges: AsyncStream<PeerHealthChange>? = nil,
        preference: SourcePreference? = nil,
        traceInterval: Duration? = nil
    ) {
        self.preference = preference
        self.healthChanges = healthChanges
        self.traceInterval = traceInterval
        self.store = store
        self.sources = sources
        self.configuration = configuration
        self.logger = logger
        self.onProgress = onProgress
        self.onEvent = onEvent
    }

    enum Event: Sendable {
        case have(Int, ChunkAvailability?)
        case done(RequestID, Result<[UInt8], any Error>)
        case progress(RequestID, Int)
        /// The scheduler's timer, armed for this deadline.
        case tick(UInt64)
        case health(PeerHealthChange)
        /// A dial of a source that lost its connection ended: nil on success, else its error.
        case redial(SourceID, String?)
    }

    /// Fetches `root` and everything it references into the store, then pins it.
    public func fetch(_ root: ContentID) async throws -> FetchReport {
        guard !sources.isEmpty else { throw NodeError(.invalidArgument, "a fetch needs at least one source") }
        let clock = ContinuousClock()
        let start = clock.now
        func now() -> UInt64 { UInt64(max(0, (clock.now - start).nanoseconds)) }

        // 1. Manifests, from the store or from the first source that has them (what each source
        // delivered counts in the report: a node's audit record of the fetch includes it).
        var manifestsFrom: [String: (bytes: Int, chunks: Int)] = [:]
        var plan = try await ContentPlan.resolve(root) { id in
            if try self.store.contains(id) { return try self.store.read(id) }
            var lastError: (any Error)?
            var missing = 0
            for source in self.sources {
                let bytes: [UInt8]
                do {
                    bytes = try await source.fetchChunk(id, progress: nil)
                } catch {
                    if let e = error as? NodeError, e.code == .notFound { missing += 1 }
                    lastError = error
                    continue
                }
                try Self.write(id, bytes, to: self.store)
                manifestsFrom[source.name, default: (0, 0)].bytes += bytes.count
                manifestsFrom[source.name, default: (0, 0)].chunks += 1
                return bytes
            }
            if missing == self.sources.count {
                throw NodeError(.notFound, id == root.manifest
                    ? "none of the \(missing) sources holds content \(root); check the id (it is printed by `stoq put`) or ask a peer that has it"
                    : "none of the \(missing) sources holds manifest \(id.short) of \(root)")
            }
            throw NodeError(.unavailable, "no source could supply manifest \(id.short) of \(root): \(lastError.map { "\($0)" } ?? "no sources")")
        }

        // 2. Data chunks through the scheduler.
        let chunks = plan.dataChunks.enumerated().map { SwarmChunk(index: $0.offset, id: $0.element.id, size: $0.element.size) }
        var present = [Int]()
        for c in chunks where try store.contains(c.id) { present.append(c.index) }
        var scheduler = SwarmScheduler(chunks: chunks, present: present, configuration: configuration)
        // 2'. The router's preference: route costs for chunks of this content's average size.
        var routeCosts = [SourceID: Double]()
        if let preference, !chunks.isEmpty {
            let averageSize = chunks.reduce(0) { $0 + $1.size } / chunks.count
            let costs = preference.costs(sources, averageSize)
            for (source, cost) in zip(sources, costs) { routeCosts[SourceID(source.name)] = cost }
            if routeCosts.values.contains(where: \.isFinite) {
                let scores = routeCosts
                scheduler.ranker = ClosureSourceRanker { -(scores[$0] ?? .infinity) }
                let order = sources.map(\.name).sorted { (routeCosts[SourceID($0)] ?? .infinity) < (routeCosts[SourceID($1)] ?? .infinity) }
                onEvent?("route preference: \(order.joined(separator: " > "))")
            }
        }
        var firstRequested: String?
        var timeline = FetchTimelineRecorder(start: now(), binWidth: traceInterval.map { UInt64(max(1, $0.nanoseconds)) })
        // 2a. Who has what: every source starts as a full holder (so a source that answers
        // nothing still gets requests, and stall detection or health probing deals with it);
        // each one's HAVE bitfield, asked in parallel, narrows its availability as it arrives.
        var byID = [SourceID: any ChunkSource]()
        // Health changes name a peer's address; a source reached through a relay has a name of its own.
        var sourceOfPeer = [String: SourceID]()
        for source in sources {
            if let target = (source as? any PeerChunkSource)?.relayedTarget { sourceOfPeer[target.description] = SourceID(source.name) }
        }
        var offered = [SourceID: Int]()
        var cached = [SourceID: Int]()
        // The scheduler starts a source's requests as soon as it is added: the preferred source first.
        let addOrder = routeCosts.isEmpty ? sources : sources.enumerated().sorted {
            let a = routeCosts[SourceID($0.element.name)] ?? .infinity, b = routeCosts[SourceID($1.element.name)] ?? .infinity
            return a != b ? a < b : $0.offset < $1.offset
        }.map(\.element)
        for source in addOrder {
            let id = SourceID(source.name)
            byID[id] = source
            scheduler.handleSourceAdded(id, now: now())
            timeline.window(id, bytes: scheduler.windowBytes(of: id) ?? 0, now: now())
        }
        // The manifests are read: the size is known, so a progress bar can show the total (and
        // what a resume already has) before the first data chunk arrives.
        onProgress?(scheduler.progress)
        func applyHave(_ position: Int, _ answer: ChunkAvailability?) {
            let id = SourceID(sources[position].name)
            switch answer ?? .all {
            case .all:
                break
            case .some(let bits):
                offered[id] = bits.setCount
                scheduler.handleHave(id, have: bits, now: now())
            case .fills(let held):
                cached[id] = held.setCount
                scheduler.handleHave(id, have: nil, cached: held, now: now())
            case .none:
                offered[id] = 0
                scheduler.handleHave(id, have: ChunkBitfield(count: chunks.count), now: now())
            }
        }
        let (events, continuation) = AsyncStream<Event>.makeStream()
        var running = [RequestID: Task<Void, Never>]()
        var requestStart = [RequestID: UInt64]()
        var timer: Task<Void, Never>?
        var timerDeadline: UInt64?
        var firstByte: Double?
        var firstDataByte: Double?
        var fetchedBytes = 0
        var failovers = [(source: String, seconds: Double)]()
        var failedSources = Set<SourceID>()
        var maxLateness: UInt64 = 0
        var uncommitted = CommitBatch()
        // Sources whose connection was lost are dialled again (ContentFetcher+Redial.swift).
        var redials = SourceRedials(configuration: configuration)
        var redialTasks = [Task<Void, Never>]()
        let healthForwarder = healthChanges.map { changes in
            Task { for await change in changes { continuation.yield(.health(change)) } }
        }
        defer {
            for task in running.values { task.cancel() }
            for task in redialTasks { task.cancel() }
            timer?.cancel()
            healthForwarder?.cancel()
            continuation.finish()
        }

        func armTimer() {
            guard let deadline = scheduler.pollTimeout() else { return }
            if let current = timerDeadline, current <= deadline, timer != nil { return }
            timer?.cancel()
            timerDeadline = deadline
            let delay = Int64(deadline) - Int64(now())
            timer = Task {
                if delay > 0 { try? await Task.sleep(for: .nanoseconds(delay)) }
                if !Task.isCancelled { continuation.yield(.tick(deadline)) }
            }
        }

        func drainActions() throws -> Bool {
            while let action = scheduler.pollAction() {
                switch action {
                case .request(let rid, let sourceID, let index):
                    guard let source = byID[sourceID] else { continue }
                    if firstRequested == nil { firstRequested = sourceID.rawValue }
                    let chunkID = chunks[index].id
                    requestStart[rid] = now()
                    timeline.requested(rid, on: sourceID, now: now())
                    running[rid] = Task {
                        do {
                            let bytes = try await source.fetchChunk(chunkID) { n in continuation.yield(.progress(rid, n)) }
                            continuation.yield(.done(rid, .success(bytes)))
                        } catch {
                            continuation.yield(.done(rid, .failure(error)))
                        }
                    }
                case .cancel(let rid, let sourceID, _):
                    running.removeValue(forKey: rid)?.cancel()
                    timeline.ended(rid, now: now())
                    let began = requestStart.removeValue(forKey: rid)
                    // A cancel on an active source is an endgame loser; on a penalised one it is a stall.
                    let stalled: Bool
                    switch scheduler.state(of: sourceID) {
                    case .active?, nil: stalled = false
                    default: stalled = true
                    }
                    if stalled, let began, failedSources.insert(sourceID).inserted {
                        let seconds = Double(now() - began) / 1e9
                        failovers.append((sourceID.rawValue, seconds))
                        let timeout = Double(scheduler.stallTimeout(of: sourceID) ?? 0) / 1e6
                        onEvent?("source \(sourceID) stalled; its requests moved to others after \(String(format: "%.0f", seconds * 1000)) ms (stall timeout \(String(format: "%.0f", timeout)) ms; this fetch woke up to \(String(format: "%.0f", Double(maxLateness) / 1e6)) ms late)")
                    }
                case .sourceBanned(let sourceID, let reason):
                    onEvent?("source \(sourceID) banned: \(reason)")
                case .completed:
                    return true
                case .failed(let error):
                    let tried = redials.summary(now: now())
                    throw NodeError(.unavailable, "fetch of \(root) failed: \(error.reason)" + (tried.isEmpty ? "" : " What was tried: \(tried)."))
                }
            }
            return false
        }

        var awaitingHave = 0
        var haveTasks: [Task<Void, Never>] = []
        defer { for task in haveTasks { task.cancel() } }
        if present.count < chunks.count {
            awaitingHave = sources.count
            for (position, source) in sources.enumerated() {
                let count = chunks.count
                let logger = logger
                haveTasks.append(Task {
                    let answer = await withDeadline(Self.availabilityTimeout) { () async -> ChunkAvailability? in
                        do {
                            return try await source.availability(of: root, chunkCount: count)
                        } catch {
                            logger.info("no HAVE from source; assuming it holds everything", metadata: ["source": "\(source.name)", "error": "\(error)"])
                            return nil
                        }
                    }
                    continuation.yield(.have(position, answer ?? nil))
                })
            }
        }

        var finished = try drainActions()  // true at once when every chunk is already here (resume)
        if !finished { armTimer() } else { continuation.finish() }
        do {
        eventLoop: for await event in events {
            let t = now()
            switch event {
            case .have(let position, let answer):
                applyHave(position, answer)
                awaitingHave -= 1
                if awaitingHave == 0, !scheduler.isFinished, case let missing = scheduler.unavailableChunks, !missing.isEmpty {
                    throw NodeError(.unavailable, "no source holds \(missing.count) of the \(chunks.count) chunks of \(root) (their HAVE bitfields); add sources that hold the content")
                }
            case .tick(let deadline):
                timer = nil
                timerDeadline = nil
                // Slowness is not death: how late this wake-up runs (the timer, then the queue
                // before it) is time this process could not read its sources; the scheduler does
                // not count it as their silence.
                if t > deadline {
                    maxLateness = max(maxLateness, t - deadline)
                    scheduler.handleSchedulingLag(t - deadline, now: t)
                }
                scheduler.handleTimeout(now: t)
            case .health(let change):
                let sourceID = sourceOfPeer[change.peer.description] ?? SourceID(change.peer.description)
                guard byID[sourceID] != nil else { continue eventLoop }
                if change.isUp {
                    redials.up(sourceID)
                    scheduler.handleSourceUp(sourceID, now: t)
                    onEvent?("source \(sourceID) answers health probes again")
                } else {
                    let oldest = scheduler.outstandingRequests(of: sourceID).compactMap { requestStart[$0.id] }.min()
                    if failedSources.insert(sourceID).inserted, let oldest {
                        failovers.append((sourceID.rawValue, Double(t - oldest) / 1e9))
                    }
                    onEvent?("source \(sourceID) is down (health probes unanswered); its requests moved to others")
                    scheduler.handleSourceDown(sourceID, now: t)
                }
            case .redial(let sourceID, let failure):
                guard let peer = byID[sourceID] as? any PeerChunkSource else { continue eventLoop }
                if let failure {
                    let wasDown = redials.isDown(sourceID)
                    if let delay = redials.failed(sourceID, error: failure, now: t) {
                        redialTasks.append(Self.redial(peer, sourceID, after: delay, into: continuation))
                    } else if wasDown {
                        onEvent?("source \(sourceID) stayed unreachable for \(configuration.downSourceLimit / 1_000_000_000) s (last dial: \(failure)); it is not dialled again")
                    }
                } else if let back = redials.succeeded(sourceID, now: t) {
                    onEvent?("source \(sourceID) is reachable again after \(String(format: "%.1f", back.seconds)) s (\(back.attempts) dial\(back.attempts == 1 ? "" : "s")); it gets requests again")
                    scheduler.handleSourceUp(sourceID, now: t)
                }
            case .progress(let rid, let n):
                guard running[rid] != nil else { continue eventLoop }
                if n > 0, firstDataByte == nil { firstDataByte = Double(t) / 1e9 }
                timeline.received(rid, bytes: n, now: t)
                scheduler.handleProgress(rid, bytes: n, now: t)
            case .done(let rid, let result):
                guard running.removeValue(forKey: rid) != nil else { continue eventLoop }
                timeline.ended(rid, now: t)
                let began = requestStart.removeValue(forKey: rid)
                guard let (sourceID, index) = scheduler.request(rid) else { continue eventLoop }
                switch result {
                case .success(let bytes):
                    if !(try store.contains(chunks[index].id)) {
                        try Self.write(chunks[index].id, bytes, to: store)
                        uncommitted.chunks.append((chunks[index].id, bytes.count))
                        fetchedBytes += bytes.count
                    }
                    plan.recordStored(chunks[index].id, size: bytes.count)
                    if firstByte == nil { firstByte = Double(t) / 1e9 }
                    redials.delivered(sourceID)
                    scheduler.handleResponse(rid, verified: true, now: t)
                    if uncommitted.chunks.count >= 64 {  // resume point: verified chunks survive an interruption
                        try store.commit(uncommitted)
                        uncommitted = CommitBatch()
                    }
                case .failure(let error as NodeError) where error.code == .corrupt:
                    scheduler.handleResponse(rid, verified: false, now: t)
                case .failure(let error as NodeError) where error.code == .notFound:
                    scheduler.handleFailure(rid, .notFound, now: t)
                case .failure(let error as NodeError) where error.code == .refused:
                    scheduler.handleFailure(rid, .refused, now: t)
                case .failure(let error):
                    if error is STOQError, let peer = byID[sourceID] as? any PeerChunkSource, peer.canRedial {
                        // The connection is gone: everything outstanding on it moves at once, and
                        // the source is down (not gone) while it is dialled again.
                        if failedSources.insert(sourceID).inserted {
                            failovers.append((sourceID.rawValue, began.map { Double(t - $0) / 1e9 } ?? 0))
                        }
                        scheduler.handleFailure(rid, .error("\(error)"), now: t)
                        if let delay = redials.lost(sourceID, error: Self.plain(error), now: t) {
                            onEvent?("source \(sourceID) lost its connection (\(Self.plain(error))); its requests moved to others; dialling it again for up to \(configuration.downSourceLimit / 1_000_000_000) s")
                            redialTasks.append(Self.redial(peer, sourceID, after: delay, into: continuation))
                        }
                        scheduler.handleSourceDown(sourceID, now: t)
                    } else if error is STOQError, failedSources.insert(sourceID).inserted {
                        // The connection is gone: everything outstanding on it moves at once.
                        let seconds = began.map { Double(t - $0) / 1e9 } ?? 0
                        failovers.append((sourceID.rawValue, seconds))
                        onEvent?("source \(sourceID) failed (\(error)); its requests moved to others")
                        scheduler.handleFailure(rid, .error("\(error)"), now: t)
                        // Its connection cannot come back: remove it (a source that is only "down"
                        // would keep a fetch with no other source waiting forever).
                        scheduler.handleSourceRemoved(sourceID, now: t)
                    } else {
                        scheduler.handleFailure(rid, .error("\(error)"), now: t)
                    }
                }
                onProgress?(scheduler.progress)
                timeline.window(sourceID, bytes: scheduler.windowBytes(of: sourceID) ?? 0, now: t)
            }
            timeline.inEndgame = scheduler.isInEndgame
            finished = try drainActions()
            if finished { break eventLoop }
            armTimer()
        }
        } catch {
            // Keep what was verified and written: a resumed fetch then skips it.
            do {
                try store.commit(uncommitted)
            } catch let commitError {
                logger.warning("could not record the chunks fetched so far", metadata: ["error": "\(commitError)"])
            }
            throw error
        }
        guard finished else { throw NodeError(.unavailable, "fetch of \(root) stopped before it completed") }
        try store.commit(uncommitted)
        try store.commit(plan.batch)
        let elapsed = Double((clock.now - start).nanoseconds) / 1e9
        let timelines = timeline.finish(at: now())
        let progress = scheduler.progress
        var nodeIDs: [String: NodeID] = [:]
        for source in sources {
            if let peer = source as? any PeerChunkSource, let id = peer.authenticatedPeer { nodeIDs[source.name] = id }
        }
        var report = FetchReport(
            root: root, plainBytes: plan.plainBytes, fetchedBytes: fetchedBytes, chunks: chunks.count,
            chunksAlreadyPresent: present.count, manifestChunks: plan.manifestChunks, seconds: elapsed,
            secondsToFirstByte: firstByte, secondsToFirstDataByte: firstDataByte,
            sources: progress.sources.map {
                .init(name: $0.id.rawValue, bytes: $0.bytesDelivered, chunks: $0.chunksDelivered, state: "\($0.state)",
                      stalls: $0.stalls, failures: $0.failures, offeredChunks: offered[$0.id],
                      routeCost: routeCosts[$0.id], cachedChunks: cached[$0.id], discardedBytes: $0.bytesDiscarded,
                      nodeID: nodeIDs[$0.id.rawValue])
            },
            failovers: failovers, firstRequestedSource: firstRequested,
            timelines: timelines, lateWakeups: scheduler.lateWakeups, maxWakeupLateness: Double(maxLateness) / 1e9
        )
        report.manifestBytesFetched = manifestsFrom.values.reduce(0) { $0 + $1.bytes }
        for i in report.sources.indices {
            if let m = manifestsFrom[report.sources[i].name] {
                report.sources[i].manifestBytes = m.bytes
                report.sources[i].manifestChunks = m.chunks
            }
        }
        return report
    }
}

/// Route costs of a fetch's sources (lower is preferred), asked once per fetch when the chunk
/// sizes are known.
public struct SourcePreference: Sendable {
    /// The cost of each source (same order), for chunks of the given average size in bytes;
    /// `.infinity` for a source nothing is known about.
    public let costs: @Sendable (_ sources: [any ChunkSource], _ chunkSize: Int) -> [Double]

    /// Wraps a cost function.
    public init(_ costs: @escaping @Sendable (_ sources: [any ChunkSource], _ chunkSize: Int) -> [Double]) {
        self.costs = costs
    }
}

extension ContentFetcher {
    /// How long a source may take to answer WANT before it is assumed to hold everything.
    static let availabilityTimeout: Duration = .seconds(1)

    /// Writes a verified chunk, turning a store failure into an error that says what happened to
    /// the fetch.
    static func write(_ id: ChunkID, _ bytes: [UInt8], to store: any ChunkStore) throws {
        do {
            try store.writeChunk(id, bytes)
        } catch let error as ContentError {
            throw NodeError(.storeFailed, "cannot store chunk \(id.short): \(error.reason) — the fetch stopped; the chunks verified so far are kept, so running it again resumes where it stopped")
        }
    }
}

/// The result of `operation`, or nil when it takes longer than `timeout` (it then runs on,
/// detached, and its result is dropped): a source that never answers cannot hold the caller.
package func withDeadline<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
    let once = OnceResume<T?>()
    return await withCheckedContinuation { continuation in
        once.set(continuation)
        let work = Task { once.resume(await operation()) }
        Task {
            try? await Task.sleep(for: timeout)
            if once.resume(nil) { work.cancel() }
        }
    }
}

/// Resumes a continuation once, whoever comes first.
///
/// `@unchecked Sendable`: state behind `lock`.
package final class OnceResume<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Never>?
    private var done = false
    package init() {}
    package func set(_ c: CheckedContinuation<T, Never>) { lock.withLock { continuation = c } }
    /// Whether it was resumed.
    package var isDone: Bool { lock.withLock { done } }
    /// Resumes with `value` if nothing did before; returns whether this call did.
    @discardableResult
    package func resume(_ value: T) -> Bool {
        let c: CheckedContinuation<T, Never>? = lock.withLock {
            guard !done else { return nil }
            done = true
            defer { continuation = nil }
            return continuation
        }
        c?.resume(returning: value)
        return c != nil
    }
}

extension Duration {
    /// The duration in whole nanoseconds.
    package var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
