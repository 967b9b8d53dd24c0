import Crypto
import Foundation
import Logging
import NIOCore
import STOQContent
import STOQEdge
import STOQExchange
import STOQIdentity
import STOQTransport
import STOQWire

/// Mutable names on a node, kept coherent between an origin and its edges (DESIGN.md §5).
///
/// - On an **origin**, ``publish(_:from:)`` accepts a signed ``NameRecord`` (a new version by the
///   name's owner, for content this origin holds), keeps it on disk, and pushes `INVALIDATE(name,
///   version)` over `stoq/1` to every edge that holds the name (the edges that resolved it with
///   `subscribe`, within its TTL) — it returns once they answered, so a publisher knows the edges
///   have let go of the old version. The bookkeeping is STOQEdge's sans-IO ``Subscriptions``.
/// - On an **edge**, ``resolve(_:subscribe:from:)`` answers from its ``NameTable`` while the record's
///   TTL lasts, and otherwise asks its upstream (subscribing). The first record seen for a name
///   fixes its owner key (learnt from the authenticated origin); later records must carry the same
///   key and a valid signature, and may not be older than a version already seen or announced:
///   forged and stale records are refused. An `INVALIDATE` is accepted only on a connection this
///   node dialled to one of its upstream peers.
/// - An edge with edges below it (origin → edge1 → edge2) relays: the edges that resolved a name
///   through it with `subscribe` are its holders, and an invalidation from its upstream goes on
///   to those that were given an older version (once: versions only increase, so duplicates and
///   loops stop at every hop). It forwards after it has taken the invalidation itself and answered
///   its upstream, so a slow edge below never holds the origin's publish.
/// - Through a partition: an origin (or relaying edge) retries a push that failed while the
///   holder's connection stays open (1 s, doubling to 15 s, while the subscription lasts), and
///   forgets a holder once its connection closes. An edge whose connection to its upstream closes
///   has lost its subscription, so it marks its cached names unconfirmed: the next read asks the
///   upstream again (and re-subscribes), and serves the cached record only if the upstream cannot
///   be reached. Either way an edge serves a new version within a retry interval of the heal,
///   not after the old version's TTL.
/// - Across restarts (with a `directory`): an origin keeps who holds which name
///   (`subscribers.json`: node id, address, version, until when), and after a restart pushes a new
///   version to those holders by dialling them, so a publish still reaches every edge. An edge
///   keeps its records, owner keys and version floors (`cached.json`) and the node ids of its
///   upstream, whose invalidations it then takes on connections the upstream dialled too.
public actor NameDirectory {
    /// Counters for `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Names answered from the edge's table (TTL not run out).
        public var cachedAnswers = 0
        /// Names fetched from upstream.
        public var upstreamResolves = 0
        /// Invalidations received and applied.
        public var invalidationsReceived = 0
        /// Invalidations pushed to holders (origin).
        public var invalidationsPushed = 0
        /// Invalidations passed on to the edges below (relay).
        public var invalidationsForwarded = 0
        /// Records refused (forged, stale, wrong owner).
        public var refused = 0
        /// Failed pushes sent again (a holder that could not be reached for a while).
        public var invalidationsRetried = 0
        /// Names answered from an unconfirmed cache entry because no upstream could be reached.
        public var staleAnswers = 0
    }

    /// A holder of a name: one connection.
    struct Holder: Hashable, Sendable {
        let id: ObjectIdentifier
    }

    private let store: (any ChunkStore)?
    /// Owned names: which key owns which published name (the first to publish it here, or the
    /// owner the CT log says, once a log is attached); kept in `owners.json` across restarts.
    public nonisolated let ownership: NameOwnershipStore
    private let directory: String?
    private let upstream: [PeerAddress]
    private let peers: PeerSet?
    private let logger: Logger
    private let started = ContinuousClock.now
    private var subscriptions = Subscriptions<Holder>()
    private var holderConnections: [Holder: Connection] = [:]
    private var table = NameTable()
    private var stats = Counters()
    /// Connections whose closing is watched (holders below, and the upstream connection).
    private var watched: Set<ObjectIdentifier> = []
    /// Sends the retries of failed pushes while any is waiting.
    private var retryTask: Task<Void, Never>?
    /// Streams of ``changes()``.
    private var changeWatchers: [Int: AsyncStream<String>.Continuation] = [:]
    private var nextWatcher = 0
    /// Holders kept across restarts (origin and relaying edge): name → node id (hex) → holder.
    private var savedHolders: [String: [String: SavedHolder]] = [:]
    /// Node ids of this edge's upstream peers (learnt when dialling them; kept across restarts).
    private var upstreamNodes: Set<[UInt8]> = []
    /// Where a holder listens now (the origin's edge registry), by node id.
    private var locateEdge: (@Sendable ([UInt8]) async -> PeerAddress?)?
    private var holderSaveScheduled = false
    private var cacheSaveScheduled = false

    /// A holder of a name kept on disk.
    struct SavedHolder: Codable, Sendable, Equatable {
        /// Where it listens (the address it dialled from: one socket listens and dials).
        var address: PeerAddress
        /// The version it was given or last told.
        var version: UInt64
        /// When its subscription lapses (seconds since 1970).
        var expiresAt: Double
    }

    /// An edge's cached names on disk.
    struct SavedCache: Codable, Sendable {
        struct Mapping: Codable, Sendable {
            /// The record's canonical encoding (base64 in the JSON).
            var record: Data
            var expiresAt: Double
        }
        var upstreamNodes: [Data]
        /// Owner keys, X9.63 (base64 in the JSON).
        var owners: [String: Data]
        var floors: [String: UInt64]
        var mappings: [String: Mapping]
    }

    /// The most holders kept on disk (name × edge pairs).
    public static let maximumSavedHolders = 100_000

    /// How long an origin waits for an edge to take an invalidation.
    public static let pushTimeout: Duration = .seconds(2)

    /// Creates a directory.
    /// - Parameters:
    ///   - store: the origin's store (published names must point at content it holds); nil: no check.
    ///   - directory: where an origin keeps its published records (loaded now); nil: memory only.
    ///   - upstream: where an edge resolves names it does not hold.
    ///   - peers: the node's connections to `upstream`.
    public init(store: (any ChunkStore)?, directory: String?, upstream: [PeerAddress], peers: PeerSet?, logger: Logger = Logger(label: "stoq.names")) {
        self.store = store
        self.directory = directory
        self.upstream = upstream
        self.peers = peers
        self.logger = logger
        self.ownership = NameOwnershipStore(path: directory.map { $0 + "/owners.json" })
        if let directory, let files = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            var loaded: [NameRecord] = []
            for file in files where file.hasSuffix(".record") {
                guard let data = FileManager.default.contents(atPath: directory + "/" + file),
                      let record = try? NameRecord.decode(Array(data)), record.hasValidSignature else {
                    logger.warning("ignoring an unreadable name record", metadata: ["file": "\(file)"])
                    continue
                }
                loaded.append(record)
            }
            for record in loaded {
                try? subscriptions.publish(record, now: 0)
                // Records published before owned names existed bind their names to their keys.
                ownership.adopt(record.name, key: record.ownerKey, now: UInt64(Self.wallClock() * 1000))
            }
        }
        if let directory {
            let wall = Self.wallClock()
            if let holders = StateFile.load([String: [String: SavedHolder]].self, path: directory + "/subscribers.json", logger: logger) {
                var kept = 0
                for (name, byNode) in holders where (try? NameRecord.validate(name: name)) != nil {
                    for (node, holder) in byNode where holder.expiresAt > wall && kept < Self.maximumSavedHolders {
                        savedHolders[name, default: [:]][node] = holder
                        kept += 1
                    }
                }
                if kept > 0 { logger.info("loaded the name subscribers", metadata: ["holders": "\(kept)"]) }
            }
            if let cache = StateFile.load(SavedCache.self, path: directory + "/cached.json", logger: logger) {
                upstreamNodes = Set(cache.upstreamNodes.filter { $0.count == 32 }.prefix(64).map { Array($0) })
                var entries: [String: NameTable.Entry] = [:]
                for (name, mapping) in cache.mappings where mapping.expiresAt > wall {
                    guard let record = try? NameRecord.decode(Array(mapping.record)) else { continue }
                    let remaining = min(mapping.expiresAt - wall, Double(record.ttlSeconds))
                    entries[name] = NameTable.Entry(record: record, expiresAt: UInt64(remaining * 1e9), confirmed: false)
                }
                let restored = table.restore(owners: cache.owners.mapValues { Array($0) }, floors: cache.floors, entries: entries)
                if restored > 0 || !cache.owners.isEmpty {
                    logger.info("loaded the cached names", metadata: ["names": "\(restored)", "owners": "\(cache.owners.count)"])
                }
            }
        }
    }

    /// Seconds since 1970.
    static func wallClock() -> Double { Date().timeIntervalSince1970 }

    /// Tells the directory where the holders it kept across a restart listen now (the origin's edge
    /// registry); without it, the address a holder dialled from is used.
    public func setEdgeLocator(_ locate: @escaping @Sendable ([UInt8]) async -> PeerAddress?) { locateEdge = locate }

    /// Names whose holders are kept on disk, and how many holders in all.
    public var savedHolderCount: Int { savedHolders.values.reduce(0) { $0 + $1.count } }

    /// Names the edge's table maps now (confirmed or not).
    public var cachedNames: Int { table.count }

    private var now: UInt64 { UInt64(max(0, (ContinuousClock.now - started).nanoseconds)) }

    /// The counters.
    public var counters: Counters { stats }

    /// The record for `name`: this node's own (origin), the edge's cached one, or one fetched from
    /// upstream; nil when nobody knows the name.
    /// - Parameters:
    ///   - subscribe: the asker holds the record and wants new versions pushed (an edge).
    ///   - connection: the asker's connection (where pushes go).
    /// - Throws: ``NameRecordError`` when upstream sent a record this node refuses; transport
    ///   errors when no upstream answered.
    public func resolve(_ name: String, subscribe: Bool, from connection: Connection?) async throws -> NameRecord? {
        try NameRecord.validate(name: name)
        if subscriptions.record(for: name) != nil {
            guard subscribe, let connection else { return subscriptions.record(for: name) }
            let holder = Holder(id: ObjectIdentifier(connection))
            holderConnections[holder] = connection
            let record = subscriptions.handleSubscribe(peer: holder, name: name, now: now)
            if let record { saveHolder(record, connection: connection) }
            return record
        }
        if let cached = table.lookup(name, now: now) {
            stats.cachedAnswers += 1
            noteHolder(of: cached, subscribe: subscribe, connection: connection)
            return cached
        }
        guard let peers else { return nil }
        var lastError: (any Error)?
        for address in upstream {
            do {
                let client = try await peers.client(for: address)
                guard let bytes = try await client.resolveName(name, subscribe: true) else { continue }
                let record = try NameRecord.decode(bytes)
                guard record.name == name else {
                    throw NameRecordError(.malformed, "\(address) answered '\(name)' with a record for '\(record.name)'")
                }
                if table.owner(of: name) == nil {
                    // First sight: the owner key comes from the authenticated upstream.
                    let key = try P256.Signing.PublicKey(x963Representation: record.ownerKey)
                    try table.registerOwner(key, for: name)
                }
                if let held = table.owner(of: name), held != record.ownerKey,
                   ownership.owner(of: name, now: UInt64(Self.wallClock() * 1000))?.key == record.ownerKey {
                    // The CT log this edge reads says the name was handed to the record's key.
                    let key = try P256.Signing.PublicKey(x963Representation: record.ownerKey)
                    try table.registerOwner(key, for: name)
                }
                let update = try table.handleRecord(record, now: now)
                if case .replaced = update { announce(name) }
                stats.upstreamResolves += 1
                noteUpstream(client.connection)
                if case .refreshed = update { scheduleCacheSave() } else { saveCacheNow() }
                watchSubscription(on: client.connection)
                if case .replaced = update, let invalidation = try? NameInvalidation(name: name, version: record.version),
                   subscriptions.handleInvalidation(invalidation, now: now) > 0 {
                    // Learnt a newer version by asking (the push was lost): the edges below that
                    // hold the older one are told as if it had been pushed.
                    Task { await self.forwardQueued(name: name, version: record.version) }
                }
                noteHolder(of: record, subscribe: subscribe, connection: connection)
                return record
            } catch let error as NameRecordError {
                stats.refused += 1
                logger.warning("refused a name record from upstream", metadata: ["peer": "\(address)", "error": "\(error)"])
                throw error
            } catch {
                lastError = error
            }
        }
        if let lastError {
            // The cached record is unconfirmed (its subscription was lost) and no upstream can say
            // whether it is current: it is still within its TTL, which is what a reader was
            // promised, so serve it rather than nothing.
            if let known = table.lastKnown(name, now: now) {
                stats.staleAnswers += 1
                noteHolder(of: known, subscribe: subscribe, connection: connection)
                return known
            }
            throw lastError
        }
        return nil
    }

    /// Publishes a signed record on this origin and pushes the invalidation to the name's holders.
    /// - Returns: the record's version and how many holders took the invalidation.
    /// - Throws: ``NameRecordError`` (`.badSignature`, `.wrongOwner`, `.staleVersion`, `.malformed`)
    ///   or ``NodeError`` `.notFound` when the content is not in this origin's store.
    public func publish(_ bytes: [UInt8], from connection: Connection?) async throws -> (version: UInt64, notified: Int) {
        let record = try NameRecord.decode(bytes)
        guard record.hasValidSignature else {
            stats.refused += 1
            throw NameRecordError(.badSignature, "the record for '\(record.name)' does not verify: sign it with the owner's key")
        }
        if let store, !(try store.contains(record.content.manifest)) {
            throw NodeError(.notFound, "this origin does not hold \(record.content); put the content into its store first")
        }
        let wall = UInt64(Self.wallClock() * 1000)
        let owner = ownership.owner(of: record.name, now: wall)
        do {
            try ownership.check(record.name, key: record.ownerKey, now: wall)
            // The name was handed over (a transfer or recovery in the CT log): the new owner's
            // record replaces the old owner's.
            let handedOver = owner != nil && subscriptions.record(for: record.name).map { $0.ownerKey != record.ownerKey } == true
            try subscriptions.publish(record, now: now, newOwner: handedOver)
        } catch {
            stats.refused += 1
            throw error
        }
        try persist(record)
        ownership.adopt(record.name, key: record.ownerKey, now: wall)
        announce(record.name)
        let (live, told) = await pushQueuedReporting()
        let notified = live + (await pushSavedHolders(record, skipping: told))
        stats.invalidationsPushed += notified
        logger.info("published name", metadata: ["name": "\(record.name)", "version": "\(record.version)", "notified": "\(notified)"])
        return (record.version, notified)
    }

    /// A peer below this edge took `record` from it and wants new versions pushed.
    private func noteHolder(of record: NameRecord, subscribe: Bool, connection: Connection?) {
        guard subscribe, let connection else { return }
        let holder = Holder(id: ObjectIdentifier(connection))
        holderConnections[holder] = connection
        watchHolder(holder, connection)
        subscriptions.handleRelaySubscribe(peer: holder, record: record, now: now)
        saveHolder(record, connection: connection)
    }

    /// Forgets `holder` once its connection closes (its subscription died with it).
    private func watchHolder(_ holder: Holder, _ connection: Connection) {
        guard watched.insert(holder.id).inserted else { return }
        Task { [weak self] in
            _ = await connection.closed()
            await self?.holderGone(holder)
        }
    }

    private func holderGone(_ holder: Holder) {
        watched.remove(holder.id)
        subscriptions.handlePeerGone(holder)
        holderConnections[holder] = nil
    }

    /// Marks the cached names unconfirmed once `connection` to the upstream closes: the
    /// subscription that would have carried their invalidations is gone.
    private func watchSubscription(on connection: Connection) {
        guard watched.insert(ObjectIdentifier(connection)).inserted else { return }
        Task { [weak self] in
            let reason = await connection.closed()
            await self?.subscriptionLost(connection, reason: reason)
        }
    }

    private func subscriptionLost(_ connection: Connection, reason: STOQError) {
        watched.remove(ObjectIdentifier(connection))
        let marked = table.handleSubscriptionLost()
        if marked > 0 {
            logger.info("the connection to the upstream closed: cached names are revalidated on their next read",
                        metadata: ["names": "\(marked)", "reason": "\(reason)"])
        }
    }

    /// Sends the queued invalidations, each within ``pushTimeout``; one a holder does not take is
    /// retried later while its connection stays open (see ``Subscriptions``); a holder whose
    /// connection closed is forgotten.
    /// - Returns: how many holders took theirs.
    private func pushQueued() async -> Int { await pushQueuedReporting().notified }

    /// ``pushQueued()``, also returning the node ids (hex) of the holders that took theirs.
    private func pushQueuedReporting() async -> (notified: Int, told: Set<String>) {
        var pushes: [(Holder, Connection, NameInvalidation)] = []
        while let next = subscriptions.pollTransmit() {
            if let connection = holderConnections[next.peer] { pushes.append((next.peer, connection, next.invalidation)) }
        }
        guard !pushes.isEmpty else { return (0, []) }
        let outcomes = await withTaskGroup(of: (Holder, NameInvalidation, Bool).self) { group in
            for (holder, connection, invalidation) in pushes {
                group.addTask {
                    let delivered = await withDeadline(Self.pushTimeout) {
                        do {
                            let stream = try await connection.openBidirectionalStream(priority: .control)
                            try await stream.write(STOQMessage.invalidate(name: invalidation.name, version: invalidation.version).encoded())
                            try await stream.finish()
                            _ = try await stream.readAll(limit: 1024)
                            return true
                        } catch {
                            return false
                        }
                    }
                    return (holder, invalidation, delivered ?? false)
                }
            }
            var result: [(Holder, NameInvalidation, Bool)] = []
            for await outcome in group { result.append(outcome) }
            return result
        }
        var notified = 0
        var told: Set<String> = []
        for (holder, invalidation, delivered) in outcomes {
            if delivered {
                notified += 1
                subscriptions.handlePushDelivered(peer: holder, invalidation: invalidation)
                if let node = holderConnections[holder]?.peerNodeID {
                    told.insert(node.hex)
                    savedHolders[invalidation.name]?[node.hex]?.version = invalidation.version
                }
            } else if holderConnections[holder] != nil {
                logger.info("an edge did not take an invalidation; retrying while its connection lasts",
                            metadata: ["name": "\(invalidation.name)", "version": "\(invalidation.version)"])
                subscriptions.handlePushFailed(peer: holder, invalidation: invalidation, now: now)
            }
        }
        armRetries()
        if !told.isEmpty { scheduleHolderSave() }
        return (notified, told)
    }

    /// Starts the retry loop when a failed push waits and none runs.
    private func armRetries() {
        guard retryTask == nil, subscriptions.pollTimeout() != nil else { return }
        retryTask = Task { [weak self] in await self?.runRetries() }
    }

    private func runRetries() async {
        while let due = subscriptions.pollTimeout(), !Task.isCancelled {
            let wait = due > now ? due - now : 0
            if wait > 0 { try? await Task.sleep(for: .nanoseconds(Int64(min(wait, 60_000_000_000)))) }
            let before = subscriptions.retriesQueued
            subscriptions.handleTimeout(now: now)
            stats.invalidationsRetried += Int(subscriptions.retriesQueued - before)
            let delivered = await pushQueued()
            stats.invalidationsPushed += delivered
        }
        retryTask = nil
    }

    /// An invalidation arrived on `connection`; applied only when it comes from an upstream peer.
    /// - Returns: whether a held mapping was dropped.
    /// - Throws: ``NodeError`` `.refused` for an invalidation from a peer that is not upstream.
    @discardableResult
    public func handleInvalidation(name: String, version: UInt64, from connection: Connection) async throws -> Bool {
        guard let peers else {
            throw NodeError(.refused, "an invalidation of '\(name)' came to a node without an upstream")
        }
        // On a connection this edge dialled to its upstream, or one its upstream dialled (an
        // origin that restarted tells the holders it kept): the certificate names the upstream.
        let dialled = await peers.address(of: connection).map { upstream.contains($0) } ?? false
        let fromUpstreamNode = connection.peerNodeID.map { upstreamNodes.contains($0.bytes) } ?? false
        guard dialled || fromUpstreamNode else {
            throw NodeError(.refused, "an invalidation of '\(name)' came from a peer that is not this node's upstream")
        }
        let invalidation = try NameInvalidation(name: name, version: version)
        stats.invalidationsReceived += 1
        let dropped = table.handleInvalidation(invalidation, now: now)
        if dropped { saveCacheNow() } else { scheduleCacheSave() }
        announce(name)
        if subscriptions.handleInvalidation(invalidation, now: now) > 0 {
            // Relay to the edges below once this one has let go, without holding the upstream's push.
            Task { await self.forwardQueued(name: name, version: version) }
        }
        return dropped
    }

    private func forwardQueued(name: String, version: UInt64) async {
        let forwarded = await pushQueued()
        stats.invalidationsForwarded += forwarded
        logger.info("forwarded an invalidation", metadata: ["name": "\(name)", "version": "\(version)", "edges": "\(forwarded)"])
    }

    /// The version this node holds for `name` (authoritative or cached), if any.
    public func heldVersion(of name: String) -> UInt64? {
        subscriptions.record(for: name)?.version ?? table.lookup(name, now: now)?.version
    }

    /// How long `name`'s record stays valid on this node, in seconds: its whole TTL for a record
    /// this node publishes, the rest of it for one an edge caches; nil when none is held.
    public func remainingTTL(of name: String) -> UInt32? {
        if let own = subscriptions.record(for: name) { return own.ttlSeconds }
        guard let expiry = table.expiry(of: name) else { return nil }
        return UInt32(clamping: (expiry > now ? expiry - now : 0) / 1_000_000_000)
    }

    /// The names this node learns a new version of, as it happens (an origin publishing, an edge
    /// taking an invalidation or a newer record): the HTTP front door's `/ws/name/` watchers.
    public func changes() -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = nextWatcher
        nextWatcher += 1
        changeWatchers[id] = continuation
        continuation.onTermination = { [weak self] _ in Task { await self?.dropWatcher(id) } }
        return stream
    }

    private func dropWatcher(_ id: Int) { changeWatchers[id] = nil }

    private func announce(_ name: String) {
        for watcher in changeWatchers.values { watcher.yield(name) }
    }

    /// A holder subscribed over `connection` (a node with a certificate): kept on disk with where
    /// it listens, the version it has, and until when (the record's TTL plus the grace).
    private func saveHolder(_ record: NameRecord, connection: Connection) {
        guard directory != nil, let node = connection.peerNodeID else { return }
        let address = PeerAddress(host: connection.remoteAddress.ipAddress ?? "::1", port: connection.remoteAddress.port ?? 0)
        let expiresAt = Self.wallClock() + Double(record.ttlSeconds) + Double(subscriptions.grace) / 1e9
        let held = savedHolders[record.name]?[node.hex]
        if held == nil, savedHolderCount >= Self.maximumSavedHolders { return }
        let version = max(held?.version ?? 0, record.version)
        savedHolders[record.name, default: [:]][node.hex] = SavedHolder(address: address, version: version, expiresAt: expiresAt)
        if held == nil || held?.address != address || held?.version != version {
            saveHoldersNow()
        } else {
            scheduleHolderSave()
        }
    }

    /// Pushes `record`'s invalidation to the holders kept on disk that no live connection told
    /// (an origin that restarted since they subscribed): each is dialled at its registered (or
    /// last seen) address, within ``pushTimeout``.
    /// - Returns: how many took it.
    private func pushSavedHolders(_ record: NameRecord, skipping told: Set<String>) async -> Int {
        guard let peers, let byNode = savedHolders[record.name] else { return 0 }
        let wall = Self.wallClock()
        var targets: [(String, PeerAddress)] = []
        for (node, holder) in byNode where holder.expiresAt > wall && holder.version < record.version && !told.contains(node) {
            var address = holder.address
            if let locate = locateEdge, let bytes = Hex.decode(node), let registered = await locate(bytes) { address = registered }
            targets.append((node, address))
        }
        guard !targets.isEmpty, let invalidation = try? NameInvalidation(name: record.name, version: record.version) else { return 0 }
        let results = await withTaskGroup(of: (String, Bool).self) { group in
            for (node, address) in targets {
                group.addTask {
                    let delivered = await withDeadline(Self.pushTimeout) {
                        do {
                            let client = try await peers.client(for: address)
                            guard client.connection.peerNodeID?.hex == node else { return false }
                            let stream = try await client.connection.openBidirectionalStream(priority: .control)
                            try await stream.write(STOQMessage.invalidate(name: invalidation.name, version: invalidation.version).encoded())
                            try await stream.finish()
                            let answer = try await stream.readAll(limit: 1024)
                            return answer.readableBytes == 0
                        } catch {
                            return false
                        }
                    }
                    return (node, delivered ?? false)
                }
            }
            var all: [(String, Bool)] = []
            for await result in group { all.append(result) }
            return all
        }
        var notified = 0
        for (node, delivered) in results where delivered {
            notified += 1
            savedHolders[record.name]?[node]?.version = record.version
        }
        if notified < targets.count {
            logger.info("some edges that held the name before a restart could not be told", metadata: [
                "name": "\(record.name)", "told": "\(notified)", "tried": "\(targets.count)"])
        }
        if notified > 0 { saveHoldersNow() }
        return notified
    }

    /// Writes what is waiting to be saved (a node that stops calls this).
    public func flush() {
        if holderSaveScheduled { saveHoldersNow() }
        if cacheSaveScheduled { saveCacheNow() }
    }

    /// This edge dialled `connection` to its upstream: its node id is an upstream's from now on.
    private func noteUpstream(_ connection: Connection) {
        guard let node = connection.peerNodeID, upstreamNodes.count < 64 else { return }
        if upstreamNodes.insert(node.bytes).inserted { scheduleCacheSave() }
    }

    private func scheduleHolderSave() {
        guard directory != nil, !holderSaveScheduled else { return }
        holderSaveScheduled = true
        Task { [weak self] in
            try? await Task.sleep(for: .seconds(1))
            await self?.saveHoldersNow()
        }
    }

    private func saveHoldersNow() {
        holderSaveScheduled = false
        guard let directory else { return }
        let wall = Self.wallClock()
        for name in Array(savedHolders.keys) {
            savedHolders[name] = savedHolders[name]?.filter { $0.value.expiresAt > wall }
            if savedHolders[name]?.isEmpty == true { savedHolders[name] = nil }
        }
        do { try StateFile.save(savedHolders, path: directory + "/subscribers.json") } catch {
            logger.warning("could not save the name subscribers", metadata: ["error": "\(error)"])
        }
    }

    private func scheduleCacheSave() {
        guard directory != nil, !upstream.isEmpty, !cacheSaveScheduled else { return }
        cacheSaveScheduled = true
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(200))
            await self?.saveCacheNow()
        }
    }

    private func saveCacheNow() {
        cacheSaveScheduled = false
        guard let directory, !upstream.isEmpty else { return }
        let wall = Self.wallClock()
        let monotonic = now
        let state = table.saved
        var mappings: [String: SavedCache.Mapping] = [:]
        for (name, entry) in state.entries where entry.expiresAt > monotonic {
            mappings[name] = .init(record: Data(entry.record.encode()), expiresAt: wall + Double(entry.expiresAt - monotonic) / 1e9)
        }
        let cache = SavedCache(upstreamNodes: upstreamNodes.map { Data($0) }, owners: state.owners.mapValues { Data($0) }, floors: state.floors, mappings: mappings)
        do { try StateFile.save(cache, path: directory + "/cached.json") } catch {
            logger.warning("could not save the cached names", metadata: ["error": "\(error)"])
        }
    }

    private func persist(_ record: NameRecord) throws {
        guard let directory else { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/" + Hex.encode(Array(SHA256.hash(data: Array(record.name.utf8)))) + ".record"
        let temporary = file + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(record.encode())), rename(temporary, file) == 0 else {
            throw NodeError(.unavailable, "cannot write the name record \(file)")
        }
    }
}

/// Application error codes of the name requests.
public enum NameProtocol {
    /// The name is unknown.
    public static let notFoundCode: UInt64 = 0x3
    /// The record was refused (forged, stale, wrong owner) or the request is not allowed here.
    public static let refusedCode: UInt64 = 0x4
    /// The largest name request a node reads.
    public static let maximumRequestLength = 2048

    /// Fuzz entry point: decodes arbitrary bytes as frames, and the name records they carry as
    /// ``NameRecord``s; traps only on a round-trip mismatch (a real bug).
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: maximumRequestLength)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while let frame = try? decoder.pollFrame() {
            guard let message = try? STOQMessage.decode(frame) else { continue }
            switch message {
            case .nameRecord(let record), .namePublish(let record):
                NameRecord.fuzz(record)
            case .invalidate(let name, let version):
                if let invalidation = try? NameInvalidation(name: name, version: version) {
                    precondition((try? NameInvalidation.decode(invalidation.encode())) == invalidation, "NameInvalidation round trip")
                }
            default:
                break
            }
        }
    }
}

/// Answers `NAME_RESOLVE` and `NAME_PUBLISH` (frame types 0x0d–0x10) from a ``NameDirectory``.
public struct NameService: NodeService {
    /// The directory.
    public let directory: NameDirectory
    /// Whether this node accepts publications (origins).
    public let acceptsPublications: Bool
    /// Why the peer on a connection may not publish the record's name here (nil: it may), checked
    /// before the record's signature and ownership; the refusal goes out as ERROR 7 (issue 15: the
    /// publish right, from a role or a grant whose scope covers the name).
    public let authorize: (@Sendable (_ name: String, _ connection: Connection) async -> String?)?

    /// Creates the service.
    public init(directory: NameDirectory, acceptsPublications: Bool, authorize: (@Sendable (_ name: String, _ connection: Connection) async -> String?)? = nil) {
        self.directory = directory
        self.acceptsPublications = acceptsPublications
        self.authorize = authorize
    }

    public var name: String { "names" }
    public var frameTypes: ClosedRange<UInt64> { STOQMessage.Types.nameResolve.rawValue...STOQMessage.Types.namePublished.rawValue }
    public var maximumRequestLength: Int { NameProtocol.maximumRequestLength }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let answer: STOQMessage
        do {
            switch try STOQMessage.decode(request) {
            case .nameResolve(let name, let subscribe):
                if let record = try await directory.resolve(name, subscribe: subscribe, from: connection) {
                    answer = .nameRecord(record: record.encode())
                } else {
                    answer = .error(code: NameProtocol.notFoundCode, message: "no record for the name '\(name)'")
                }
            case .namePublish(let bytes):
                guard acceptsPublications else {
                    answer = .error(code: NameProtocol.refusedCode, message: "this node is not an origin; publish names on the origin")
                    break
                }
                if let authorize, let why = await authorize(try NameRecord.decode(bytes).name, connection) {
                    answer = .error(code: 7, message: String(why.prefix(1000)))
                    break
                }
                let (version, notified) = try await directory.publish(bytes, from: connection)
                answer = .namePublished(version: version, notified: UInt64(notified))
            default:
                answer = .error(code: ChunkErrorCode.badRequest, message: "expected NAME_RESOLVE or NAME_PUBLISH")
            }
        } catch let error as WireError {
            // The request frame itself is malformed (a bad length, a subscribe flag other than 0
            // or 1, trailing bytes): the asker's fault, so "bad request", as on every other stream.
            answer = .error(code: ChunkErrorCode.badRequest, message: "malformed name request: \(error.reason); send NAME_RESOLVE or NAME_PUBLISH as docs/PROTOCOL.md lays them out")
        } catch let error as NameRecordError {
            answer = .error(code: NameProtocol.refusedCode, message: "\(error)")
        } catch let error as NodeError {
            answer = .error(code: error.code == .notFound ? NameProtocol.notFoundCode : NameProtocol.refusedCode, message: error.reason)
        } catch {
            answer = .error(code: ChunkErrorCode.internalError, message: "\(error)")
        }
        do {
            try await stream.write(answer.encoded())
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    public func status() async -> [String: any Sendable]? {
        let c = await directory.counters
        return ["cached_names": await directory.cachedNames, "saved_holders": await directory.savedHolderCount, "cached_answers": c.cachedAnswers, "upstream_resolves": c.upstreamResolves, "invalidations_received": c.invalidationsReceived,
                "invalidations_pushed": c.invalidationsPushed, "invalidations_forwarded": c.invalidationsForwarded, "refused": c.refused]
    }
}

/// Takes `INVALIDATE(name, version)` pushed by an upstream origin (frame type 0x08).
public struct InvalidationService: NodeService {
    /// The directory.
    public let directory: NameDirectory

    /// Creates the service.
    public init(directory: NameDirectory) { self.directory = directory }

    public var name: String { "invalidations" }
    public var frameTypes: ClosedRange<UInt64> { STOQMessage.Types.invalidate.rawValue...STOQMessage.Types.invalidate.rawValue }
    public var maximumRequestLength: Int { 512 }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        do {
            guard case .invalidate(let name, let version) = try STOQMessage.decode(request) else {
                throw NodeError(.protocolViolation, "expected INVALIDATE")
            }
            try await directory.handleInvalidation(name: name, version: version, from: connection)
            try await stream.finish()
        } catch let error as NodeError {
            try? await stream.write(STOQMessage.error(code: NameProtocol.refusedCode, message: error.reason).encoded())
            try? await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.badRequest)
        }
    }
}

extension PeerClient {
    /// Asks the peer for the record of `name`.
    /// - Parameter subscribe: keep me told of new versions (edges asking their origin).
    /// - Returns: the record's encoding (unverified: decode and check it), or nil when the peer
    ///   does not know the name.
    public func resolveName(_ name: String, subscribe: Bool = false) async throws -> [UInt8]? {
        switch try await nameRequest(.nameResolve(name: name, subscribe: subscribe)) {
        case .nameRecord(let record): return record
        case .error(NameProtocol.notFoundCode, _): return nil
        case .error(_, let message): throw NodeError(.refused, "\(self.name) refused to resolve '\(name)': \(message)")
        case let other: throw NodeError(.protocolViolation, "\(self.name) answered NAME_RESOLVE with \(other.frame().type)")
        }
    }

    /// Asks an origin to publish a signed record.
    /// - Returns: the version now current and how many edges took the invalidation.
    public func publishName(_ record: [UInt8]) async throws -> (version: UInt64, notified: Int) {
        switch try await nameRequest(.namePublish(record: record)) {
        case .namePublished(let version, let notified): return (version, Int(notified))
        case .error(NameProtocol.notFoundCode, let message): throw NodeError(.notFound, "\(name): \(message)")
        case .error(_, let message): throw NodeError(.refused, "\(name) refused the record: \(message)")
        case let other: throw NodeError(.protocolViolation, "\(name) answered NAME_PUBLISH with \(other.frame().type)")
        }
    }

    private func nameRequest(_ message: STOQMessage) async throws -> STOQMessage {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(message.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: NameProtocol.maximumRequestLength)
        decoder.handle(bytes: try await stream.readAll(limit: NameProtocol.maximumRequestLength + 16))
        guard let frame = try decoder.pollFrame(), let answer = try STOQMessage.decode(frame) else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering")
        }
        return answer
    }
}
