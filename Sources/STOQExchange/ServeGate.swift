import STOQEdge
import STOQTransport

/// How a node shares its upload among clients (`throttle` in the node configuration).
///
/// With no rate set (the default) responses go out as fast as QUIC sends them. With a rate,
/// every response's bytes pass through a ``ServeThrottle``: a token bucket per connection
/// (`connectionBytesPerSecond`), one for the node (`totalBytesPerSecond`, the uplink an
/// operator grants STOQ), and priority classes — a response is *interactive* when its
/// connection has at most `interactiveBytes` queued including it (a client waiting for a first
/// byte or a small object), else *bulk* — so interactive responses go first and bulk clients
/// share what is left in equal turns. A bulk client therefore cannot starve the others.
public struct ServeThrottleSettings: Codable, Sendable, Hashable {
    /// Per-connection rate, bytes/s (nil: no per-connection limit).
    public var connectionBytesPerSecond: UInt64?
    /// Node-wide rate, bytes/s (nil: no node limit).
    public var totalBytesPerSecond: UInt64?
    /// Per-connection burst, bytes (default 256 KiB).
    public var connectionBurstBytes: Int?
    /// Bytes per grant (default 16 KiB): an interactive response waits at most this much bulk.
    public var quantumBytes: Int?
    /// A response is interactive while its connection has at most this many bytes queued,
    /// itself included (default 64 KiB).
    public var interactiveBytes: Int?

    /// Creates settings.
    public init(
        connectionBytesPerSecond: UInt64? = nil, totalBytesPerSecond: UInt64? = nil, connectionBurstBytes: Int? = nil,
        quantumBytes: Int? = nil, interactiveBytes: Int? = nil
    ) {
        self.connectionBytesPerSecond = connectionBytesPerSecond
        self.totalBytesPerSecond = totalBytesPerSecond
        self.connectionBurstBytes = connectionBurstBytes
        self.quantumBytes = quantumBytes
        self.interactiveBytes = interactiveBytes
    }

    /// Whether any limit is set (else serving is not throttled at all).
    public var isActive: Bool { connectionBytesPerSecond != nil || totalBytesPerSecond != nil }

    /// The throttle's configuration.
    public var throttleConfiguration: ServeThrottle<ObjectIdentifier>.Configuration {
        let quantum = max(1024, quantumBytes ?? 16 * 1024)
        return .init(
            quantum: quantum, connectionRate: connectionBytesPerSecond, connectionBurst: connectionBurstBytes ?? 256 * 1024,
            totalRate: totalBytesPerSecond, totalBurst: max(quantum, Int(min(totalBytesPerSecond ?? 0, 1 << 20) / 4)))
    }
}

/// Runs a sans-IO ``ServeThrottle`` for a ``ChunkServer``: responses queue their sizes, the gate
/// polls grants with the real clock (and wakes itself when a bucket refills), and each response's
/// writer takes its granted bytes before writing them.
actor ServeGate {
    private var throttle: ServeThrottle<ObjectIdentifier>
    private let interactiveBytes: Int
    private let origin = ContinuousClock.now
    private var ready: [ServeThrottle<ObjectIdentifier>.ResponseID: Int] = [:]
    private var waiting: [ServeThrottle<ObjectIdentifier>.ResponseID: CheckedContinuation<Int, Never>] = [:]
    private var timer: Task<Void, Never>?
    private var timerDeadline: UInt64?
    private var granted: [ServePriority: Int] = [:]

    init(settings: ServeThrottleSettings) {
        throttle = ServeThrottle(configuration: settings.throttleConfiguration)
        interactiveBytes = settings.interactiveBytes ?? 64 * 1024
    }

    private func now() -> UInt64 { UInt64(max(0, (ContinuousClock.now - origin).nanoseconds)) }

    /// Queues a response of `bytes` on `connection` and says which class it got.
    func enqueue(connection: ObjectIdentifier, bytes: Int) -> (ServeThrottle<ObjectIdentifier>.ResponseID, ServePriority) {
        let priority: ServePriority = throttle.pendingBytes(on: connection) + bytes <= interactiveBytes ? .interactive : .bulk
        let id = throttle.enqueue(connection: connection, priority: priority, bytes: bytes, now: now())
        pump()
        return (id, priority)
    }

    /// The bytes granted to `response` so far and not yet taken, waiting until there are some.
    /// - Returns: 0 when the response was cancelled.
    func take(_ response: ServeThrottle<ObjectIdentifier>.ResponseID) async -> Int {
        if let n = ready.removeValue(forKey: response) { return n }
        return await withCheckedContinuation { waiting[response] = $0 }
    }

    /// Whether bytes are ready for `response` without waiting.
    func hasGrant(_ response: ServeThrottle<ObjectIdentifier>.ResponseID) -> Bool { ready[response] != nil }

    /// Drops a response (its stream failed).
    func cancel(_ response: ServeThrottle<ObjectIdentifier>.ResponseID) {
        throttle.cancel(response)
        ready[response] = nil
        waiting.removeValue(forKey: response)?.resume(returning: 0)
        pump()
    }

    /// Forgets a connection that closed.
    func remove(connection: ObjectIdentifier) {
        for id in throttle.removeConnection(connection) {
            ready[id] = nil
            waiting.removeValue(forKey: id)?.resume(returning: 0)
        }
        pump()
    }

    /// Bytes granted so far, per class.
    func grantedBytes() -> [ServePriority: Int] { granted }

    /// Counters of a connection.
    func stats(of connection: ObjectIdentifier) -> ServeThrottle<ObjectIdentifier>.ConnectionStats? { throttle.stats(of: connection) }

    private func pump() {
        let t = now()
        while let grant = throttle.pollGrant(now: t) {
            granted[grant.priority, default: 0] += grant.bytes
            if let continuation = waiting.removeValue(forKey: grant.response) {
                continuation.resume(returning: grant.bytes + (ready.removeValue(forKey: grant.response) ?? 0))
            } else {
                ready[grant.response, default: 0] += grant.bytes
            }
        }
        guard let deadline = throttle.pollTimeout() else { return }
        if let armed = timerDeadline, armed <= deadline, timer != nil { return }
        timer?.cancel()
        timerDeadline = deadline
        let delay = max(100_000, Int64(deadline) - Int64(t))  // never spin on a deadline already due
        timer = Task {
            try? await Task.sleep(for: .nanoseconds(delay))
            guard !Task.isCancelled else { return }
            await self.fire()
        }
    }

    private func fire() {
        timer = nil
        timerDeadline = nil
        pump()
    }
}
