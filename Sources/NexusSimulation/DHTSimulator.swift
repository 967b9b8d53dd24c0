import HeapModule
import STOQSimulation
import Nexus

/// A deterministic in-memory network of ``KademliaNode``s with a virtual clock.
///
/// Messages take a per-pair latency (5–50 ms, fixed per pair from the seed); a killed node drops
/// everything sent to it, so its peers see timeouts. Optionally every message goes through the
/// binary codec. It backs `NexusBenchmark` (in `NexusBenchmarks`) and the DHT simulation tests;
/// the node code is the same that runs over QUIC.
public struct DHTSimulator {
    struct Event: Comparable {
        enum Kind { case deliver(from: Int, to: Int, DHTMessage), timer(Int) }
        var time: UInt64
        var seq: UInt64
        var kind: Kind
        static func < (a: Event, b: Event) -> Bool { (a.time, a.seq) < (b.time, b.seq) }
        static func == (a: Event, b: Event) -> Bool { a.time == b.time && a.seq == b.seq }
    }

    /// A finished lookup.
    public struct Completed: Sendable {
        /// The node that ran it.
        public var node: Int
        /// Its id.
        public var lookup: LookupID
        /// The result.
        public var result: LookupResult
        /// Virtual time it took (ms).
        public var elapsed: UInt64
    }

    /// The nodes.
    public private(set) var nodes: [KademliaNode]
    /// Which nodes are running.
    public private(set) var alive: [Bool]
    /// The virtual time (ms).
    public private(set) var now: UInt64 = 0
    /// Route every message through ``DHTMessage/encode()`` / ``DHTMessage/decode(_:)``.
    public var encodeMessages = false
    /// Messages delivered so far.
    public private(set) var delivered = 0
    /// Completed lookups, in completion order.
    public private(set) var completed: [Completed] = []
    /// Completed stores: (node, lookup, nodes that acknowledged).
    public private(set) var stores: [(node: Int, lookup: LookupID, storedOn: [NexusID])] = []
    /// Nodes that finished bootstrapping.
    public private(set) var bootstrapped: Set<Int> = []
    private var started: [LookupKey: UInt64] = [:]
    private var queue = Heap<Event>()
    private var timerAt: [UInt64]
    private var seq: UInt64 = 0
    private let seed: UInt64
    private var index: [NexusID: Int] = [:]

    struct LookupKey: Hashable { var node: Int; var lookup: LookupID }

    /// Creates `count` nodes with SHA-256 ids derived from the seed (none know each other yet).
    /// - Parameters:
    ///   - count: number of nodes.
    ///   - config: DHT parameters for every node.
    ///   - validator: storage validator for every node.
    ///   - seed: determines ids and latencies.
    public init(count: Int, config: DHTConfiguration = DHTConfiguration(), validator: any DHTRecordValidator = AcceptAllValidator(), seed: UInt64) {
        self.seed = seed
        var nodes: [KademliaNode] = []
        nodes.reserveCapacity(count)
        for i in 0..<count {
            // The id is SHA-256 of the seed and the index, each 8 bytes big-endian.
            let id = NexusHash.sha256([seed, UInt64(i)].flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } })
            let addr = try! NexusAddress(high: 0xFD00_0000_0000_0000 | UInt64(i >> 16), low: UInt64(i), port: 4433)
            let rec = NodeRecord(id: id, addresses: [addr], region: ["eu", "us", "ap"][i % 3], certificateFingerprint: NexusHash.sha256(id.bytes))
            nodes.append(KademliaNode(record: rec, config: config, validator: validator, seed: seed &+ UInt64(i), now: 0))
            index[id] = i
        }
        self.nodes = nodes
        alive = Array(repeating: true, count: count)
        timerAt = Array(repeating: .max, count: count)
    }

    /// The index of the node with `id`.
    public func node(withID id: NexusID) -> Int? { index[id] }

    /// Fills every routing table as a converged network would have it (global view), see ``ConvergedView``.
    public mutating func prefillConverged() {
        let view = ConvergedView(ids: nodes.map(\.id))
        let bySorted = view.sortedIDs.map { index[$0]! }
        for i in nodes.indices {
            let buckets = view.contacts(of: nodes[i].id, k: nodes[i].config.k, seed: seed)
            let recs = buckets.flatMap { $0 }.map { nodes[bySorted[$0]].record }
            nodes[i].addContacts(recs, now: now)
            schedule(i)
        }
    }

    /// Joins nodes one after another: node `i` bootstraps from a random earlier node, and the
    /// network runs until it has finished (own-id lookup plus bucket refreshes).
    /// - Parameter range: the nodes to join (node 0 is the first seed if included).
    public mutating func bootstrapSequentially(_ range: Range<Int>) {
        var rng = SplitMix64(seed: seed ^ 0xB007)
        for i in range where i > 0 {
            let seedNode = Int(rng.next() % UInt64(i))
            nodes[i].bootstrap(seeds: [nodes[seedNode].record], now: now)
            pump(i)
            run(until: now + 120_000) { $0.bootstrapped.contains(i) }
        }
    }

    /// The latency between two nodes (ms), fixed per pair.
    public func latency(_ a: Int, _ b: Int) -> UInt64 {
        var x = SplitMix64(seed: seed ^ UInt64(min(a, b)) << 32 ^ UInt64(max(a, b)))
        return 5 + x.next() % 46
    }

    /// Stops a node: messages to it are dropped from now on.
    public mutating func kill(_ i: Int) { alive[i] = false }

    /// Starts a lookup on node `i`.
    @discardableResult
    public mutating func startLookup(on i: Int, _ kind: LookupKind, target: NexusID) -> LookupID {
        let lid = nodes[i].startLookup(kind, target: target, now: now)
        started[LookupKey(node: i, lookup: lid)] = now
        pump(i)
        return lid
    }

    /// Runs a lookup on node `i` to completion and returns it.
    public mutating func lookup(on i: Int, _ kind: LookupKind, target: NexusID) -> Completed? {
        let lid = startLookup(on: i, kind, target: target)
        let key = LookupKey(node: i, lookup: lid)
        run(until: now + 600_000) { sim in sim.started[key] == nil }
        return completed.last { $0.node == i && $0.lookup == lid }
    }

    /// Stores a value from node `i` and runs until the stores are acknowledged.
    public mutating func put(on i: Int, key: NexusID, value: [UInt8]) throws(NexusError) -> [NexusID] {
        let lid = try nodes[i].put(key: key, value: value, now: now)
        pump(i)
        run(until: now + 600_000) { sim in sim.stores.contains { $0.node == i && $0.lookup == lid } }
        return stores.last { $0.node == i && $0.lookup == lid }?.storedOn ?? []
    }

    /// Announces node `i` as provider of `key` and runs until acknowledged.
    public mutating func provide(on i: Int, key: NexusID) -> [NexusID] {
        let lid = nodes[i].provide(key: key, now: now)
        pump(i)
        run(until: now + 600_000) { sim in sim.stores.contains { $0.node == i && $0.lookup == lid } }
        return stores.last { $0.node == i && $0.lookup == lid }?.storedOn ?? []
    }

    /// Withdraws node `i`'s provider entry for `key` (ADD_PROVIDER with TTL 0) and runs until
    /// acknowledged.
    public mutating func withdraw(on i: Int, key: NexusID) -> [NexusID] {
        let lid = nodes[i].withdraw(key: key, now: now)
        pump(i)
        run(until: now + 600_000) { sim in sim.stores.contains { $0.node == i && $0.lookup == lid } }
        return stores.last { $0.node == i && $0.lookup == lid }?.storedOn ?? []
    }

    /// Gives node `i` a new record (e.g. a new address; the same id) and runs until its provider
    /// entries are announced again.
    public mutating func updateRecord(on i: Int, _ record: NodeRecord) {
        let lids = nodes[i].updateRecord(record, now: now)
        pump(i)
        run(until: now + 600_000) { sim in lids.allSatisfy { lid in sim.stores.contains { $0.node == i && $0.lookup == lid } } }
    }

    /// Starts a killed node again, with the state it had (a replica that missed what happened meanwhile).
    public mutating func revive(_ i: Int) {
        alive[i] = true
        timerAt[i] = .max
        schedule(i)
    }

    private mutating func schedule(_ i: Int) {
        guard alive[i] else { return }
        let t = max(nodes[i].pollTimeout(), now)
        if t < timerAt[i] {
            timerAt[i] = t
            seq += 1
            queue.insert(Event(time: t, seq: seq, kind: .timer(i)))
        }
    }

    private mutating func pump(_ i: Int) {
        while let action = nodes[i].pollAction() {
            switch action {
            case .send(let to, var message):
                guard let j = index[to.id] else { continue }
                if encodeMessages { message = try! DHTMessage.decode(message.encode()) }
                seq += 1
                queue.insert(Event(time: now + latency(i, j), seq: seq, kind: .deliver(from: i, to: j, message)))
            case .lookupFinished(let lid, let result):
                let key = LookupKey(node: i, lookup: lid)
                let t0 = started.removeValue(forKey: key) ?? now
                completed.append(Completed(node: i, lookup: lid, result: result, elapsed: now - t0))
            case .storeFinished(let lid, _, let on):
                stores.append((i, lid, on))
            case .bootstrapFinished:
                bootstrapped.insert(i)
            }
        }
        schedule(i)
    }

    /// Processes events in time order until `deadline` or until `stop` is true.
    public mutating func run(until deadline: UInt64, stop: (DHTSimulator) -> Bool = { _ in false }) {
        while !stop(self), let next = queue.min, next.time <= deadline {
            let e = queue.removeMin()
            now = e.time
            switch e.kind {
            case .deliver(let from, let to, let message):
                guard alive[to], alive[from] else { continue }
                delivered += 1
                nodes[to].handle(message, from: nodes[from].record, now: now)
                pump(to)
            case .timer(let i):
                guard timerAt[i] == e.time else { continue }
                timerAt[i] = .max
                guard alive[i] else { continue } // a stopped node runs no timers
                nodes[i].handleTimeout(now: now)
                pump(i)
            }
        }
        if !stop(self) && (queue.min?.time ?? .max) > deadline { now = max(now, deadline) }
    }
}
