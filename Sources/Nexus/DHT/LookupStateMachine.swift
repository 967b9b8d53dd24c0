/// What an iterative lookup looks for.
public enum LookupKind: Hashable, Sendable {
    /// FIND_NODE: the k closest nodes to the target.
    case node
    /// FIND_VALUE / GET_RECORD: the value stored under the target key.
    case value
    /// FIND_PROVIDERS: nodes that provide the target key.
    case providers
}

/// The outcome of a lookup.
public struct LookupResult: Hashable, Sendable {
    /// What was looked up.
    public var kind: LookupKind
    /// The target id or key.
    public var target: NexusID
    /// The closest responsive nodes found, closest first (at most k).
    public var closest: [NodeRecord]
    /// The value (value lookups that found one): with several replicas answering, the best of
    /// them (the highest version, as the owner's validator decides).
    public var value: [UInt8]?
    /// Every distinct value the replicas the lookup reached returned (value lookups; at most
    /// ``LookupStateMachine/maxValues``), in the order they arrived.
    public var values: [[UInt8]] = []
    /// Providers found (provider lookups): the union of what every node asked returned (at most 64).
    public var providers: [NodeRecord]
    /// Rounds: the depth of the query chain that completed the lookup (for a value lookup, its
    /// first value hit: it then goes on to hear from more replicas, which ``messages`` counts;
    /// else the deepest query among the k closest). Round 1 queries nodes from the local table.
    public var rounds: Int
    /// Requests sent.
    public var messages: Int
    /// Requests that timed out.
    public var timeouts: Int
}

/// One iterative Kademlia lookup (sans-IO): keeps a shortlist ordered by XOR distance, at most
/// α requests in flight to the closest not-yet-asked nodes, and finishes when the k closest
/// non-failed nodes have all answered (or, for values, at the first hit).
///
/// A provider lookup does not stop at the first node that knows providers: a provider record
/// lands only on the nodes its ADD_PROVIDER reached, so one node may know a few of them (seen: 6
/// of 16 storage nodes when announcements timed out on a busy machine). It merges the providers of
/// every node it asks and ends as a node lookup does.
///
/// A value lookup does not take the first replica's word either: a replica that missed an update
/// holds an older version. It goes on until `valueQuorum` nodes have returned a value (or no node
/// is left to ask) and hands back every distinct value; ``KademliaNode`` returns the best of them
/// (for names, the highest version).
///
/// The owner (``KademliaNode``) sends the requests ``nextQueries()`` returns and feeds back
/// ``handleResponse(from:closer:)`` / ``handleFailure(of:)``; timeouts are the owner's, so a node that
/// leaves mid-lookup costs one timeout and is skipped.
public struct LookupStateMachine: Sendable {
    enum State: Sendable { case fresh, inFlight, responded, failed }
    struct Candidate: Sendable {
        var record: NodeRecord
        var distance: NexusID
        var state: State
        var depth: Int
    }

    /// What is looked up.
    public let kind: LookupKind
    /// The target.
    public let target: NexusID
    let k: Int
    let alpha: Int
    /// Bound on the shortlist, so a lookup's memory is O(k) whatever peers answer.
    let maxCandidates: Int
    /// Most providers a lookup collects, whatever peers answer.
    static let maxProviders = 64
    var candidates: [Candidate] = []
    var inFlight = 0
    var messages = 0
    var timeouts = 0
    var value: [UInt8]?
    /// Distinct values returned so far (value lookups), bounded by ``maxValues``.
    var values: [[UInt8]] = []
    /// Nodes that returned a value.
    var valueHits = 0
    /// Replicas that must return a value before a value lookup ends (1: the first hit ends it).
    let valueQuorum: Int
    /// Most distinct values a lookup keeps, whatever peers answer.
    static let maxValues = 8
    var providers: [NexusID: NodeRecord] = [:]
    var providerOrder: [NodeRecord] = []
    var hitDepth: Int?
    /// True once the lookup is complete.
    public private(set) var isFinished = false
    let selfID: NexusID

    /// Starts a lookup from the local table's closest nodes.
    /// - Parameters:
    ///   - valueQuorum: value lookups: how many nodes must return a value before it ends (at least 1).
    ///   - localValue: value lookups: a value this node holds itself, counted as the first hit.
    public init(kind: LookupKind, target: NexusID, selfID: NexusID, seeds: [NodeRecord], k: Int = 20, alpha: Int = 3,
                valueQuorum: Int = 1, localValue: [UInt8]? = nil) {
        self.kind = kind; self.target = target; self.selfID = selfID; self.k = k; self.alpha = alpha
        self.maxCandidates = 3 * k
        self.valueQuorum = max(1, valueQuorum)
        merge(seeds, depth: 0)
        if kind == .value, let localValue {
            value = localValue; values = [localValue]; valueHits = 1; hitDepth = 0
            if valueHits >= self.valueQuorum { isFinished = true }
        }
        if candidates.isEmpty { isFinished = true }
    }

    mutating func merge(_ records: [NodeRecord], depth: Int) {
        for r in records where r.id != selfID {
            let d = r.id ^ target
            // Binary search for the insertion point.
            var lo = 0, hi = candidates.count
            while lo < hi { let mid = (lo + hi) / 2; if candidates[mid].distance < d { lo = mid + 1 } else { hi = mid } }
            if lo < candidates.count && candidates[lo].distance == d {
                if candidates[lo].state == .fresh && depth < candidates[lo].depth { candidates[lo].depth = depth }
                continue
            }
            if lo >= maxCandidates { continue }
            candidates.insert(Candidate(record: r, distance: d, state: .fresh, depth: depth), at: lo)
            if candidates.count > maxCandidates {
                // Never drop an in-flight entry's bookkeeping: fix the count if one falls off.
                if candidates[candidates.count - 1].state == .inFlight { inFlight -= 1 }
                candidates.removeLast()
            }
        }
    }

    /// The next nodes to query (keeps at most α in flight); empty when nothing more to ask now.
    public mutating func nextQueries() -> [NodeRecord] {
        guard !isFinished else { return [] }
        var out: [NodeRecord] = []
        var seen = 0
        var allDone = true
        for i in candidates.indices {
            if candidates[i].state == .failed { continue }
            seen += 1
            if seen > k { break }
            switch candidates[i].state {
            case .fresh:
                allDone = false
                if inFlight < alpha {
                    candidates[i].state = .inFlight
                    inFlight += 1; messages += 1
                    out.append(candidates[i].record)
                }
            case .inFlight: allDone = false
            case .responded, .failed: break
            }
        }
        if allDone && out.isEmpty { isFinished = true }
        return out
    }

    /// The shortlist position of `id`, if present.
    func position(of id: NexusID) -> Int? {
        let d = id ^ target
        var lo = 0, hi = candidates.count
        while lo < hi { let mid = (lo + hi) / 2; if candidates[mid].distance < d { lo = mid + 1 } else { hi = mid } }
        return lo < candidates.count && candidates[lo].distance == d ? lo : nil
    }

    private mutating func settle(_ id: NexusID, _ state: State) -> Int? {
        guard let i = position(of: id), candidates[i].state == .inFlight else { return nil }
        candidates[i].state = state
        inFlight -= 1
        return candidates[i].depth
    }

    /// Feeds a response.
    /// - Parameters:
    ///   - id: the responder.
    ///   - closer: the nodes it returned.
    ///   - value: a value it returned (value lookups).
    ///   - providers: providers it returned (provider lookups).
    public mutating func handleResponse(from id: NexusID, closer: [NodeRecord], value: [UInt8]? = nil, providers: [NodeRecord] = []) {
        guard !isFinished, let depth = settle(id, .responded) else { return }
        if kind == .value, let value {
            valueHits += 1
            if self.value == nil { self.value = value }
            if !values.contains(value) && values.count < Self.maxValues { values.append(value) }
            if hitDepth == nil { hitDepth = depth + 1 }
            if valueHits >= valueQuorum { isFinished = true }
            return
        }
        if kind == .providers {
            for p in providers where self.providers[p.id] == nil && self.providers.count < Self.maxProviders {
                self.providers[p.id] = p; providerOrder.append(p)
            }
        }
        merge(closer, depth: depth + 1)
    }

    /// Feeds a failure (timeout or error) of the request to `id`.
    public mutating func handleFailure(of id: NexusID) {
        guard !isFinished, settle(id, .failed) != nil else { return }
        timeouts += 1
    }

    /// The result so far (complete once ``isFinished``).
    public var result: LookupResult {
        let closest = candidates.filter { $0.state == .responded }.prefix(k).map(\.record)
        let deepest = candidates.filter { $0.state == .responded }.prefix(k).map { $0.depth + 1 }.max() ?? 0
        var result = LookupResult(kind: kind, target: target, closest: Array(closest), value: value, providers: providerOrder,
                                  rounds: hitDepth ?? deepest, messages: messages, timeouts: timeouts)
        result.values = values
        return result
    }
}
