import DequeModule
import STOQSimulation

/// Identifies a lookup or store operation started on a ``KademliaNode``.
public struct LookupID: Hashable, Sendable, CustomStringConvertible {
    /// The raw counter value.
    public let raw: UInt64
    /// `lookup#N`.
    public var description: String { "lookup#\(raw)" }
}

/// What a ``KademliaNode`` asks its driver to do.
public enum DHTAction: Hashable, Sendable {
    /// Send `message` to `node` and feed the reply to ``KademliaNode/handle(_:from:now:)``.
    case send(to: NodeRecord, message: DHTMessage)
    /// A lookup started with ``KademliaNode/startLookup(_:target:now:)`` completed.
    case lookupFinished(LookupID, LookupResult)
    /// A ``KademliaNode/put(key:value:now:)`` or ``KademliaNode/provide(key:now:)`` completed:
    /// the nodes that acknowledged the store.
    case storeFinished(LookupID, key: NexusID, storedOn: [NexusID])
    /// Bootstrap (own-id lookup plus bucket refreshes) completed.
    case bootstrapFinished
}

/// A Kademlia DHT node as a sans-IO state machine (k = 20, α = 3 by default).
///
/// Inputs: ``handle(_:from:now:)`` for a received message (the driver authenticates the sender's
/// ``NodeRecord``, e.g. from its QUIC certificate), ``handleTimeout(now:)`` when ``pollTimeout()``
/// is reached, and the operations ``bootstrap(seeds:now:)``, ``startLookup(_:target:now:)``,
/// ``put(key:value:now:)`` and ``provide(key:now:)``. Output: ``pollAction()``. No sockets and no clock:
/// the same code runs over QUIC and in the simulator.
///
/// Records and provider entries are stored on the `replication` closest nodes, expire after their
/// TTL and are republished by their holders every `republishInterval` (and by providers every
/// `providerRepublishInterval`), which keeps them on the closest nodes as membership changes.
public struct KademliaNode: Sendable {
    private enum Purpose: Sendable { case lookup(LookupID), probe, store(LookupID) }
    private struct Pending: Sendable { var peer: NodeRecord; var purpose: Purpose; var deadline: UInt64 }
    private enum Operation: Sendable {
        case user, bootstrap, refresh, silent
        case put(value: [UInt8], ttl: UInt32)
        case provide(ttl: UInt32)
    }
    private struct StoreOperation: Sendable {
        var key: NexusID; var outstanding: Int; var acked: [NexusID]; var report: Bool
        /// The value of a PUT (nil for ADD_PROVIDER), and how many targets explicitly refused it.
        var value: [UInt8]?; var refusals = 0; var targets = 0
    }
    struct StoredValue: Sendable { var value: [UInt8]; var expiresAt: UInt64; var republishAt: UInt64 }
    struct ProviderEntry: Sendable { var record: NodeRecord; var expiresAt: UInt64 }

    /// This node.
    public private(set) var record: NodeRecord
    /// The parameters.
    public let config: DHTConfiguration
    /// The routing table.
    public private(set) var table: RoutingTable
    private let validator: any DHTRecordValidator
    private(set) var values: [NexusID: StoredValue] = [:]
    private(set) var providerEntries: [NexusID: [NexusID: ProviderEntry]] = [:]
    private var provided: [NexusID: UInt64] = [:]  // key -> next re-announce
    private var pending: [UInt64: Pending] = [:]
    private var lookups: [LookupID: LookupStateMachine] = [:]
    private var operations: [LookupID: Operation] = [:]
    private var stores: [LookupID: StoreOperation] = [:]
    private var outbox = Deque<DHTAction>()
    private var nextRPC: UInt64 = 1
    private var nextLookup: UInt64 = 1
    private var rng: SplitMix64
    private var maintenanceAt: UInt64
    private var refreshOutstanding = 0
    private var bucketLookedAt: [UInt64]

    /// Creates a node.
    /// - Parameters:
    ///   - record: this node's record.
    ///   - config: parameters.
    ///   - validator: which values to accept for storage.
    ///   - seed: seeds the node's random ids for bucket refreshes.
    ///   - now: the current time (ms).
    public init(record: NodeRecord, config: DHTConfiguration = DHTConfiguration(), validator: any DHTRecordValidator = AcceptAllValidator(), seed: UInt64 = 0, now: UInt64) {
        self.record = record
        self.config = config
        self.validator = validator
        self.table = RoutingTable(selfID: record.id, k: config.k, replacementCacheSize: config.replacementCacheSize, maxFailures: config.maxFailures, probeAfter: config.probeAfter)
        self.rng = SplitMix64(seed: seed ^ record.id.w3)
        self.maintenanceAt = now + config.maintenanceInterval
        self.bucketLookedAt = Array(repeating: now, count: 256)
    }

    /// This node's id.
    public var id: NexusID { record.id }

    // MARK: - Output

    /// The next action for the driver, or nil.
    public mutating func pollAction() -> DHTAction? { outbox.popFirst() }

    /// When ``handleTimeout(now:)`` must next be called.
    public func pollTimeout() -> UInt64 {
        var t = maintenanceAt
        for p in pending.values where p.deadline < t { t = p.deadline }
        return t
    }

    /// Requests awaiting a reply.
    public var pendingRequests: Int { pending.count }
    /// Lookups in progress.
    public var activeLookups: Int { lookups.count }
    /// Values stored here.
    public var storedValueCount: Int { values.count }

    /// Whether this node stores a value under `key` (a lookup it starts for `key` answers locally).
    public func storesValue(for key: NexusID) -> Bool { values[key] != nil }
    /// Provider keys tracked here.
    public var providerKeyCount: Int { providerEntries.count }

    // MARK: - Operations

    /// Adds known nodes to the routing table (e.g. a converged network's view, or seeds).
    public mutating func addContacts(_ records: [NodeRecord], now: UInt64) {
        for r in records { table.seen(r, now: now) }
    }

    /// Joins the network: adds the seeds, looks up its own id, then refreshes every bucket farther
    /// than its closest neighbour with a random-id lookup. Emits ``DHTAction/bootstrapFinished``.
    @discardableResult
    public mutating func bootstrap(seeds: [NodeRecord], now: UInt64) -> LookupID {
        addContacts(seeds, now: now)
        return begin(.node, target: id, op: .bootstrap, now: now)
    }

    /// Starts an iterative lookup; its result arrives as ``DHTAction/lookupFinished(_:_:)``.
    @discardableResult
    ///
    /// A value lookup hears from up to `valueQuorum` replicas (a copy held here counts as one) and
    /// returns the best value among them, as the validator ranks them: a replica that missed an
    /// update does not hide the newer version the others hold.
    public mutating func startLookup(_ kind: LookupKind, target: NexusID, now: UInt64) -> LookupID {
        if kind == .value, let v = values[target], now < v.expiresAt, config.valueQuorum <= 1 {
            let lid = newLookupID()
            var result = LookupResult(kind: .value, target: target, closest: [], value: v.value, providers: [], rounds: 0, messages: 0, timeouts: 0)
            result.values = [v.value]
            outbox.append(.lookupFinished(lid, result))
            return lid
        }
        return begin(kind, target: target, op: .user, now: now)
    }

    /// The best of `candidates` as the validator ranks them (a later one wins only if it should
    /// replace the best so far), or nil if there are none.
    func best(of candidates: [[UInt8]]) -> [UInt8]? {
        guard var best = candidates.first else { return nil }
        for v in candidates.dropFirst() where validator.shouldReplace(existing: best, with: v) { best = v }
        return best
    }

    /// Stores `value` under `key` on the `replication` closest nodes (STORE / PUT_RECORD) and
    /// republishes it from here every `republishInterval` until it expires.
    /// - Throws: `.lengthLimitExceeded` for a value over ``DHTMessage/maxValueSize``; `.staleRecord`
    ///   when this node holds a value under `key` that the validator says `value` must not replace.
    @discardableResult
    public mutating func put(key: NexusID, value: [UInt8], now: UInt64) throws(NexusError) -> LookupID {
        guard value.count <= DHTMessage.maxValueSize else {
            throw NexusError(.lengthLimitExceeded, "a DHT value is at most \(DHTMessage.maxValueSize) bytes; this one is \(value.count)")
        }
        if let held = values[key], now < held.expiresAt, held.value != value, !validator.shouldReplace(existing: held.value, with: value) {
            throw NexusError(.staleRecord, "this node holds a newer record under \(key.shortHex)… (or one by another owner) that this value does not replace; publish a higher version")
        }
        values[key] = StoredValue(value: value, expiresAt: now + UInt64(config.recordTTL) * 1000, republishAt: now + config.republishInterval)
        return begin(.node, target: key, op: .put(value: value, ttl: config.recordTTL), now: now)
    }

    /// Announces this node as a provider of `key` (ADD_PROVIDER) on the `replication` closest nodes,
    /// re-announcing every `providerRepublishInterval`.
    @discardableResult
    public mutating func provide(key: NexusID, now: UInt64) -> LookupID {
        provided[key] = now + config.providerRepublishInterval
        return begin(.node, target: key, op: .provide(ttl: config.providerTTL), now: now)
    }

    /// Stops announcing `key` (the entries already stored expire with their TTL; see
    /// ``withdraw(key:now:)`` to remove them at once).
    public mutating func unprovide(key: NexusID) { provided[key] = nil }

    /// Stops providing `key` and removes this node's provider entry from the closest nodes now:
    /// an ADD_PROVIDER with TTL 0 is a withdrawal (e.g. an edge evicted the content).
    @discardableResult
    public mutating func withdraw(key: NexusID, now: UInt64) -> LookupID {
        provided[key] = nil
        return begin(.node, target: key, op: .provide(ttl: 0), now: now)
    }

    /// Keys this node announces itself a provider of, sorted.
    public var providedKeys: [NexusID] { provided.keys.sorted() }

    /// Replaces this node's record (its address changed, or its region or certificate did) and
    /// announces every provided key again at once, so the provider entries the network holds carry
    /// the new address. Peers update their routing tables from the record on this node's next
    /// request. The id must stay the same (it is the key's hash).
    /// - Returns: the store operations started, one per provided key.
    @discardableResult
    public mutating func updateRecord(_ new: NodeRecord, now: UInt64) -> [LookupID] {
        precondition(new.id == record.id, "a node's id is its key's hash; a new key is a new node")
        record = new
        var started: [LookupID] = []
        for key in provided.keys.sorted() {
            provided[key] = now + config.providerRepublishInterval
            started.append(begin(.node, target: key, op: .provide(ttl: config.providerTTL), now: now))
        }
        return started
    }

    private mutating func newLookupID() -> LookupID { defer { nextLookup += 1 }; return LookupID(raw: nextLookup) }

    private mutating func begin(_ kind: LookupKind, target: NexusID, op: Operation, now: UInt64) -> LookupID {
        let lid = newLookupID()
        if let b = table.bucketIndex(of: target) { bucketLookedAt[b] = now }
        let local = kind == .value ? values[target].flatMap { now < $0.expiresAt ? $0.value : nil } : nil
        lookups[lid] = LookupStateMachine(kind: kind, target: target, selfID: id, seeds: table.closest(to: target, count: config.k), k: config.k, alpha: config.alpha,
                                          valueQuorum: config.valueQuorum, localValue: local)
        operations[lid] = op
        advance(lid, now: now)
        return lid
    }

    private mutating func send(_ message: DHTMessage, to peer: NodeRecord, purpose: Purpose, now: UInt64) {
        pending[message.rpc] = Pending(peer: peer, purpose: purpose, deadline: now + config.requestTimeout)
        outbox.append(.send(to: peer, message: message))
    }

    private mutating func rpcID() -> UInt64 { defer { nextRPC += 1 }; return nextRPC }

    private mutating func advance(_ lid: LookupID, now: UInt64) {
        guard var lookup = lookups[lid] else { return }
        let queries = lookup.nextQueries()
        let finished = lookup.isFinished
        lookups[lid] = lookup
        for peer in queries {
            let rpc = rpcID()
            let msg: DHTMessage
            switch lookup.kind {
            case .node: msg = .findNode(rpc: rpc, target: lookup.target)
            case .value: msg = .getRecord(rpc: rpc, key: lookup.target)
            case .providers: msg = .findProviders(rpc: rpc, key: lookup.target)
            }
            send(msg, to: peer, purpose: .lookup(lid), now: now)
        }
        if finished { finish(lid, now: now) }
    }

    private mutating func finish(_ lid: LookupID, now: UInt64) {
        guard let lookup = lookups.removeValue(forKey: lid), let op = operations.removeValue(forKey: lid) else { return }
        var result = lookup.result
        if lookup.kind == .value, let chosen = best(of: result.values) { result.value = chosen }
        switch op {
        case .user:
            outbox.append(.lookupFinished(lid, result))
        case .bootstrap:
            // Refresh every bucket from the farthest up to (not including) the closest neighbour's.
            let deepest = result.closest.first.flatMap { table.bucketIndex(of: $0.id) } ?? -1
            var started = 0
            if deepest > 0 {
                for b in 0..<deepest {
                    refreshOutstanding += 1; started += 1
                    _ = begin(.node, target: randomID(inBucket: b), op: .refresh, now: now)
                }
            }
            if started == 0 { outbox.append(.bootstrapFinished) }
        case .silent:
            break
        case .refresh:
            refreshOutstanding -= 1
            if refreshOutstanding == 0 { outbox.append(.bootstrapFinished) }
        case .put(let value, let ttl):
            startStores(lid, key: lookup.target, closest: result.closest, report: true, value: value, now: now) { rpc in
                .putRecord(rpc: rpc, key: lookup.target, value: value, ttl: ttl)
            }
        case .provide(let ttl):
            let me = record
            startStores(lid, key: lookup.target, closest: result.closest, report: true, now: now) { rpc in
                .addProvider(rpc: rpc, key: lookup.target, provider: me, ttl: ttl)
            }
        }
    }

    private mutating func startStores(_ lid: LookupID, key: NexusID, closest: [NodeRecord], report: Bool, value: [UInt8]? = nil, now: UInt64, _ make: (UInt64) -> DHTMessage) {
        let targets = Array(closest.prefix(config.replication))
        guard !targets.isEmpty else {
            outbox.append(.storeFinished(lid, key: key, storedOn: []))
            return
        }
        stores[lid] = StoreOperation(key: key, outstanding: targets.count, acked: [], report: report, value: value, targets: targets.count)
        for t in targets { send(make(rpcID()), to: t, purpose: .store(lid), now: now) }
    }

    private mutating func storeSettled(_ lid: LookupID, peer: NexusID, ok: Bool, refused: Bool = false) {
        guard var op = stores[lid] else { return }
        op.outstanding -= 1
        if ok { op.acked.append(peer) }
        if refused { op.refusals += 1 }
        if op.outstanding == 0 {
            stores[lid] = nil
            // Every responsible node refused the value (stale, forged, another owner's name): this
            // node must not keep serving or republishing it either.
            if let value = op.value, op.refusals == op.targets, values[op.key]?.value == value { values[op.key] = nil }
            outbox.append(.storeFinished(lid, key: op.key, storedOn: op.acked))
        } else {
            stores[lid] = op
        }
    }

    /// A random id whose common prefix with this node is exactly `b` bits.
    mutating func randomID(inBucket b: Int) -> NexusID {
        let r = NexusHash(rng.next(), rng.next(), rng.next(), rng.next())
        // This node's first b bits, bit b flipped, the rest random.
        let mask = NexusHash.prefixMask(b + 1)
        return (id.flippingBit(b) & mask) | (r & ~mask)
    }

    // MARK: - Input

    /// Handles a message from `sender` (whose record the driver has authenticated).
    public mutating func handle(_ message: DHTMessage, from sender: NodeRecord, now: UInt64) {
        guard sender.id != id else { return }
        // A sender without addresses is a client (e.g. a CLI doing one lookup): it is answered but
        // never enters the routing table, since nobody could reach it. So is one whose addresses
        // could not be dialled (port 0, unspecified, multicast): it chose them, nobody checked them.
        if sender.addresses.contains(where: \.isDialable), case .cachedProbe(let head) = table.seen(sender, now: now) {
            send(.ping(rpc: rpcID()), to: head, purpose: .probe, now: now)
        }
        if message.isRequest {
            respond(to: message, from: sender, now: now)
            return
        }
        guard let p = pending[message.rpc], p.peer.id == sender.id else { return } // unsolicited or spoofed
        pending[message.rpc] = nil
        switch p.purpose {
        case .probe: break
        case .store(let lid):
            if case .ack(_, let ok) = message { storeSettled(lid, peer: sender.id, ok: ok, refused: !ok) } else { storeSettled(lid, peer: sender.id, ok: false) }
        case .lookup(let lid):
            guard lookups[lid] != nil else { return }
            switch message {
            case .nodes(_, let closer): lookups[lid]!.handleResponse(from: sender.id, closer: closer)
            case .record(_, let value, _):
                if validator.validate(key: lookups[lid]!.target, value: value, now: now) {
                    lookups[lid]!.handleResponse(from: sender.id, closer: [], value: value)
                } else {
                    lookups[lid]!.handleFailure(of: sender.id)
                }
            case .providers(_, let providers, let closer): lookups[lid]!.handleResponse(from: sender.id, closer: closer, providers: providers)
            default: lookups[lid]!.handleFailure(of: sender.id)
            }
            advance(lid, now: now)
        }
    }

    private mutating func respond(to message: DHTMessage, from sender: NodeRecord, now: UInt64) {
        let reply: DHTMessage
        switch message {
        case .ping(let rpc):
            reply = .pong(rpc: rpc)
        case .findNode(let rpc, let target):
            reply = .nodes(rpc: rpc, closer: closest(to: target, excluding: sender.id))
        case .getRecord(let rpc, let key):
            if let v = values[key], now < v.expiresAt {
                reply = .record(rpc: rpc, value: v.value, ttl: UInt32((v.expiresAt - now) / 1000))
            } else {
                reply = .nodes(rpc: rpc, closer: closest(to: key, excluding: sender.id))
            }
        case .findProviders(let rpc, let key):
            // Sorted: a dictionary's iteration order depends on its storage address, so it differs
            // between runs and must never reach an output.
            var provs = (providerEntries[key] ?? [:]).values.filter { now < $0.expiresAt }.map(\.record)
            // A node answers for itself too: its own provider record is stored only on the others,
            // so a lookup that stops at this node would otherwise miss it.
            if provided[key] != nil, !provs.contains(where: { $0.id == record.id }) { provs.append(record) }
            provs.sort { $0.id < $1.id }
            // Closer nodes too, providers or not: a provider lookup goes on to the k closest
            // nodes and merges what each knows (one node may have missed some announcements).
            reply = .providers(rpc: rpc, providers: Array(provs.prefix(DHTMessage.maxRecords)), closer: closest(to: key, excluding: sender.id))
        case .putRecord(let rpc, let key, let value, let ttl):
            reply = .ack(rpc: rpc, stored: storeValue(key: key, value: value, ttl: ttl, now: now))
        case .addProvider(let rpc, let key, let provider, let ttl):
            reply = .ack(rpc: rpc, stored: storeProvider(key: key, provider: provider, from: sender, ttl: ttl, now: now))
        default:
            return
        }
        outbox.append(.send(to: sender, message: reply))
    }

    private func closest(to target: NexusID, excluding: NexusID) -> [NodeRecord] {
        var c = table.closest(to: target, count: config.k + 1)
        c.removeAll { $0.id == excluding }
        return Array(c.prefix(config.k))
    }

    private mutating func storeValue(key: NexusID, value: [UInt8], ttl: UInt32, now: UInt64) -> Bool {
        guard ttl > 0, value.count <= DHTMessage.maxValueSize, validator.validate(key: key, value: value, now: now) else { return false }
        let ttlMS = UInt64(min(ttl, config.recordTTL)) * 1000
        if let held = values[key], now < held.expiresAt {
            if held.value == value {
                values[key]!.expiresAt = max(held.expiresAt, now + ttlMS)
                return true
            }
            guard validator.shouldReplace(existing: held.value, with: value) else { return false }
        } else if values.count >= config.maxStoredRecords {
            return false
        }
        values[key] = StoredValue(value: value, expiresAt: now + ttlMS, republishAt: now + config.republishInterval)
        return true
    }

    private mutating func storeProvider(key: NexusID, provider: NodeRecord, from sender: NodeRecord, ttl: UInt32, now: UInt64) -> Bool {
        // A node may only announce itself: provider entries for others would be forgeable.
        guard provider.id == sender.id else { return false }
        // TTL 0 withdraws the sender's entry (an edge evicted the content, a node stopped serving it).
        guard ttl > 0 else {
            if var entries = providerEntries[key], entries.removeValue(forKey: provider.id) != nil {
                providerEntries[key] = entries.isEmpty ? nil : entries
            }
            return true
        }
        if providerEntries[key] == nil && providerEntries.count >= config.maxProviderKeys { return false }
        var entries = providerEntries[key] ?? [:]
        if entries[provider.id] == nil && entries.count >= config.maxProvidersPerKey {
            // Drop the entry closest to expiry to make room.
            if let oldest = entries.min(by: { ($0.value.expiresAt, $0.key) < ($1.value.expiresAt, $1.key) })?.key { entries[oldest] = nil }
        }
        entries[provider.id] = ProviderEntry(record: provider, expiresAt: now + UInt64(min(ttl, config.providerTTL)) * 1000)
        providerEntries[key] = entries
        return true
    }

    /// Handles timers: failed requests (a silent peer fails its lookup slot and loses standing in the
    /// table), then, when due, expiry, republish and bucket refresh.
    public mutating func handleTimeout(now: UInt64) {
        let expired = pending.filter { $0.value.deadline <= now }
        var touched: [LookupID] = []
        for (rpc, p) in expired.sorted(by: { $0.key < $1.key }) {
            if let lid = fail(rpc: rpc, p) { touched.append(lid) }
        }
        for lid in Set(touched).sorted(by: { $0.raw < $1.raw }) { advance(lid, now: now) }
        if now >= maintenanceAt {
            maintenanceAt = now + config.maintenanceInterval
            maintain(now: now)
        }
    }

    /// Fails request `rpc` at once, without waiting for its timeout: the driver could not reach
    /// the peer (connection refused, wrong node at the address, stream reset). Unknown ids are
    /// ignored, so a late report after the timeout is harmless.
    public mutating func handleUnreachable(rpc: UInt64, now: UInt64) {
        guard let p = pending[rpc] else { return }
        if let lid = fail(rpc: rpc, p) { advance(lid, now: now) }
    }

    /// Drops a pending request as failed; returns the lookup to advance, if any.
    private mutating func fail(rpc: UInt64, _ p: Pending) -> LookupID? {
        pending[rpc] = nil
        table.failed(p.peer.id)
        switch p.purpose {
        case .probe: return nil
        case .store(let lid): storeSettled(lid, peer: p.peer.id, ok: false); return nil
        case .lookup(let lid):
            lookups[lid]?.handleFailure(of: p.peer.id)
            return lid
        }
    }

    private mutating func maintain(now: UInt64) {
        values = values.filter { now < $0.value.expiresAt }
        for (key, entries) in providerEntries {
            let live = entries.filter { now < $0.value.expiresAt }
            providerEntries[key] = live.isEmpty ? nil : live
        }
        for (key, v) in values.sorted(by: { $0.key < $1.key }) where now >= v.republishAt {
            values[key]!.republishAt = now + config.republishInterval
            let remaining = UInt32((v.expiresAt - now) / 1000)
            if remaining > 0 { _ = begin(.node, target: key, op: .put(value: v.value, ttl: remaining), now: now) }
        }
        for (key, due) in provided.sorted(by: { $0.key < $1.key }) where now >= due {
            provided[key] = now + config.providerRepublishInterval
            _ = begin(.node, target: key, op: .provide(ttl: config.providerTTL), now: now)
        }
        for b in 0..<256 where now >= bucketLookedAt[b] + config.bucketRefreshInterval && !table.bucket(b).isEmpty {
            bucketLookedAt[b] = now
            _ = begin(.node, target: randomID(inBucket: b), op: .silent, now: now)
        }
    }
}
