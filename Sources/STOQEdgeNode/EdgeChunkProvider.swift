import Logging
import STOQContent
import STOQEdge
import STOQExchange

/// An edge's chunk supply: its local store first, then its upstream peers (origin or other edges).
/// What it fetched is kept when the byte-bounded cache policy (W-TinyLFU by default) admits it, and
/// the chunks the policy evicts leave the store. Concurrent misses for one chunk share one upstream
/// fetch.
///
/// Read-ahead: the edge learns the chunk order of every file manifest it serves; when a reader (one
/// connection) asks for a manifest's chunks in order, a sans-IO ``Prefetcher`` per reader and
/// manifest names the next chunks, which are fetched from upstream (at most
/// ``PrefetchSettings/maximumConcurrent`` at once) into a separate, byte-bounded prefetch buffer.
/// Speculation never displaces cached content: a prefetched chunk enters the cache (through the
/// policy's normal admission) only when a reader actually asks for it; unread ones are dropped
/// from the buffer, oldest first.
///
/// Fills are bounded: an upstream that sends nothing for ``fillSilenceLimit`` (of this process's
/// running time) fails the fill, and an ``UpstreamBreaker`` leaves a failed upstream alone for a
/// while. When no upstream can fill, the edge says so: its HAVE drops the fill flag and its misses
/// are answered with not-found at once, so a client moves them elsewhere instead of waiting.
public actor EdgeChunkProvider: ChunkProvider {
    /// Read-ahead tuning.
    public struct PrefetchSettings: Sendable {
        /// Window growth and reorder tolerance of each reader's ``Prefetcher``.
        public var window: Prefetcher.Configuration
        /// Upstream prefetches in flight at once (0 turns read-ahead off).
        public var maximumConcurrent: Int
        /// Bytes of prefetched, not yet read chunks held in memory.
        public var bufferBytes: Int
        /// File manifests whose chunk order is remembered.
        public var maximumManifests: Int
        /// Reader positions remembered (one per connection and manifest).
        public var maximumReaders: Int

        /// Creates settings.
        /// - Parameters:
        ///   - window: the read-ahead window (default: 2 growing to 16, reorder tolerance 8 for
        ///     pipelining readers).
        ///   - maximumConcurrent: upstream prefetches at once (default 4).
        ///   - bufferBytes: prefetch buffer bound (default 64 MiB).
        public init(
            window: Prefetcher.Configuration = .init(initialWindow: 2, maximumWindow: 16, reorderTolerance: 8),
            maximumConcurrent: Int = 4, bufferBytes: Int = 64 << 20, maximumManifests: Int = 256, maximumReaders: Int = 1024
        ) {
            self.window = window
            self.maximumConcurrent = maximumConcurrent
            self.bufferBytes = bufferBytes
            self.maximumManifests = maximumManifests
            self.maximumReaders = maximumReaders
        }

        /// No read-ahead.
        public static let off = PrefetchSettings(maximumConcurrent: 0)
    }

    /// Counters for reports and `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Reads answered from the store (cache hits).
        public var hits = 0
        /// Reads that had to go upstream themselves.
        public var misses = 0
        /// Reads answered by read-ahead: from the prefetch buffer, or by joining a prefetch in flight.
        public var prefetchHits = 0
        /// Bytes fetched from upstream (demand and read-ahead).
        public var upstreamBytes = 0
        /// Chunks fetched ahead.
        public var prefetched = 0
        /// Prefetched chunks dropped unread.
        public var prefetchWasted = 0
    }

    /// The local store (cache).
    public let store: any ChunkStore
    private let upstream: [PeerAddress]
    private let peers: PeerSet
    private let logger: Logger
    private let settings: PrefetchSettings
    private var inFlight: [ChunkID: Task<[UInt8]?, any Error>] = [:]
    /// The progress of each fill in flight (requests that join it follow it too).
    private var fills: [ChunkID: FillProgress] = [:]
    /// Requests waiting for an upstream fill: any upstream progress shows them the edge is alive
    /// (the origin may serve this edge's fills one after another, so one fill can wait without
    /// progress of its own while the others move).
    private let waiting = FillRegistry()
    private var cache: EdgeCache
    private var stats = Counters()
    /// Which upstream peers are worth a fill now.
    private var breaker: UpstreamBreaker<PeerAddress>
    /// Upstream peers health probing reported down at the last look (to feed transitions only).
    private var seenDown = Set<PeerAddress>()
    /// Per upstream: bumped by every byte or keepalive of any fill from it.
    private var liveness: [PeerAddress: FillWatch] = [:]
    /// Whether the edge last said it can fill (logged when it changes).
    private var couldFill = true
    private let clockOrigin = ContinuousClock.now
    /// How long a fill may go without a byte or keepalive from its upstream (counting only time
    /// this process ran) before it fails and the next upstream is tried.
    public let fillSilenceLimit: Duration

    // Read-ahead state.
    private struct ReaderKey: Hashable { var reader: ObjectIdentifier; var manifest: ChunkID }
    private var manifests: [ChunkID: [ChunkID]] = [:]
    private var manifestOrder: [ChunkID] = []
    private var manifestOf: [ChunkID: ChunkID] = [:]
    private var readers: [ReaderKey: Prefetcher] = [:]
    private var readerOrder: [ReaderKey] = []
    private var queue: [ChunkID] = []
    private var prefetching: Set<ChunkID> = []
    private var buffer: [ChunkID: [UInt8]] = [:]
    private var bufferOrder: [ChunkID] = []
    private var bufferBytes = 0
    /// Where fills are reported as live transfers (`stoq status`; nil: not reported).
    private let tracker: TransferTracker?
    /// Names upstream peers in those reports.
    private let peerNames: PeerNames?
    /// The content each pending fill is for: what its reader reads (bounded by fills and read-ahead).
    private var fillContent: [ChunkID: String] = [:]
    /// Told of manifests cached and chunks removed (see ``observeCache(_:)``).
    var cacheObserver: (@Sendable (EdgeCacheChange) -> Void)?

    /// Creates a provider.
    /// - Parameters:
    ///   - cacheBytes: the most chunk bytes the edge keeps (positive; smaller values are taken as 1).
    ///   - prefetch: read-ahead tuning (``PrefetchSettings/off`` to disable).
    ///   - fillSilenceLimit: how long a fill waits for a byte from its upstream before it fails.
    ///   - breaker: when a failed upstream is tried again.
    public init(
        store: any ChunkStore, upstream: [PeerAddress], peers: PeerSet,
        cacheBytes: Int = 1 << 30, policy: EdgeCache.Kind = .tinyLFU, prefetch: PrefetchSettings = .init(),
        fillSilenceLimit: Duration = .seconds(5), breaker: UpstreamBreaker<PeerAddress>.Configuration = .init(),
        logger: Logger = Logger(label: "stoq.edge"), tracker: TransferTracker? = nil, peerNames: PeerNames? = nil
    ) {
        self.tracker = tracker
        self.peerNames = peerNames
        self.store = store
        self.cache = EdgeCache(kind: policy, capacity: max(1, cacheBytes), averageChunkSize: 16 * 1024)
        self.fillSilenceLimit = fillSilenceLimit
        self.breaker = UpstreamBreaker(upstream: upstream, configuration: breaker)
        self.upstream = upstream
        self.peers = peers
        self.settings = prefetch
        self.logger = logger
    }

    /// Whether misses can be filled from upstream.
    nonisolated var hasUpstream: Bool { !upstream.isEmpty }

    /// Cache hits (store).
    public var hits: Int { stats.hits }
    /// Reads that went upstream themselves.
    public var misses: Int { stats.misses }
    /// Bytes fetched from upstream.
    public var upstreamBytes: Int { stats.upstreamBytes }

    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        try await serve(id, reader: nil)
    }

    public func chunk(_ id: ChunkID, reader: ObjectIdentifier, fill: FillProgress) async throws -> [UInt8]? {
        try await serve(id, reader: reader, fill: fill)
    }

    private func serve(_ id: ChunkID, reader: ObjectIdentifier?, fill: FillProgress? = nil) async throws -> [UInt8]? {
        // What the reader reads names the fills made for it (`stoq status`, the fill log line).
        let readerContent = reader.flatMap { tracker?.content(readBy: $0) }
        if let reader { noteRead(id, reader: reader, content: readerContent) }
        if let bytes = takeFromBuffer(id) {
            stats.prefetchHits += 1
            try keep(id, bytes)
            return bytes
        }
        if try store.contains(id) {
            do {
                let bytes = try store.read(id)
                stats.hits += 1
                if cache.recordAccess(id, size: bytes.count) == .miss, !cache.contains(id) {
                    // Held since before this process started: let the policy account for it.
                    try evict(cache.admit(id, size: bytes.count))
                }
                noteCached(id, bytes)
                learn(id, bytes)
                return bytes
            } catch let error as ContentError where error.code == .idMismatch || error.code == .notFound {
                logger.warning("cached chunk damaged; fetching again", metadata: ["chunk": "\(id.short)"])
            }
        }
        if let fill { waiting.add(fill) }
        defer { if let fill { waiting.remove(fill) } }
        if let task = inFlight[id] {
            if prefetching.contains(id) { stats.prefetchHits += 1 }
            if let fill { fills[id]?.forward(to: fill) }
            let bytes = try await task.value
            // A joined prefetch left its bytes in the buffer: this read makes them real content.
            if let buffered = takeFromBuffer(id) { try keep(id, buffered) }
            return bytes
        }
        stats.misses += 1
        if let readerContent { noteFillContent(id, readerContent) }
        let progress = FillProgress()
        if let fill { progress.forward(to: fill) }
        fills[id] = progress
        let task = Task { () async throws -> [UInt8]? in
            guard let bytes = try await self.fetchUpstream(id, fill: progress) else { return nil }
            try self.keep(id, bytes)
            return bytes
        }
        inFlight[id] = task
        defer { inFlight[id] = nil; fills[id] = nil }
        let bytes = try await task.value
        if let bytes { learn(id, bytes) }
        return bytes
    }

    /// Offers fetched bytes to the cache policy; admitted ones are stored, evicted ones removed.
    private func keep(_ id: ChunkID, _ bytes: [UInt8]) throws {
        _ = cache.recordAccess(id, size: bytes.count)
        let admission = cache.admit(id, size: bytes.count)
        if admission.admitted, !(try store.contains(id)) {
            try store.writeChunk(id, bytes)
            var batch = CommitBatch()
            batch.chunks = [(id, bytes.count)]
            try store.commit(batch)
        }
        if admission.admitted { noteCached(id, bytes) }
        try evict(admission)
    }

    private func fetchUpstream(_ id: ChunkID, fill: FillProgress) async throws -> [UInt8]? {
        defer { fillContent[id] = nil }
        guard !upstream.isEmpty else { return nil }
        // Spread chunks over the upstreams by id, then try healthy ones before those that health
        // probing marked down (a down one is still tried last: a false "down" must not fail a fill).
        let start = Int(id.bytes[0]) % upstream.count
        let rotated = (0..<upstream.count).map { upstream[(start + $0) % upstream.count] }
        syncHealth()
        for address in peers.healthyFirst(rotated) where breaker.shouldTry(address, now: nanoseconds()) {
            do {
                let client = try await peers.client(for: address)
                let waiting = self.waiting
                let watch = livenessWatch(of: address)
                let peers = self.peers
                // A fill counts under the content whose manifest lists the chunk (the manifest itself: its own).
                let tracker = self.tracker
                let token = tracker?.beginFetch(
                    content: fillContent[id] ?? ContentID(manifestOf[id] ?? id).description,
                    peer: peerNames?.label(of: client.connection) ?? address.description)
                var filled = false
                defer { tracker?.end(token, completed: filled) }
                let bytes = try await Self.fetchWatched(
                    id, from: client, limit: fillSilenceLimit, watch: watch, isDown: { peers.isDown(address) },
                    onBytes: { tracker?.add(token, bytes: $0) }
                ) {
                    fill.note()
                    waiting.noteAll()
                }
                filled = true
                stats.upstreamBytes += bytes.count
                breaker.handleFillSucceeded(address, now: nanoseconds())
                noteFillState()
                return bytes
            } catch let error as NodeError where error.code == .notFound {
                breaker.handleFillSucceeded(address, now: nanoseconds())  // alive; it lacks the chunk
                continue
            } catch {
                breaker.handleFillFailed(address, now: nanoseconds())
                logger.info("upstream failed", metadata: ["peer": "\(address)", "error": "\(error)"])
                await peers.drop(address)
                noteFillState()
            }
        }
        return nil
    }

    private func nanoseconds() -> UInt64 { UInt64(max(0, (ContinuousClock.now - clockOrigin).nanoseconds)) }

    private func livenessWatch(of address: PeerAddress) -> FillWatch {
        if let watch = liveness[address] { return watch }
        let watch = FillWatch()
        liveness[address] = watch
        return watch
    }

    /// Feeds health probing's changes of the upstream peers to the breaker.
    private func syncHealth() {
        for address in upstream {
            let down = peers.isDown(address)
            guard down != seenDown.contains(address) else { continue }
            if down { seenDown.insert(address) } else { seenDown.remove(address) }
            breaker.handleHealth(address, isDown: down, now: nanoseconds())
        }
    }

    /// Whether a miss can be filled now: some upstream is usable or due a retry. While it is not,
    /// the edge's HAVE carries no fill flag and misses are answered not-found at once.
    public func canFill() -> Bool {
        guard !upstream.isEmpty else { return false }
        syncHealth()
        return breaker.canFill(now: nanoseconds())
    }

    /// Logs when the edge stops (or starts again) filling misses.
    private func noteFillState() {
        let can = canFill()
        guard can != couldFill else { return }
        couldFill = can
        if can {
            logger.notice("an upstream answers again; filling misses")
        } else {
            logger.warning("every upstream fill failed; answering misses with not-found (HAVE without the fill flag) until an upstream answers again", metadata: ["retry_after_ms": "\(breaker.configuration.retryAfter / 1_000_000)"])
        }
    }

    /// Fetches `id` from `client`, failing with ``NodeError`` `.unavailable` when the upstream
    /// (any fill from it: `watch`) sends nothing for `limit`, or for a second while health probing
    /// reports it down. Only time this process ran counts: a watchdog wake-up that comes late (the
    /// machine is busy) adds at most two ticks, so slowness here is not the upstream's death.
    static func fetchWatched(
        _ id: ChunkID, from client: PeerClient, limit: Duration, watch: FillWatch, isDown: @escaping @Sendable () -> Bool,
        onBytes: (@Sendable (Int) -> Void)? = nil, onProgress: @escaping @Sendable () -> Void
    ) async throws -> [UInt8] {
        let once = OnceResume<Result<[UInt8], any Error>>()
        let result = await withCheckedContinuation { continuation in
            once.set(continuation)
            let work = Task {
                do {
                    let bytes = try await client.fetchChunk(id) { n in
                        onBytes?(n)
                        watch.note()
                        onProgress()
                    }
                    once.resume(.success(bytes))
                } catch {
                    once.resume(.failure(error))
                }
            }
            Task {
                let tick: Duration = .milliseconds(100)
                var seen = watch.count
                var silent: Duration = .zero
                var last = ContinuousClock.now
                while !once.isDone {
                    try? await Task.sleep(for: tick)
                    let now = ContinuousClock.now
                    let elapsed = min(now - last, tick * 2)
                    last = now
                    let count = watch.count
                    if count != seen {
                        seen = count
                        silent = .zero
                    } else {
                        silent += elapsed
                    }
                    if silent >= limit || (silent >= .seconds(1) && isDown()) {
                        let reason = silent >= limit ? "sent nothing for \(limit)" : "is down (health probes unanswered) and sent nothing for \(silent)"
                        if once.resume(.failure(NodeError(.unavailable, "upstream \(client.name) \(reason) while filling chunk \(id.short)"))) {
                            work.cancel()
                        }
                        return
                    }
                }
            }
        }
        return try result.get()
    }

    private func evict(_ admission: CacheAdmission) throws {
        if !admission.evicted.isEmpty {
            try store.evict(admission.evicted)
            cacheObserver?(.removed(admission.evicted))
        }
    }

    // MARK: Read-ahead

    /// Remembers the chunk order of a file manifest the edge serves (leaf manifests list data).
    private func learn(_ id: ChunkID, _ bytes: [UInt8]) {
        guard settings.maximumConcurrent > 0, manifests[id] == nil, bytes.starts(with: FileManifest.magic),
              let manifest = try? FileManifest.decode(bytes), manifest.kind == .leaf, manifest.entries.count > 1 else { return }
        if manifestOrder.count >= settings.maximumManifests, let old = manifestOrder.first {
            manifestOrder.removeFirst()
            for chunk in manifests.removeValue(forKey: old) ?? [] where manifestOf[chunk] == old { manifestOf[chunk] = nil }
        }
        let order = manifest.entries.map(\.id)
        manifests[id] = order
        manifestOrder.append(id)
        for chunk in order { manifestOf[chunk] = id }
    }

    /// Notes that a fill of `id` would be for `content` (`stoq status`, the fill log line).
    private func noteFillContent(_ id: ChunkID, _ content: String) {
        guard tracker != nil else { return }
        if fillContent.count >= 4096 { fillContent.removeAll() }
        fillContent[id] = content
    }

    /// Feeds a read to its reader's prefetcher and queues what it suggests.
    private func noteRead(_ id: ChunkID, reader: ObjectIdentifier, content: String? = nil) {
        guard settings.maximumConcurrent > 0, let manifest = manifestOf[id], let order = manifests[manifest] else { return }
        let key = ReaderKey(reader: reader, manifest: manifest)
        if readers[key] == nil {
            if readerOrder.count >= settings.maximumReaders { readers[readerOrder.removeFirst()] = nil }
            readers[key] = Prefetcher(chunks: order, configuration: settings.window)
            readerOrder.append(key)
        }
        let ahead = readers[key]!.handleRead(id: id)
        if let content { for next in ahead { noteFillContent(next, content) } }
        for next in ahead where buffer[next] == nil && inFlight[next] == nil && !queue.contains(next) {
            queue.append(next)
        }
        if queue.count > settings.window.maximumWindow * 4 { queue.removeFirst(queue.count - settings.window.maximumWindow * 4) }
        pump()
    }

    /// Starts queued prefetches while slots and buffer room remain.
    private func pump() {
        while prefetching.count < settings.maximumConcurrent, bufferBytes < settings.bufferBytes, !queue.isEmpty {
            let id = queue.removeFirst()
            guard buffer[id] == nil, inFlight[id] == nil, (try? store.contains(id)) != true else { continue }
            prefetching.insert(id)
            let progress = FillProgress()
            fills[id] = progress
            let task = Task { () async throws -> [UInt8]? in
                let bytes = try? await self.fetchUpstream(id, fill: progress)
                self.prefetchDone(id, bytes ?? nil)
                return bytes ?? nil
            }
            inFlight[id] = task
        }
    }

    private func prefetchDone(_ id: ChunkID, _ bytes: [UInt8]?) {
        prefetching.remove(id)
        inFlight[id] = nil
        fills[id] = nil
        if let bytes {
            stats.prefetched += 1
            buffer[id] = bytes
            bufferOrder.append(id)
            bufferBytes += bytes.count
            while bufferBytes > settings.bufferBytes, !bufferOrder.isEmpty {
                let old = bufferOrder.removeFirst()
                if let dropped = buffer.removeValue(forKey: old) {
                    bufferBytes -= dropped.count
                    stats.prefetchWasted += 1
                }
            }
        }
        pump()
    }

    private func takeFromBuffer(_ id: ChunkID) -> [UInt8]? {
        guard let bytes = buffer.removeValue(forKey: id) else { return nil }
        bufferBytes -= bytes.count
        if let position = bufferOrder.firstIndex(of: id) { bufferOrder.remove(at: position) }
        return bytes
    }

    /// Drops `ids` from the cache (store, policy and read-ahead buffer): a purge. Chunks the store
    /// keeps for another reason (pinned content) stay. A fill in flight may bring one back.
    /// - Returns: chunks and bytes removed from the store.
    public func drop(_ ids: [ChunkID]) throws -> (chunks: Int, bytes: Int64) {
        var present: [ChunkID] = []
        for id in ids {
            _ = takeFromBuffer(id)
            queue.removeAll { $0 == id }
            if manifests.removeValue(forKey: id) != nil { manifestOrder.removeAll { $0 == id } }
            if try store.contains(id) { present.append(id) }
        }
        let bytes = try store.evict(present)
        var dropped: [ChunkID] = []
        for id in present where !(try store.contains(id)) {
            cache.remove(id)
            dropped.append(id)
        }
        if !dropped.isEmpty { cacheObserver?(.removed(dropped)) }
        return (dropped.count, bytes)
    }

    /// The cache policy's figures (hits, misses, bytes held, evictions).
    public var cacheStats: CacheStats { cache.stats }

    /// Counters for reports.
    public var counters: (hits: Int, misses: Int, upstreamBytes: Int) { (stats.hits, stats.misses, stats.upstreamBytes) }

    /// Every counter, read-ahead included.
    public var allCounters: Counters { stats }
}
