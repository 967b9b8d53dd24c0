

/// What one peer may hold of a serving node through one connection's streams
/// (docs/PROTOCOL.md, "Limits a node enforces on each peer").
///
/// Every field is a bound on memory or time a peer chose to use: a request that does not arrive,
/// responses it does not read. A peer over a bound is slowed down first (its streams wait,
/// unread, and QUIC flow control stops it), then its stream is aborted (RESET_STREAM and
/// STOP_SENDING with 0x1 bad request). Connection counts are bounded by the endpoint
/// (``NodeConfiguration/maxConnections``, ``NodeConfiguration/maxConnectionsPerAddress``).
public struct PeerLimits: Sendable, Hashable, Codable {
    /// A request stream whose first frame is not complete this long after the node began reading
    /// it is aborted (default 10 s).
    public var requestTimeoutMilliseconds: Int = 10_000
    /// Streams of one connection whose request is being read at once (default 64). Further
    /// streams wait unread until one completes; their bytes stay inside QUIC flow control.
    public var maxPendingRequests: Int = 64
    /// Chunk responses of one connection in progress at once, from reading the chunk until the
    /// peer has acknowledged every byte (default 32, the most a STOQ fetcher asks of one source).
    /// Further requests wait before their chunk is read.
    public var maxResponses: Int = 32
    /// Response bytes of one connection queued and not yet acknowledged by the peer
    /// (default 8 MiB). A response that does not fit waits; one larger than the whole budget
    /// goes when it is alone.
    public var maxResponseBytes: Int = 8 << 20
    /// A response the peer acknowledges nothing of for this long is aborted (default 30 s): a
    /// peer that does not read is back-pressured, then reset.
    public var responseStallTimeoutMilliseconds: Int = 30_000

    /// The defaults.
    public init() {}

    /// Reads a configuration in which every field is optional (missing: the default).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PeerLimits.default
        requestTimeoutMilliseconds = try c.decodeIfPresent(Int.self, forKey: .requestTimeoutMilliseconds) ?? d.requestTimeoutMilliseconds
        maxPendingRequests = try c.decodeIfPresent(Int.self, forKey: .maxPendingRequests) ?? d.maxPendingRequests
        maxResponses = try c.decodeIfPresent(Int.self, forKey: .maxResponses) ?? d.maxResponses
        maxResponseBytes = try c.decodeIfPresent(Int.self, forKey: .maxResponseBytes) ?? d.maxResponseBytes
        responseStallTimeoutMilliseconds = try c.decodeIfPresent(Int.self, forKey: .responseStallTimeoutMilliseconds) ?? d.responseStallTimeoutMilliseconds
    }

    private static let `default` = PeerLimits()

    /// Checks every bound is usable.
    /// - Throws: ``NodeError`` `.invalidArgument` naming the first one that is not.
    public func validate() throws {
        func check(_ ok: Bool, _ what: String) throws {
            guard ok else { throw NodeError(.invalidArgument, what) }
        }
        try check((1...3_600_000).contains(requestTimeoutMilliseconds), "the request timeout must be 1 ms to 1 hour, not \(requestTimeoutMilliseconds) ms")
        try check((1...65_536).contains(maxPendingRequests), "max pending requests must be 1 to 65536, not \(maxPendingRequests)")
        try check((1...65_536).contains(maxResponses), "max responses per connection must be 1 to 65536, not \(maxResponses)")
        try check((64 << 10...1 << 32).contains(maxResponseBytes), "max response bytes per connection must be 64 KiB to 4 GiB, not \(maxResponseBytes)")
        try check((1...3_600_000).contains(responseStallTimeoutMilliseconds), "the response stall timeout must be 1 ms to 1 hour, not \(responseStallTimeoutMilliseconds) ms")
    }

    var requestTimeoutNanoseconds: UInt64 { UInt64(max(1, requestTimeoutMilliseconds)) * 1_000_000 }
    var responseStallNanoseconds: UInt64 { UInt64(max(1, responseStallTimeoutMilliseconds)) * 1_000_000 }
}

/// The bookkeeping of ``PeerLimits`` for one connection: which streams are reading their request
/// and until when, which responses hold a slot and bytes, and which of them the peer stopped
/// acknowledging. Sans-IO: it never sleeps or reads a clock; every call that depends on time
/// takes `now` (nanoseconds on the caller's clock), and it only answers what to do.
struct ConnectionLimiter {
    /// Where a response is.
    enum ResponseState: Equatable {
        /// Holds a slot; reading its chunk, or waiting for bytes of the budget.
        case preparing
        /// Holds `bytes` of the budget and is being sent.
        case sending(bytes: Int, acknowledged: UInt64, lastProgress: UInt64)
    }

    /// What ``check(now:)`` found.
    struct Verdict: Equatable {
        /// Streams whose request did not complete in time.
        var lateRequests: [Int64] = []
        /// Responses the peer acknowledged nothing more of for the stall timeout (this includes a
        /// response fully acknowledged on a stream the peer never finished: its slot is not
        /// held longer than that).
        var stalledResponses: [Int64] = []
    }

    let limits: PeerLimits
    private(set) var requestDeadlines: [Int64: UInt64] = [:]
    private(set) var responses: [Int64: ResponseState] = [:]
    private(set) var bytesInUse = 0
    private var byteQueue: [(id: Int64, bytes: Int)] = []

    init(limits: PeerLimits) { self.limits = limits }

    // MARK: Requests

    /// Admits stream `id` to read its request if fewer than ``PeerLimits/maxPendingRequests`` are
    /// being read; its deadline starts now.
    mutating func admitRequest(_ id: Int64, now: UInt64) -> Bool {
        guard requestDeadlines.count < limits.maxPendingRequests else { return false }
        requestDeadlines[id] = now &+ limits.requestTimeoutNanoseconds
        return true
    }

    /// The request of `id` was read (or its stream failed): it no longer counts.
    mutating func requestEnded(_ id: Int64) {
        requestDeadlines[id] = nil
    }

    // MARK: Responses

    /// Takes a response slot for `id` if one is free.
    mutating func acquireResponse(_ id: Int64) -> Bool {
        guard responses[id] == nil else { return true }
        guard responses.count < limits.maxResponses else { return false }
        responses[id] = .preparing
        return true
    }

    /// Asks for `bytes` of the budget for response `id` (queued in order of asking): true when
    /// granted now, false when it must ask again after a release.
    mutating func reserve(_ id: Int64, bytes: Int, now: UInt64) -> Bool {
        guard responses[id] == .preparing else { return responses[id] != nil }
        let want = max(0, min(bytes, limits.maxResponseBytes))
        if !byteQueue.contains(where: { $0.id == id }) { byteQueue.append((id, want)) }
        guard let first = byteQueue.first, first.id == id else { return false }
        guard bytesInUse == 0 || bytesInUse + want <= limits.maxResponseBytes else { return false }
        byteQueue.removeFirst()
        bytesInUse += want
        responses[id] = .sending(bytes: want, acknowledged: 0, lastProgress: now)
        return true
    }

    /// Notes how much of response `id` the peer has acknowledged.
    mutating func progress(_ id: Int64, acknowledged: UInt64, now: UInt64) {
        guard case .sending(let bytes, let before, _)? = responses[id], acknowledged > before else { return }
        responses[id] = .sending(bytes: bytes, acknowledged: acknowledged, lastProgress: now)
    }

    /// Response `id` is over: its slot and bytes are free.
    mutating func releaseResponse(_ id: Int64) {
        if case .sending(let bytes, _, _)? = responses.removeValue(forKey: id) { bytesInUse -= bytes }
        if let i = byteQueue.firstIndex(where: { $0.id == id }) { byteQueue.remove(at: i) }
    }

    /// The response streams being sent, whose acknowledgements ``progress(_:acknowledged:now:)``
    /// should be fed before ``check(now:)``.
    var sendingResponses: [Int64] {
        responses.compactMap { (entry) -> Int64? in
            if case .sending = entry.value { return entry.key }
            return nil
        }.sorted()
    }

    // MARK: Time

    /// The requests past their deadline and the responses the peer stopped reading, at `now`.
    func check(now: UInt64) -> Verdict {
        var verdict = Verdict()
        for (id, deadline) in requestDeadlines where deadline <= now { verdict.lateRequests.append(id) }
        for (id, state) in responses {
            guard case .sending(_, _, let last) = state else { continue }
            if now >= last && now - last >= limits.responseStallNanoseconds { verdict.stalledResponses.append(id) }
        }
        verdict.lateRequests.sort()
        verdict.stalledResponses.sort()
        return verdict
    }
}
