/// Decides which provider announcements and withdrawals a caching node (an edge) sends into the
/// DHT, and when (sans-IO: the caller passes the time in ms and performs what ``flush(now:)``
/// returns).
///
/// - Batched: changes collect between flushes; a key cached and evicted again before the next
///   flush costs nothing.
/// - Bounded: at most ``Configuration/maxAnnounced`` keys are announced (or queued) at once; a key
///   beyond that is not announced and counted in ``skipped``.
/// - Rate-limited: one flush per ``Configuration/interval`` sends at most
///   ``Configuration/batchSize`` operations, withdrawals first (a reader must not be sent to an
///   edge that no longer holds the content), then announcements in the order they were cached.
public struct ProviderAnnouncer: Sendable {
    /// The bounds.
    public struct Configuration: Sendable, Hashable {
        /// Most keys announced (or queued for announcement) at once.
        public var maxAnnounced: Int
        /// Most operations (ADD_PROVIDER or withdrawal) one flush sends.
        public var batchSize: Int
        /// Least time between two flushes, ms.
        public var interval: UInt64

        /// Creates a configuration (defaults: 1024 keys, 16 operations per second).
        public init(maxAnnounced: Int = 1024, batchSize: Int = 16, interval: UInt64 = 1000) {
            self.maxAnnounced = max(1, maxAnnounced)
            self.batchSize = max(1, batchSize)
            self.interval = interval
        }
    }

    /// One operation for the driver.
    public enum Change: Hashable, Sendable {
        /// Announce this node a provider of the key (ADD_PROVIDER).
        case provide(NexusID)
        /// Withdraw this node's provider entry for the key (ADD_PROVIDER with TTL 0).
        case withdraw(NexusID)
    }

    /// The bounds in force.
    public let configuration: Configuration
    /// Keys announced (sent in a flush and not withdrawn since).
    public private(set) var announced: Set<NexusID> = []
    private var pendingProvide: [NexusID] = []
    private var pendingProvideSet: Set<NexusID> = []
    private var pendingWithdraw: [NexusID] = []
    private var pendingWithdrawSet: Set<NexusID> = []
    private var nextFlush: UInt64 = 0
    /// Keys not announced because ``Configuration/maxAnnounced`` was reached.
    public private(set) var skipped = 0
    /// Announcements and withdrawals handed out so far.
    public private(set) var provided = 0, withdrawn = 0

    /// Creates an announcer.
    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    /// Operations waiting for a flush.
    public var pending: Int { pendingProvide.count + pendingWithdraw.count }

    /// The node now holds `key` (it cached the content's manifest).
    public mutating func cached(_ key: NexusID) {
        if pendingWithdrawSet.remove(key) != nil {
            pendingWithdraw.removeAll { $0 == key }
            return  // still announced: nothing to send
        }
        guard !announced.contains(key), !pendingProvideSet.contains(key) else { return }
        guard announced.count + pendingProvide.count < configuration.maxAnnounced else {
            skipped += 1
            return
        }
        pendingProvide.append(key)
        pendingProvideSet.insert(key)
    }

    /// The node no longer holds `key` (evicted or purged). Keys never announced are ignored, so
    /// the caller may pass every evicted id.
    public mutating func evicted(_ key: NexusID) {
        if pendingProvideSet.remove(key) != nil {
            pendingProvide.removeAll { $0 == key }
            return
        }
        guard announced.contains(key), pendingWithdrawSet.insert(key).inserted else { return }
        pendingWithdraw.append(key)
    }

    /// When ``flush(now:)`` has work and may run (nil: nothing pending).
    public func pollTimeout() -> UInt64? { pending == 0 ? nil : nextFlush }

    /// The operations to perform now: nothing before the rate limit allows, else at most
    /// ``Configuration/batchSize``, withdrawals first.
    public mutating func flush(now: UInt64) -> [Change] {
        guard pending > 0, now >= nextFlush else { return [] }
        nextFlush = now + configuration.interval
        var out: [Change] = []
        while out.count < configuration.batchSize, !pendingWithdraw.isEmpty {
            let key = pendingWithdraw.removeFirst()
            pendingWithdrawSet.remove(key)
            announced.remove(key)
            withdrawn += 1
            out.append(.withdraw(key))
        }
        while out.count < configuration.batchSize, !pendingProvide.isEmpty {
            let key = pendingProvide.removeFirst()
            pendingProvideSet.remove(key)
            announced.insert(key)
            provided += 1
            out.append(.provide(key))
        }
        return out
    }
}
