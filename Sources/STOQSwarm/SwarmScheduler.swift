import DequeModule
import OrderedCollections
import STOQContent
import STOQWire
import STOQSimulation

/// A sans-IO multi-source chunk scheduler.
///
/// Feed it the chunks of a content (and which are already present), the sources (with
/// optional HAVE bitfields), health events and the outcome of every request; take from it
/// the requests to send and cancel with ``pollAction()``, and arm a timer from
/// ``pollTimeout()`` that calls ``handleTimeout(now:)``. Time is `now` in nanoseconds from
/// any fixed origin (a monotonic clock, or `SimInstant.nanoseconds` under the simulator).
///
/// A runtime drives it like this (one task or event loop owns the scheduler):
///
/// ```swift
/// var scheduler = SwarmScheduler(chunks: chunks, present: verifiedIndices)
/// scheduler.handleSourceAdded(SourceID(peerHex), have: haveBitfield, now: clock.now)
/// // after every input:
/// while let action = scheduler.pollAction() {
///     switch action {
///     case .request(let id, let source, let index): open a GET_CHUNK stream, tag it with id
///     case .cancel(let id, _, _): reset that stream
///     case .sourceBanned(let source, let reason): log, close if unused
///     case .completed, .failed: finish
///     }
/// }
/// arm a timer at scheduler.pollTimeout() that calls scheduler.handleTimeout(now:)
/// // stream events: handleProgress(id, bytes:now:) as bytes arrive,
/// // handleResponse(id, verified:now:) after hashing, handleFailure(id, .notFound/.error, now:)
/// // health: handleSourceDown/Up(source, now:); RTT from PING: handleRTTSample
/// ```
///
/// Policy:
/// - each source has a window: at least ``SwarmConfiguration/minOutstanding`` requests, at
///   most ``SwarmConfiguration/maxOutstanding``, and about `gain × throughput × RTT` bytes
///   outstanding in between, so fast sources get proportionally more;
/// - chunks are chosen rarest-first among those the source has, ties broken by a seeded
///   generator; verified chunks are never requested again. A source that fills misses from its
///   own upstream (an edge, with a `cached` bitfield) is given the chunks it caches first, and
///   counts for rarity only where it caches: its misses go wherever they are cheapest;
/// - when nothing is left to assign, idle sources duplicate the outstanding requests that
///   are furthest from done (endgame), and the losers are cancelled when one copy verifies;
/// - a corrupt chunk bans the source (its requests are reassigned at once); an error or
///   not-found penalises it (backoff, smaller window) and reassigns that request; a source
///   that delivers nothing for its stall timeout (from its RTT and throughput, at most
///   ``SwarmConfiguration/maxStallTimeout``) loses all its requests and is penalised; a
///   source reported down loses all its requests at once.
public struct SwarmScheduler: Sendable {
    /// The tuning in force.
    public let configuration: SwarmConfiguration
    /// The chunks of the content, by index.
    public let chunks: [SwarmChunk]
    /// Optional source preference (higher score first).
    public var ranker: (any SourceRanker)?

    private struct ChunkState: Sendable {
        var present = false
        var inFlight: [RequestID] = []
        /// Usable sources with a bitfield that has this chunk.
        var partialHolders = 0
        /// Usable sources that supply this chunk only by fetching it from their own upstream
        /// (an edge's miss): they count for availability but not for rarity.
        var fillingHolders = 0
    }

    private struct SourceRecord: Sendable {
        var id: SourceID
        var have: ChunkBitfield?
        /// Of the chunks it supplies, those it holds itself (nil: all of them). An edge that fills
        /// misses from upstream serves these cheaper and sooner.
        var cached: ChunkBitfield?
        var state: SwarmSourceState = .active
        var outstanding: [RequestID] = []
        var outstandingBytes = 0
        /// Bytes already received of the outstanding requests: `outstandingBytes` minus this is
        /// what the source still has to send.
        var receivedOutstanding = 0
        var lastProgressAt: UInt64 = 0
        /// ``SwarmScheduler/lagTotal`` when `lastProgressAt` was set: the local lag measured since
        /// then is not silence of this source.
        var lagAtProgress: UInt64 = 0
        /// The last progress (bytes or keepalive) while busy; nil after it went idle. The gaps
        /// between such events are what a busy machine stretches the stall timeout to.
        var lastDataAt: UInt64?
        var lastCompletionAt: UInt64 = 0
        var rate: Double?
        var rtt: UInt64?
        /// Smoothed request turnaround: from the moment a request could have started (sent, or
        /// the source's previous completion, whichever is later) to its first byte. What a window
        /// must cover beyond the chunk in service so the source never runs dry.
        var turnaround: UInt64?
        /// Delivery-rate sample in progress: bytes received since `sampleStart` (reset when
        /// the source goes from idle to busy, so idle time does not dilute it).
        var sampleStart: UInt64 = 0
        var sampleBytes = 0
        var windowScale: Double = 1
        var consecutiveFailures = 0
        var bytesDelivered = 0
        var chunksDelivered = 0
        var bytesDiscarded = 0
        var failures = 0
        var stalls = 0
        /// When health probing reported it down (nil while it is not down).
        var downSince: UInt64?
        /// Down for longer than ``SwarmConfiguration/downSourceLimit``: it no longer counts as a
        /// holder of anything, so chunks only it held fail the fetch instead of holding it.
        var givenUp = false

        /// Active or backing off: its outstanding requests are still being served.
        var isServing: Bool {
            switch state {
            case .active, .backingOff: true
            default: false
            }
        }

        var countsForAvailability: Bool {
            switch state {
            case .banned, .removed: false
            case .down: !givenUp
            default: true
            }
        }
    }

    private struct RequestRecord: Sendable {
        var source: SourceID
        var chunk: Int
        var sentAt: UInt64
        var received = 0
        var firstByteSeen = false
    }

    private var chunkStates: [ChunkState]
    /// For every index, the first index with the same chunk id (content with repeated chunks
    /// fetches each id once).
    private let leaderOf: [Int]
    /// Leader index → the other indices with the same id.
    private let followers: [Int: [Int]]
    private var pending: [Int] = []
    /// Chunks whose request was lost to a failure: reissued first, even past the byte window.
    private var urgent: [Int] = []
    private var pendingPosition: [Int]
    private var sources: OrderedDictionary<SourceID, SourceRecord> = [:]
    private var requests: [RequestID: RequestRecord] = [:]
    private var actions: Deque<SwarmAction> = []
    private var random: SplitMix64
    private var nextRequestNumber: UInt64 = 1
    private var fullHolders = 0
    private var remainingChunks = 0
    private var doneBytes = 0
    private let presentBytesAtStart: Int
    private let totalBytes: Int
    private let averageChunkSize: Int
    private var rotation = 0
    private var finished = false
    private var didFail = false
    /// Local scheduling lag credited so far (``handleSchedulingLag(_:now:)``), in nanoseconds;
    /// only differences of it are used.
    private var lagTotal: UInt64 = 0
    /// Late wake-ups credited (for reports and tests).
    private var lagCredited = 0
    /// The latest `now` given to an input (the scheduler's idea of the time between inputs).
    private var clock: UInt64 = 0
    /// Until when the runtime counts as busy (it reported lateness beyond the tolerance).
    private var busyUntil: UInt64 = 0
    /// The longest gap between two progress events of any busy source, decaying by half every
    /// ``gapHalfLife`` (evaluated at `clock`), and when it was taken.
    private var peakGap: UInt64 = 0
    private var peakGapAt: UInt64 = 0
    /// How fast an observed gap is forgotten.
    static let gapHalfLife: UInt64 = 2_000_000_000

    /// Creates a scheduler for `chunks`, of which `present` are already stored and verified.
    ///
    /// - Parameters:
    ///   - chunks: every chunk of the content; `chunks[i].index` must be `i`.
    ///   - present: indices already present (resume); they are never requested.
    ///   - configuration: tuning.
    ///   - ranker: optional source preference.
    public init(chunks: [SwarmChunk], present: some Sequence<Int> = [Int](), configuration: SwarmConfiguration = .init(), ranker: (any SourceRanker)? = nil) {
        for (position, chunk) in chunks.enumerated() {
            precondition(chunk.index == position, "SwarmScheduler: chunks[\(position)].index is \(chunk.index); give the chunks in index order")
        }
        self.configuration = configuration
        self.chunks = chunks
        self.ranker = ranker
        self.random = SplitMix64(seed: configuration.seed)
        self.chunkStates = Array(repeating: ChunkState(), count: chunks.count)
        self.pendingPosition = Array(repeating: -1, count: chunks.count)
        var firstIndex: [ChunkID: Int] = [:]
        var leaderOf = Array(chunks.indices)
        var followers: [Int: [Int]] = [:]
        for chunk in chunks {
            if let leader = firstIndex[chunk.id] {
                leaderOf[chunk.index] = leader
                followers[leader, default: []].append(chunk.index)
            } else {
                firstIndex[chunk.id] = chunk.index
            }
        }
        self.leaderOf = leaderOf
        self.followers = followers
        var presentBytes = 0
        for given in present where given >= 0 && given < chunks.count {
            // The same id at another index is present too.
            let leader = leaderOf[given]
            for index in [leader] + (followers[leader] ?? []) where !chunkStates[index].present {
                chunkStates[index].present = true
                presentBytes += chunks[index].size
            }
        }
        for index in chunks.indices where !chunkStates[index].present && leaderOf[index] == index {
            pendingPosition[index] = pending.count
            pending.append(index)
        }
        let states = chunkStates
        self.remainingChunks = chunks.indices.filter { !states[$0].present }.count
        self.presentBytesAtStart = presentBytes
        self.doneBytes = presentBytes
        self.totalBytes = chunks.reduce(0) { $0 + $1.size }
        self.averageChunkSize = chunks.isEmpty ? 1 : max(1, totalBytes / chunks.count)
        if remainingChunks == 0 {
            finished = true
            actions.append(.completed)
        }
    }

    // MARK: Inputs

    /// A source can serve this content. `have` is its HAVE bitfield (nil: it has everything).
    /// `cached`: of those, the chunks it holds itself when it fetches the others from its own
    /// upstream (an edge's HAVE with the fill flag); nil: it holds all it supplies.
    /// Adding a known source again updates its bitfield and makes it usable again unless it
    /// is banned.
    public mutating func handleSourceAdded(_ source: SourceID, have: ChunkBitfield? = nil, cached: ChunkBitfield? = nil, now: UInt64) {
        if let existing = sources[source] {
            if case .banned = existing.state { return }
            if existing.countsForAvailability { removeAvailability(of: source) }
            sources[source]!.have = have
            sources[source]!.cached = cached
            if case .removed = existing.state { sources[source]!.state = .active }
            addAvailability(of: source)
        } else {
            sources[source] = SourceRecord(id: source, have: have, cached: cached)
            addAvailability(of: source)
        }
        schedule(now: now)
    }

    /// A source's HAVE bitfield changed (a new HAVE message). `cached` as in
    /// ``handleSourceAdded(_:have:cached:now:)``.
    public mutating func handleHave(_ source: SourceID, have: ChunkBitfield?, cached: ChunkBitfield? = nil, now: UInt64) {
        guard let record = sources[source] else { return handleSourceAdded(source, have: have, cached: cached, now: now) }
        if record.countsForAvailability { removeAvailability(of: source) }
        sources[source]!.have = have
        sources[source]!.cached = cached
        if record.countsForAvailability { addAvailability(of: source) }
        schedule(now: now)
    }

    /// The runtime stops using `source` (connection closed for good): its requests are
    /// cancelled and reassigned at once.
    public mutating func handleSourceRemoved(_ source: SourceID, now: UInt64) {
        guard let record = sources[source], record.countsForAvailability else { return }
        abandonAll(of: source, now: now)
        removeAvailability(of: source)
        sources[source]!.state = .removed
        checkAvailability(now: now)
        schedule(now: now)
    }

    /// Health probing marks `source` down: its requests are cancelled and reassigned at once.
    public mutating func handleSourceDown(_ source: SourceID, now: UInt64) {
        guard let record = sources[source] else { return }
        switch record.state {
        case .banned, .removed, .down: return
        default: break
        }
        abandonAll(of: source, now: now)
        sources[source]!.state = .down
        sources[source]!.downSince = now
        schedule(now: now)
    }

    /// Health probing marks `source` up again (also after it was given up on: it holds its chunks
    /// again).
    public mutating func handleSourceUp(_ source: SourceID, now: UInt64) {
        guard let record = sources[source], case .down = record.state else { return }
        sources[source]!.state = .active
        sources[source]!.downSince = nil
        if record.givenUp {
            sources[source]!.givenUp = false
            addAvailability(of: source)
        }
        schedule(now: now)
    }

    /// An RTT sample for `source` (e.g. from PING/PONG), in nanoseconds.
    public mutating func handleRTTSample(_ source: SourceID, rtt: UInt64, now: UInt64) {
        guard sources[source] != nil else { return }
        updateRTT(source, sample: rtt)
    }

    /// `bytes` more bytes of request `request` arrived. Unknown or cancelled requests are ignored.
    ///
    /// Call it as bytes arrive (every read), not only at the end: the stall timeout is short
    /// (at most ``SwarmConfiguration/maxStallTimeout``). `bytes: 0` (e.g. when the response
    /// header arrives before a slow cache fill) only says the source is alive.
    public mutating func handleProgress(_ request: RequestID, bytes: Int, now: UInt64) {
        guard var record = requests[request], bytes >= 0 else { return }
        guard bytes > 0 else {
            noteAlive(record.source, now: now)
            return
        }
        if !record.firstByteSeen {
            record.firstByteSeen = true
            if let source = sources[record.source] {
                // Only a request sent to an idle source measures the path's RTT.
                if record.sentAt >= source.lastCompletionAt, source.outstanding.first == request {
                    updateRTT(record.source, sample: now &- record.sentAt)
                }
                // The turnaround counts from when the source could have started this response:
                // behind a queue of earlier responses, only the gap after the last of them completed.
                let ready = max(record.sentAt, source.lastCompletionAt)
                let sample = max(now > ready ? now - ready : 0, 1_000)
                sources[record.source]!.turnaround = source.turnaround.map { ($0 * 7 + sample) / 8 } ?? sample
            }
        }
        let counted = min(bytes, max(0, chunks[record.chunk].size - record.received))
        record.received += counted
        requests[request] = record
        sources[record.source]!.sampleBytes += bytes
        sources[record.source]!.receivedOutstanding += counted
        topUp(record.source, now: now)
        noteAlive(record.source, now: now)
    }

    /// Request `request` finished: `verified` tells whether the bytes hashed to the chunk id.
    ///
    /// A verified chunk is done (other copies are cancelled); an unverified one bans the
    /// source and reassigns all its requests. Unknown or cancelled requests are ignored.
    public mutating func handleResponse(_ request: RequestID, verified: Bool, now: UInt64) {
        guard let record = requests[request] else { return }
        let chunk = record.chunk
        let size = chunks[chunk].size
        removeRequest(request)
        if verified {
            var source = sources[record.source]!
            // Delivery rate: every byte the source sent over the time it was busy, whatever the
            // order it serves its requests in (one after another, or interleaved so that several
            // complete at once). A sample spans at least `rateSampleInterval` once a first one exists.
            let elapsed = now > source.sampleStart ? now - source.sampleStart : 0
            if source.sampleBytes > 0, elapsed > 0, source.rate == nil || elapsed >= configuration.rateSampleInterval {
                let sample = Double(source.sampleBytes) * 1e9 / Double(max(elapsed, 1_000))
                source.rate = source.rate.map { $0 * 0.75 + sample * 0.25 } ?? sample
                source.sampleStart = now
                source.sampleBytes = 0
            }
            source.lastCompletionAt = now
            source.lastProgressAt = max(source.lastProgressAt, now)
            source.lagAtProgress = lagTotal
            source.consecutiveFailures = 0
            source.windowScale = min(1, source.windowScale + 0.25)
            if !chunkStates[chunk].present {
                source.bytesDelivered += size
                source.chunksDelivered += 1
            } else {
                source.bytesDiscarded += record.received
            }
            sources[record.source] = source
            if !chunkStates[chunk].present { markPresent(chunk, now: now) }
        } else {
            sources[record.source]!.bytesDiscarded += record.received
            if pendingPosition[chunk] >= 0 { urgent.append(chunk) }
            ban(record.source, reason: .corruptChunk(index: chunk), now: now)
        }
        schedule(now: now)
    }

    /// Request `request` ended without a chunk. The source is penalised (backoff, smaller
    /// window) and the chunk goes to another source; `.notFound` also stops asking this
    /// source for this chunk.
    public mutating func handleFailure(_ request: RequestID, _ failure: SwarmRequestFailure, now: UInt64) {
        guard let record = requests[request] else { return }
        removeRequest(request)
        if pendingPosition[record.chunk] >= 0 { urgent.append(record.chunk) }
        sources[record.source]!.bytesDiscarded += record.received
        sources[record.source]!.failures += 1
        if failure == .notFound, let source = sources[record.source], source.countsForAvailability {
            removeAvailability(of: record.source)
            var have = source.have ?? ChunkBitfield(count: chunks.count, allSet: true)
            if record.chunk < have.count { have[record.chunk] = false }
            sources[record.source]!.have = have
            addAvailability(of: record.source)
        }
        penalise(record.source, now: now)
        checkAvailability(now: now)
        schedule(now: now)
    }

    /// Chunk `index` became present by other means (another fetch, the local store): it is
    /// not requested again and its outstanding requests are cancelled.
    public mutating func handleChunkPresent(_ index: Int, now: UInt64) {
        guard index >= 0, index < chunks.count, !chunkStates[index].present, !finished else { return }
        markPresent(leaderOf[index], now: now)
        schedule(now: now)
    }

    /// The runtime measured that it ran `lateness` nanoseconds later than it asked to (a timer
    /// that fired late, an event that waited in its queue): the process itself was starved of
    /// CPU, so bytes a source sent meanwhile may not have been seen yet. Such time is not held
    /// against any source: each waiting source's stall deadline moves back by the lateness beyond
    /// ``SwarmConfiguration/lagTolerance``, and by as much again for the backlog to be read, at
    /// most ``SwarmConfiguration/maxLagCredit`` in all since the source's last progress (so a
    /// source that really stopped is still detected on a starved machine, within
    /// ``SwarmConfiguration/maxStallTimeout`` plus that credit plus the lateness itself).
    ///
    /// Call it before ``handleTimeout(now:)`` when a timer fires late (with how late it fired).
    public mutating func handleSchedulingLag(_ lateness: UInt64, now: UInt64) {
        clock = max(clock, now)
        guard lateness > configuration.lagTolerance else { return }
        let (until, late) = now.addingReportingOverflow(configuration.busyHold)
        busyUntil = late ? UInt64.max : until
        let excess = lateness - configuration.lagTolerance
        let (doubled, overflow) = excess.multipliedReportingOverflow(by: 2)
        let credit = overflow ? UInt64.max : doubled
        let (total, wrapped) = lagTotal.addingReportingOverflow(credit)
        lagTotal = wrapped ? UInt64.max : total
        lagCredited &+= 1
    }

    /// Runs expired timers: stall detection and the end of backoffs. Harmless at any time.
    public mutating func handleTimeout(now: UInt64) {
        clock = max(clock, now)
        guard !finished else { return }
        // Sources down for too long no longer hold anything: a chunk only they had fails the fetch
        // with a clear error rather than holding it until they return.
        var gaveUp = false
        for position in sources.values.indices {
            let source = sources.values[position]
            guard case .down = source.state, !source.givenUp, let since = source.downSince,
                  now >= since &+ configuration.downSourceLimit else { continue }
            removeAvailability(of: source.id)
            sources.values[position].givenUp = true
            gaveUp = true
        }
        if gaveUp {
            checkAvailability(now: now)
            if finished { return }
        }
        for position in sources.values.indices {
            let source = sources.values[position]
            guard source.isServing, !source.outstanding.isEmpty else { continue }
            if now >= stallDeadline(source) {
                sources.values[position].stalls += 1
                abandonAll(of: source.id, now: now)
                penalise(source.id, now: now)
            }
        }
        schedule(now: now)
    }

    // MARK: Outputs

    /// The next action for the runtime, or nil when there is none now.
    public mutating func pollAction() -> SwarmAction? { actions.popFirst() }

    /// When ``handleTimeout(now:)`` should next run (nanoseconds), or nil for never.
    public func pollTimeout() -> UInt64? {
        guard !finished else { return nil }
        var deadline: UInt64?
        for source in sources.values {
            if source.isServing, !source.outstanding.isEmpty {
                let stall = stallDeadline(source)
                deadline = min(deadline ?? stall, stall)
            }
            if case .backingOff(let until) = source.state { deadline = min(deadline ?? until, until) }
            if case .down = source.state, !source.givenUp, let since = source.downSince {
                let giveUp = since &+ configuration.downSourceLimit
                deadline = min(deadline ?? giveUp, giveUp)
            }
        }
        return deadline
    }

    /// Whether the fetch completed or failed (no more actions will follow those queued).
    public var isFinished: Bool { finished }

    /// The source and chunk of an outstanding request, or nil when it is unknown, done or cancelled.
    public func request(_ request: RequestID) -> (source: SourceID, chunkIndex: Int)? {
        requests[request].map { ($0.source, $0.chunk) }
    }

    /// The requests outstanding on `source`, oldest first.
    public func outstandingRequests(of source: SourceID) -> [(id: RequestID, chunkIndex: Int)] {
        (sources[source]?.outstanding ?? []).compactMap { id in requests[id].map { (id, $0.chunk) } }
    }

    /// The sources with a request outstanding for chunk `index`.
    public func sources(fetching index: Int) -> [SourceID] {
        chunkStates[index].inFlight.compactMap { requests[$0]?.source }
    }

    /// The state of `source`, or nil when it was never added.
    public func state(of source: SourceID) -> SwarmSourceState? { sources[source]?.state }

    /// Whether chunk `index` is present and verified.
    public func isPresent(_ index: Int) -> Bool { chunkStates[index].present }

    /// Needed chunks that no remaining (not banned, not removed) source has.
    public var unavailableChunks: [Int] {
        chunks.indices.filter { !chunkStates[$0].present && leaderOf[$0] == $0 && availability($0) == 0 }
    }

    /// Late wake-ups credited with ``handleSchedulingLag(_:now:)`` so far (beyond the tolerance).
    public var lateWakeups: Int { lagCredited }

    /// The time at which `source` is declared stalled unless it makes progress (its stall
    /// timeout plus the local lag credited since its last progress), or nil when it has nothing
    /// outstanding or is unknown.
    public func stallDeadline(of source: SourceID) -> UInt64? {
        guard let record = sources[source], record.isServing, !record.outstanding.isEmpty else { return nil }
        return stallDeadline(record)
    }

    /// The stall timeout in force for `source` (nanoseconds), or nil for an unknown source.
    public func stallTimeout(of source: SourceID) -> UInt64? { sources[source].map(stallTimeout) }

    /// A snapshot of the fetch and every source.
    public var progress: SwarmProgress {
        SwarmProgress(
            chunkCount: chunks.count,
            chunksDone: chunks.count - remainingChunks,
            totalBytes: totalBytes,
            bytesDone: doneBytes,
            bytesPresentAtStart: presentBytesAtStart,
            outstandingRequests: requests.count,
            inEndgame: !finished && pending.isEmpty,
            isComplete: finished && !didFail,
            isFailed: didFail,
            sources: sources.values.map { source in
                SwarmSourceProgress(
                    id: source.id, state: source.state, bytesDelivered: source.bytesDelivered,
                    chunksDelivered: source.chunksDelivered, bytesDiscarded: source.bytesDiscarded,
                    outstandingRequests: source.outstanding.count, throughputBytesPerSecond: source.rate,
                    rttNanoseconds: source.rtt, windowBytes: Int(windowBytes(source).rounded()),
                    outstandingBytes: source.outstandingBytes, failures: source.failures, stalls: source.stalls)
            })
    }

    /// The byte window of `source` now (nil for an unknown source): it is given requests while
    /// its outstanding bytes are below this, at least ``SwarmConfiguration/minOutstanding`` and at
    /// most ``SwarmConfiguration/maxOutstanding`` of them.
    public func windowBytes(of source: SourceID) -> Int? { sources[source].map { Int(windowBytes($0).rounded()) } }

    /// Requests of `source` in flight (0 for an unknown source).
    public func outstandingCount(of source: SourceID) -> Int { sources[source]?.outstanding.count ?? 0 }

    /// Whether every needed chunk is assigned (only endgame duplicates are issued from now on).
    public var isInEndgame: Bool { !finished && pending.isEmpty }

    // MARK: Internals

    private func has(_ source: SourceRecord, _ chunk: Int) -> Bool {
        guard let have = source.have else { return true }
        return chunk < have.count && have[chunk]
    }

    private func availability(_ chunk: Int) -> Int { chunkStates[chunk].partialHolders + fullHolders }

    /// Holders that have the chunk themselves (for rarest-first): a filling source's misses do
    /// not make a chunk common.
    private func rarity(_ chunk: Int) -> Int { availability(chunk) - chunkStates[chunk].fillingHolders }

    /// Whether `source` supplies `chunk` from what it holds itself (not by filling a miss).
    private func holdsItself(_ source: SourceRecord, _ chunk: Int) -> Bool {
        guard let cached = source.cached else { return true }
        return chunk < cached.count && cached[chunk]
    }

    private mutating func addAvailability(of id: SourceID) {
        countFilling(of: id, by: 1)
        guard let have = sources[id]!.have else { fullHolders += 1; return }
        for chunk in chunks.indices where chunk < have.count && have[chunk] { chunkStates[chunk].partialHolders += 1 }
    }

    private mutating func removeAvailability(of id: SourceID) {
        countFilling(of: id, by: -1)
        guard let have = sources[id]!.have else { fullHolders -= 1; return }
        for chunk in chunks.indices where chunk < have.count && have[chunk] { chunkStates[chunk].partialHolders -= 1 }
    }

    /// Whether the incremental holder counts match a count from scratch (for tests).
    var holderCountsAreConsistent: Bool {
        var full = 0
        var partial = [Int](repeating: 0, count: chunks.count)
        var filling = [Int](repeating: 0, count: chunks.count)
        for source in sources.values where source.countsForAvailability {
            if source.have == nil { full += 1 }
            for chunk in chunks.indices where has(source, chunk) {
                if source.have != nil { partial[chunk] += 1 }
                if !holdsItself(source, chunk) { filling[chunk] += 1 }
            }
        }
        return full == fullHolders && chunks.indices.allSatisfy {
            partial[$0] == chunkStates[$0].partialHolders && filling[$0] == chunkStates[$0].fillingHolders
        }
    }

    private mutating func countFilling(of id: SourceID, by delta: Int) {
        let source = sources[id]!
        guard source.cached != nil else { return }
        for chunk in chunks.indices where has(source, chunk) && !holdsItself(source, chunk) { chunkStates[chunk].fillingHolders += delta }
    }

    private mutating func updateRTT(_ id: SourceID, sample: UInt64) {
        let sample = max(sample, 1_000)
        if let rtt = sources[id]!.rtt {
            sources[id]!.rtt = (rtt * 7 + sample) / 8
        } else {
            sources[id]!.rtt = sample
        }
    }

    private func stallTimeout(_ source: SourceRecord) -> UInt64 {
        let rtt = Double(source.rtt ?? configuration.initialRTT)
        var expected = 4 * rtt
        if let rate = source.rate, rate > 0 {
            expected += 4 * Double(configuration.progressGranularityBytes) / rate * 1e9
        }
        let timeout = UInt64(min(expected, Double(UInt64.max / 2)))
        let normal = min(max(timeout, configuration.minStallTimeout), configuration.maxStallTimeout)
        // On a busy machine (the runtime reported late wake-ups lately), the sources' own pace is
        // uneven: a source gets twice the longest recent gap between progress events, at most
        // busyStallTimeout. On an idle machine nothing changes.
        guard clock < busyUntil else { return normal }
        let (stretched, overflow) = decayedPeakGap.multipliedReportingOverflow(by: 2)
        return max(normal, min(overflow ? UInt64.max : stretched, configuration.busyStallTimeout))
    }

    /// When `source` is stalled unless it shows progress: its stall timeout after its last
    /// progress, plus the local lag measured since then (at most ``SwarmConfiguration/maxLagCredit``).
    private func stallDeadline(_ source: SourceRecord) -> UInt64 {
        let credit = min(lagTotal &- source.lagAtProgress, configuration.maxLagCredit)
        let (deadline, overflow) = source.lastProgressAt.addingReportingOverflow(stallTimeout(source) &+ credit)
        return overflow ? UInt64.max : deadline
    }

    /// Marks `id` alive at `now` (bytes, a keepalive, a completion).
    private mutating func noteAlive(_ id: SourceID, now: UInt64) {
        guard sources[id] != nil else { return }
        clock = max(clock, now)
        if let previous = sources[id]!.lastDataAt, now > previous {
            let gap = now - previous
            let current = decayedPeakGap
            if gap >= current {
                peakGap = gap
                peakGapAt = now
            }
        }
        sources[id]!.lastDataAt = now
        sources[id]!.lastProgressAt = max(sources[id]!.lastProgressAt, now)
        sources[id]!.lagAtProgress = lagTotal
    }

    /// ``peakGap`` halved for every ``gapHalfLife`` since it was taken.
    private var decayedPeakGap: UInt64 {
        let halvings = (clock > peakGapAt ? clock - peakGapAt : 0) / Self.gapHalfLife
        return halvings >= 64 ? 0 : peakGap >> halvings
    }

    private func windowBytes(_ source: SourceRecord) -> Double {
        guard let rate = source.rate else { return Double(configuration.initialWindowBytes) * source.windowScale }
        let turnaround = Double(source.turnaround ?? source.rtt ?? configuration.initialRTT) / 1e9
        let window = max(configuration.windowGain * rate * turnaround + Double(averageChunkSize), Double(configuration.minWindowBytes))
        return window * source.windowScale
    }

    private func canTake(_ source: SourceRecord) -> Bool {
        guard source.state == .active else { return false }
        let count = source.outstanding.count
        let maximum = max(1, Int(Double(configuration.maxOutstanding) * source.windowScale))
        let minimum = max(1, min(configuration.minOutstanding, maximum))
        if count < minimum { return true }
        // The window bounds the bytes the source still has to send, not whole requests: a source
        // that serves its requests interleaved (QUIC streams round-robin) gets the next one while
        // the current ones are still arriving, instead of after they all complete at once.
        return count < maximum && Double(source.outstandingBytes - source.receivedOutstanding) < windowBytes(source)
    }

    private mutating func removeFromPending(_ chunk: Int) {
        let position = pendingPosition[chunk]
        guard position >= 0 else { return }
        let last = pending.removeLast()
        if last != chunk {
            pending[position] = last
            pendingPosition[last] = position
        }
        pendingPosition[chunk] = -1
    }

    private mutating func addToPending(_ chunk: Int) {
        guard pendingPosition[chunk] < 0, !chunkStates[chunk].present else { return }
        pendingPosition[chunk] = pending.count
        pending.append(chunk)
    }

    private mutating func issue(_ source: SourceID, chunk: Int, now: UInt64) {
        let id = RequestID(rawValue: nextRequestNumber)
        nextRequestNumber += 1
        requests[id] = RequestRecord(source: source, chunk: chunk, sentAt: now)
        if sources[source]!.outstanding.isEmpty {
            sources[source]!.lastProgressAt = now
            sources[source]!.lagAtProgress = lagTotal
            sources[source]!.lastDataAt = nil
            sources[source]!.sampleStart = now
            sources[source]!.sampleBytes = 0
        }
        sources[source]!.outstanding.append(id)
        sources[source]!.outstandingBytes += chunks[chunk].size
        chunkStates[chunk].inFlight.append(id)
        removeFromPending(chunk)
        actions.append(.request(id, source: source, chunkIndex: chunk))
    }

    /// Forgets a request (no action emitted); the chunk returns to pending when no copy is left.
    private mutating func removeRequest(_ id: RequestID) {
        guard let record = requests.removeValue(forKey: id) else { return }
        if var source = sources[record.source] {
            if let position = source.outstanding.firstIndex(of: id) { source.outstanding.remove(at: position) }
            source.outstandingBytes -= chunks[record.chunk].size
            source.receivedOutstanding -= record.received
            sources[record.source] = source
        }
        if let position = chunkStates[record.chunk].inFlight.firstIndex(of: id) {
            chunkStates[record.chunk].inFlight.remove(at: position)
        }
        if chunkStates[record.chunk].inFlight.isEmpty { addToPending(record.chunk) }
    }

    private mutating func cancel(_ id: RequestID, urgent makeUrgent: Bool = false) {
        guard let record = requests[id] else { return }
        sources[record.source]!.bytesDiscarded += record.received
        removeRequest(id)
        actions.append(.cancel(id, source: record.source, chunkIndex: record.chunk))
        if makeUrgent, pendingPosition[record.chunk] >= 0 { urgent.append(record.chunk) }
    }

    /// Cancels every request of `source`; their chunks are reissued elsewhere first.
    private mutating func abandonAll(of source: SourceID, now: UInt64) {
        for id in sources[source]!.outstanding { cancel(id, urgent: true) }
    }

    private mutating func penalise(_ source: SourceID, now: UInt64) {
        guard var record = sources[source] else { return }
        record.consecutiveFailures += 1
        record.windowScale = max(0.05, record.windowScale / 2)
        switch record.state {
        case .active, .backingOff:
            let shift = UInt64(min(record.consecutiveFailures - 1, 20))
            let backoff = min(configuration.baseBackoff << shift, configuration.maxBackoff)
            record.state = .backingOff(until: now &+ backoff)
        default:
            break
        }
        sources[source] = record
    }

    private mutating func ban(_ source: SourceID, reason: SwarmBanReason, now: UInt64) {
        guard let record = sources[source] else { return }
        if case .banned = record.state { return }
        abandonAll(of: source, now: now)
        if record.countsForAvailability { removeAvailability(of: source) }
        sources[source]!.state = .banned(reason)
        actions.append(.sourceBanned(source, reason: reason))
        checkAvailability(now: now)
    }

    private mutating func markPresent(_ chunk: Int, now: UInt64) {
        chunkStates[chunk].present = true
        removeFromPending(chunk)
        for id in chunkStates[chunk].inFlight { cancel(id) }
        remainingChunks -= 1
        doneBytes += chunks[chunk].size
        for follower in followers[chunk] ?? [] where !chunkStates[follower].present {
            chunkStates[follower].present = true
            remainingChunks -= 1
            doneBytes += chunks[follower].size
        }
        if remainingChunks == 0 {
            for id in requests.keys.sorted() { cancel(id) }
            finished = true
            actions.append(.completed)
        }
    }

    /// Fails the fetch when a needed chunk has no remaining holder.
    private mutating func checkAvailability(now: UInt64) {
        guard !finished else { return }
        let missing = unavailableChunks
        guard !missing.isEmpty else { return }
        let lost = sources.values.compactMap { source -> String? in
            switch source.state {
            case .banned(let reason): "\(source.id) banned: \(reason)"
            case .removed: "\(source.id) removed"
            case .down where source.givenUp:
                "\(source.id) down (health probes unanswered or connection lost) for \((now > (source.downSince ?? now) ? now - (source.downSince ?? now) : 0) / 1_000_000_000) s"
            default: nil
            }
        }
        let shown = missing.prefix(8).map { "\($0) (\(chunks[$0].id.short))" }.joined(separator: ", ")
        var reason = "no remaining source has chunk\(missing.count == 1 ? "" : "s") \(shown)\(missing.count > 8 ? " and \(missing.count - 8) more" : "")"
        reason += lost.isEmpty ? "; the other sources do not hold it (HAVE or notFound)" : "; lost sources: \(lost.joined(separator: "; ")); the others do not hold it"
        reason += ". Add sources that hold the content and resume: verified chunks are kept."
        for id in requests.keys.sorted() { cancel(id) }
        finished = true
        didFail = true
        actions.append(.failed(SwarmError(.noSource, chunkIndices: missing, reason)))
    }

    private mutating func schedule(now: UInt64) {
        guard !finished, !sources.isEmpty else { return }
        // Backoffs that ended.
        for position in sources.values.indices {
            if case .backingOff(let until) = sources.values[position].state, until <= now {
                sources.values[position].state = .active
            }
        }
        if !urgent.isEmpty { reissueUrgent(now: now) }
        let order = sourceOrder()
        for position in order {
            while canTake(sources.values[position]) {
                guard let chunk = pickChunk(for: position) else { break }
                issue(sources.values[position].id, chunk: chunk, now: now)
            }
        }
        guard configuration.endgame, pending.isEmpty else { return }
        for position in order where sources.values[position].state == .active && sources.values[position].outstanding.isEmpty {
            guard let chunk = pickDuplicate(for: position) else { continue }
            issue(sources.values[position].id, chunk: chunk, now: now)
        }
    }

    /// Gives `source` new requests while its window has room (after bytes arrived on it).
    private mutating func topUp(_ source: SourceID, now: UInt64) {
        guard !finished, !pending.isEmpty, let position = sources.index(forKey: source) else { return }
        while canTake(sources.values[position]) {
            guard let chunk = pickChunk(for: position) else { break }
            issue(source, chunk: chunk, now: now)
        }
    }

    /// Reissues chunks lost to a failure at once, each to the usable source that holds it and
    /// should start it soonest (least outstanding work for its throughput), past its byte
    /// window but within its request limit. Failover must not wait for a window to open.
    private mutating func reissueUrgent(now: UInt64) {
        var remaining: [Int] = []
        for chunk in urgent where pendingPosition[chunk] >= 0 && !remaining.contains(chunk) {
            var best: (wait: Double, position: Int)?
            for position in sources.values.indices {
                let source = sources.values[position]
                guard source.state == .active, has(source, chunk),
                      source.outstanding.count < max(1, Int(Double(configuration.maxOutstanding) * source.windowScale)) else { continue }
                let wait = Double(source.outstandingBytes) / (source.rate ?? 1e6)
                if best == nil || wait < best!.wait { best = (wait, position) }
            }
            if let best {
                issue(sources.values[best.position].id, chunk: chunk, now: now)
            } else {
                remaining.append(chunk)
            }
        }
        urgent = remaining
    }

    /// Positions of the sources in the order this round fills their windows.
    mutating func sourceOrder() -> [Int] {
        let count = sources.count
        if let ranker {
            let scores = sources.keys.map { ranker.score(for: $0) }
            return Array(0 ..< count).sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        }
        rotation = (rotation + 1) % count
        return (0 ..< count).map { ($0 + rotation) % count }
    }

    private mutating func pickChunk(for position: Int) -> Int? {
        let source = sources.values[position]
        // A filling source first takes what it holds itself; its misses come after.
        if source.cached != nil, let held = pickChunk(for: source, onlyHeld: true) { return held }
        return pickChunk(for: source, onlyHeld: false)
    }

    private mutating func pickChunk(for source: SourceRecord, onlyHeld: Bool) -> Int? {
        var best = -1
        var bestAvailability = Int.max
        var ties: UInt64 = 0
        for chunk in pending where has(source, chunk) && (!onlyHeld || holdsItself(source, chunk)) {
            let available = rarity(chunk)
            if available < bestAvailability {
                best = chunk
                bestAvailability = available
                ties = 1
            } else if available == bestAvailability {
                ties += 1
                if random.next() % ties == 0 { best = chunk }
            }
        }
        return best >= 0 ? best : nil
    }

    private func pickDuplicate(for position: Int) -> Int? {
        let source = sources.values[position]
        var best: (miss: Int, fraction: Double, copies: Int, chunk: Int)?
        var seen = Set<Int>()
        for record in requests.values where !seen.contains(record.chunk) {
            seen.insert(record.chunk)
            let chunk = record.chunk
            let copies = chunkStates[chunk].inFlight
            guard copies.count < configuration.endgameMaxCopies, has(source, chunk),
                  !copies.contains(where: { requests[$0]?.source == source.id }) else { continue }
            let size = max(1, chunks[chunk].size)
            let fraction = copies.map { Double(requests[$0]?.received ?? 0) / Double(size) }.max() ?? 0
            // A copy the source holds itself goes before one it would have to fill.
            let candidate = (holdsItself(source, chunk) ? 0 : 1, fraction, copies.count, chunk)
            if let current = best {
                if candidate < (current.miss, current.fraction, current.copies, current.chunk) { best = candidate }
            } else {
                best = candidate
            }
        }
        return best?.chunk
    }
}
