import Collections

/// Priority class of a pending response; a higher class always goes first.
public enum ServePriority: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// Protocol control (HELLO, PING/PONG, HAVE): tiny, never rate limited.
    case control = 0
    /// A client waiting for a first byte or a small object.
    case interactive = 1
    /// Large transfers.
    case bulk = 2

    /// `control < interactive < bulk`: lower sorts first and is served first.
    public static func < (a: ServePriority, b: ServePriority) -> Bool { a.rawValue < b.rawValue }

    /// The class's name.
    public var description: String {
        switch self {
        case .control: "control"
        case .interactive: "interactive"
        case .bulk: "bulk"
        }
    }
}

/// Decides which pending response gets the next bytes of a serving node (sans-IO).
///
/// - Priority: control > interactive > bulk, strictly; a bulk transfer gets bytes only when
///   no eligible interactive or control response waits, so an interactive request waits at
///   most one quantum of bulk bytes.
/// - Fairness: within a class, connections take turns (deficit round robin: a turn is
///   ``Configuration/quantum`` bytes, over one or several responses), so two bulk clients
///   share equally whatever their response sizes; within a connection, its responses of one
///   class are served in order.
/// - Rate: each connection has a token bucket (bytes/s + burst); interactive and bulk bytes
///   spend tokens, control bytes do not. A connection out of tokens is skipped until it
///   refills (``pollTimeout()`` says when). An optional node-wide bucket bounds the sum.
///
/// The runtime calls ``pollGrant(now:)`` whenever it can write, writes the granted bytes of
/// that response, and polls again.
public struct ServeThrottle<Connection: Hashable & Sendable>: Sendable {
    /// Tuning.
    public struct Configuration: Sendable, Equatable {
        /// Most bytes in one grant (default 16 KiB).
        public var quantum: Int
        /// Default per-connection rate in bytes/s (nil: unlimited).
        public var connectionRate: UInt64?
        /// Default per-connection burst in bytes (default 256 KiB; raised to `quantum` if smaller).
        public var connectionBurst: Int
        /// Node-wide rate in bytes/s over all connections (nil: unlimited).
        public var totalRate: UInt64?
        /// Node-wide burst in bytes.
        public var totalBurst: Int

        /// Creates a configuration.
        public init(quantum: Int = 16 * 1024, connectionRate: UInt64? = nil, connectionBurst: Int = 256 * 1024, totalRate: UInt64? = nil, totalBurst: Int = 1024 * 1024) {
            precondition(quantum > 0, "ServeThrottle: quantum must be positive")
            self.quantum = quantum
            self.connectionRate = connectionRate
            self.connectionBurst = max(connectionBurst, quantum)
            self.totalRate = totalRate
            self.totalBurst = max(totalBurst, quantum)
        }
    }

    /// Identifies a pending response.
    public struct ResponseID: Hashable, Sendable, CustomStringConvertible {
        /// A number unique within one throttle.
        public let rawValue: UInt64
        /// `r` + the number.
        public var description: String { "r\(rawValue)" }
    }

    /// Permission to send `bytes` more bytes of `response` now.
    public struct Grant: Sendable, Equatable {
        /// The response.
        public var response: ResponseID
        /// Its connection.
        public var connection: Connection
        /// Its class.
        public var priority: ServePriority
        /// How many bytes to send now.
        public var bytes: Int
        /// Whether these are the response's last bytes (it is then forgotten).
        public var isLast: Bool
    }

    /// Counters per connection.
    public struct ConnectionStats: Sendable, Equatable {
        /// Bytes granted per class (indexed by ``ServePriority/rawValue``).
        public var bytes: [UInt64] = [0, 0, 0]
        /// Grants made.
        public var grants: UInt64 = 0
        /// Times the connection had work but no tokens.
        public var throttled: UInt64 = 0
    }

    struct TokenBucket: Sendable {
        var rate: UInt64
        var burst: Double
        var tokens: Double
        var updatedAt: UInt64

        mutating func refill(now: UInt64) {
            guard now > updatedAt else { return }
            tokens = min(burst, tokens + Double(rate) * Double(now - updatedAt) / 1e9)
            updatedAt = now
        }

        /// When the bucket holds `need` tokens.
        func time(toHold need: Double) -> UInt64 {
            guard tokens < need else { return updatedAt }
            return updatedAt &+ UInt64(((need - tokens) * 1e9 / Double(rate)).rounded(.up))
        }
    }

    private struct Pending: Sendable {
        var id: ResponseID
        var remaining: Int
    }

    private struct ConnectionState: Sendable {
        var bucket: TokenBucket?
        var queues: [Deque<Pending>] = [[], [], []]
        /// Bytes left in the current round-robin turn, per class.
        var deficits: [Int] = [0, 0, 0]
        var stats = ConnectionStats()
    }

    /// Tuning.
    public let configuration: Configuration
    private var connections: [Connection: ConnectionState] = [:]
    /// Per class: connections with pending responses, in turn order.
    private var rings: [Deque<Connection>] = [[], [], []]
    private var owners: [ResponseID: (Connection, ServePriority)] = [:]
    private var total: TokenBucket?
    private var nextID: UInt64 = 0

    /// Creates a throttle with no connections.
    public init(configuration: Configuration = Configuration(), now: UInt64 = 0) {
        self.configuration = configuration
        if let rate = configuration.totalRate {
            total = TokenBucket(rate: rate, burst: Double(configuration.totalBurst), tokens: Double(configuration.totalBurst), updatedAt: now)
        }
    }

    /// Registers a connection, with its own rate or the configured default.
    /// - Parameters:
    ///   - connection: the connection.
    ///   - rate: bytes/s (nil: the configuration's `connectionRate`).
    ///   - burst: bucket size in bytes (nil: the configuration's).
    ///   - now: the runtime's clock in nanoseconds.
    public mutating func addConnection(_ connection: Connection, rate: UInt64? = nil, burst: Int? = nil, now: UInt64) {
        var state = connections[connection] ?? ConnectionState()
        if let rate = rate ?? configuration.connectionRate {
            let size = Double(max(burst ?? configuration.connectionBurst, configuration.quantum))
            state.bucket = TokenBucket(rate: max(1, rate), burst: size, tokens: size, updatedAt: now)
        } else {
            state.bucket = nil
        }
        connections[connection] = state
    }

    /// Forgets a connection and its pending responses.
    /// - Returns: the responses dropped.
    @discardableResult
    public mutating func removeConnection(_ connection: Connection) -> [ResponseID] {
        guard let state = connections.removeValue(forKey: connection) else { return [] }
        for p in ServePriority.allCases { rings[p.rawValue].removeAll { $0 == connection } }
        let dropped = state.queues.flatMap { $0.map(\.id) }
        for id in dropped { owners[id] = nil }
        return dropped
    }

    /// Queues a response of `bytes` bytes (registering the connection with defaults if needed).
    /// - Returns: its id, named in the grants for it.
    public mutating func enqueue(connection: Connection, priority: ServePriority, bytes: Int, now: UInt64) -> ResponseID {
        if connections[connection] == nil { addConnection(connection, now: now) }
        nextID += 1
        let id = ResponseID(rawValue: nextID)
        guard bytes > 0 else { return id }
        let wasIdle = connections[connection]!.queues[priority.rawValue].isEmpty
        connections[connection]!.queues[priority.rawValue].append(Pending(id: id, remaining: bytes))
        owners[id] = (connection, priority)
        if wasIdle { rings[priority.rawValue].append(connection) }
        return id
    }

    /// Drops a pending response (its client went away or reset the stream).
    public mutating func cancel(_ response: ResponseID) {
        guard let (connection, priority) = owners.removeValue(forKey: response) else { return }
        connections[connection]?.queues[priority.rawValue].removeAll { $0.id == response }
        if connections[connection]?.queues[priority.rawValue].isEmpty == true {
            connections[connection]?.deficits[priority.rawValue] = 0
            rings[priority.rawValue].removeAll { $0 == connection }
        }
    }

    /// The next bytes to send, or nil when nothing is eligible now (see ``pollTimeout()``).
    ///
    /// Within a class this is deficit round robin: a connection's turn gives it up to one
    /// quantum of bytes, possibly over several small responses, then the next connection goes.
    /// - Parameter now: the runtime's clock in nanoseconds.
    public mutating func pollGrant(now: UInt64) -> Grant? {
        total?.refill(now: now)
        for priority in ServePriority.allCases {
            let ring = priority.rawValue
            var tries = rings[ring].count
            while tries > 0, let connection = rings[ring].first {
                tries -= 1
                guard var state = connections[connection], let head = state.queues[ring].first else {
                    rings[ring].removeFirst()
                    continue
                }
                if state.deficits[ring] == 0 { state.deficits[ring] = configuration.quantum }
                let allowance = min(state.deficits[ring], head.remaining)
                if priority != .control, var bucket = state.bucket {
                    bucket.refill(now: now)
                    state.bucket = bucket
                    if bucket.tokens < Double(allowance) {
                        state.stats.throttled += 1
                        connections[connection] = state
                        rings[ring].append(rings[ring].removeFirst())  // let the others go
                        continue
                    }
                }
                if let bucket = total, bucket.tokens < Double(allowance) {
                    connections[connection] = state
                    return nil  // the node's own budget is spent: nobody sends
                }
                if priority != .control { state.bucket?.tokens -= Double(allowance) }
                total?.tokens -= Double(allowance)
                state.stats.bytes[ring] += UInt64(allowance)
                state.stats.grants += 1
                state.deficits[ring] -= allowance
                let isLast = allowance == head.remaining
                if isLast {
                    state.queues[ring].removeFirst()
                    owners[head.id] = nil
                } else {
                    state.queues[ring][0].remaining -= allowance
                }
                if state.queues[ring].isEmpty {
                    state.deficits[ring] = 0
                    rings[ring].removeFirst()
                } else if state.deficits[ring] == 0 {
                    rings[ring].append(rings[ring].removeFirst())  // turn over
                }
                connections[connection] = state
                return Grant(response: head.id, connection: connection, priority: priority, bytes: allowance, isLast: isLast)
            }
        }
        return nil
    }

    /// When a response held back by a token bucket becomes eligible, or nil when nothing is
    /// held back (then poll again after the next ``enqueue(connection:priority:bytes:now:)``).
    public func pollTimeout() -> UInt64? {
        var earliest: UInt64?
        for priority in ServePriority.allCases {
            for connection in rings[priority.rawValue] {
                guard let state = connections[connection], let head = state.queues[priority.rawValue].first else { continue }
                let turn = state.deficits[priority.rawValue] > 0 ? state.deficits[priority.rawValue] : configuration.quantum
                let need = Double(min(turn, head.remaining))
                var time: UInt64 = 0
                if priority != .control, let bucket = state.bucket { time = bucket.time(toHold: need) }
                if let total { time = max(time, total.time(toHold: need)) }
                earliest = min(earliest ?? time, time)
            }
        }
        return earliest
    }

    /// Bytes still pending on a connection.
    public func pendingBytes(on connection: Connection) -> Int {
        connections[connection]?.queues.reduce(0) { $0 + $1.reduce(0) { $0 + $1.remaining } } ?? 0
    }

    /// Counters of a connection.
    public func stats(of connection: Connection) -> ConnectionStats? { connections[connection]?.stats }
}
