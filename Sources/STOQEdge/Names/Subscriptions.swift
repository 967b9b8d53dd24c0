import Crypto
import STOQContent

/// The upstream side of name coherency: the authoritative record per name (an origin), which
/// peers below hold which name and at which version, and the invalidations to send them when a
/// name gets a new version.
///
/// An edge subscribes when it fetches a name's record from the origin; the subscription lasts
/// the record's TTL (plus `grace`) unless renewed, since after that the edge has expired the
/// mapping itself. ``publish(_:)`` (what `stoq name publish NAME ID` calls) queues one
/// ``NameInvalidation`` for every live holder; the runtime drains them with ``pollTransmit()``.
///
/// In a tier of edges (origin → edge1 → edge2), edge1 keeps one of these too, without records of
/// its own: edges below it subscribe with ``handleRelaySubscribe(peer:record:now:)`` when it
/// answers them, and an invalidation from its upstream goes on to them with
/// ``handleInvalidation(_:now:)``. A holder is sent an invalidation only for a version newer than
/// the one it was given or last told, so duplicates stop at every hop and a loop of edges cannot
/// circulate one (versions only increase).
///
/// A push that fails while the holder's connection is still open (a partition, a stalled peer) is
/// not forgotten: the runtime reports it with ``handlePushFailed(peer:invalidation:now:)`` and the
/// invalidation is queued again after a backoff (``retryInterval``, doubling up to
/// ``maxRetryInterval``) until the holder takes it, its subscription lapses, or it goes away
/// (``handlePeerGone(_:)``). Retries are due at ``pollTimeout()`` and queued by
/// ``handleTimeout(now:)``. Without this an edge cut off when a name changed would serve the old
/// version for the rest of its TTL after the partition healed.
public struct Subscriptions<Peer: Hashable & Sendable>: Sendable {
    /// Extra lifetime of a subscription beyond the record's TTL, in nanoseconds.
    public let grace: UInt64
    private var records: [String: NameRecord] = [:]
    /// What one holder was given: the version, and when its subscription ends (nanoseconds).
    private struct Holding: Sendable {
        var end: UInt64
        var version: UInt64
    }
    /// name → holder → holding.
    private var holders: [String: [Peer: Holding]] = [:]
    private var outbox: [(peer: Peer, invalidation: NameInvalidation)] = []
    private var outboxHead = 0
    /// A push that failed and is sent again at `at` (`.max` while the retry is in flight).
    private struct Retry: Sendable {
        var peer: Peer
        var name: String
        var version: UInt64
        var at: UInt64
        var attempts: UInt32
    }
    /// In the order they first failed, so retries go out in a deterministic order.
    private var retries: [Retry] = []
    /// Invalidations queued so far.
    public private(set) var invalidationsQueued: UInt64 = 0
    /// Invalidations queued again after a failed push.
    public private(set) var retriesQueued: UInt64 = 0
    /// Delay before the first retry of a failed push, in nanoseconds.
    public let retryInterval: UInt64
    /// Longest delay between two retries, in nanoseconds.
    public let maxRetryInterval: UInt64

    /// Creates empty state.
    /// - Parameters:
    ///   - grace: extra subscription lifetime beyond the TTL (default 5 s).
    ///   - retryInterval: delay before a failed push is retried (default 1 s), doubling per failure.
    ///   - maxRetryInterval: longest delay between retries (default 15 s).
    public init(grace: UInt64 = 5_000_000_000, retryInterval: UInt64 = 1_000_000_000, maxRetryInterval: UInt64 = 15_000_000_000) {
        self.grace = grace
        self.retryInterval = max(1, retryInterval)
        self.maxRetryInterval = max(self.retryInterval, maxRetryInterval)
    }

    /// The authoritative record for `name`, if published.
    public func record(for name: String) -> NameRecord? { records[name] }

    /// Signs and publishes the next version of `name` (current version + 1, or 1).
    /// - Parameters:
    ///   - name: the name.
    ///   - content: its new content.
    ///   - ttlSeconds: TTL for edges.
    ///   - owner: the owner's key (must be the key of earlier versions).
    ///   - now: the runtime's clock in nanoseconds.
    /// - Returns: the new record (serve it to edges that ask).
    @discardableResult
    public mutating func publish(name: String, content: ContentID, ttlSeconds: UInt32, owner: P256.Signing.PrivateKey, now: UInt64) throws(NameRecordError) -> NameRecord {
        let current = records[name]?.version ?? 0
        guard current < NameRecord.maxVersion else {
            throw NameRecordError(.staleVersion, "'\(name)' is at the highest version a name may have (v\(current)); publish it under a new name")
        }
        let version = current + 1
        let record = try NameRecord.sign(name: name, content: content, version: version, ttlSeconds: ttlSeconds, owner: owner)
        try publish(record, now: now)
        return record
    }

    /// Publishes a record signed elsewhere. Its version must be higher than the current one
    /// and its owner the same as before.
    /// - Throws: ``NameRecordError`` `.badSignature`, `.wrongOwner`, `.staleVersion`.
    /// - Parameter newOwner: the name was handed to the record's key (owned names: a transfer
    ///   checked by the caller), so a record by another key than the current one is taken.
    public mutating func publish(_ record: NameRecord, now: UInt64, newOwner: Bool = false) throws(NameRecordError) {
        guard record.hasValidSignature else {
            throw NameRecordError(.badSignature, "the record for '\(record.name)' does not verify; sign it with the owner's key")
        }
        if let current = records[record.name] {
            guard newOwner || current.ownerKey == record.ownerKey else {
                throw NameRecordError(.wrongOwner, "'\(record.name)' is owned by another key; publish with the key of earlier versions")
            }
            guard record.version > current.version else {
                throw NameRecordError(.staleVersion, "'\(record.name)' is at v\(current.version) already; publish a higher version")
            }
        }
        records[record.name] = record
        _ = queue(try NameInvalidation(name: record.name, version: record.version), now: now)
    }

    /// Relay: an invalidation from this node's upstream. Queues it for every live holder of the
    /// name that was given (or last told) an older version, and notes that they were told.
    /// - Returns: how many invalidations were queued (0 for a duplicate or an older version).
    @discardableResult
    public mutating func handleInvalidation(_ invalidation: NameInvalidation, now: UInt64) -> Int {
        queue(invalidation, now: now)
    }

    /// Queues `invalidation` for the live holders of its name below its version; drops lapsed ones.
    private mutating func queue(_ invalidation: NameInvalidation, now: UInt64) -> Int {
        guard let subscribers = holders[invalidation.name] else { return 0 }
        var live: [Peer: Holding] = [:]
        var queued = 0
        for (peer, holding) in subscribers where holding.end > now {
            live[peer] = holding
            guard holding.version < invalidation.version else { continue }
            live[peer]!.version = invalidation.version
            retries.removeAll { $0.peer == peer && $0.name == invalidation.name }  // superseded
            outbox.append((peer, invalidation))
            invalidationsQueued += 1
            queued += 1
        }
        holders[invalidation.name] = live.isEmpty ? nil : live
        if live.isEmpty { retries.removeAll { $0.name == invalidation.name } }
        return queued
    }

    /// The push of `invalidation` to `peer` did not complete (timed out or failed) while the peer's
    /// connection is still open: it is queued again after a backoff, while the subscription lasts.
    /// Ignored when a newer version was queued for the peer since, or the subscription lapsed.
    public mutating func handlePushFailed(peer: Peer, invalidation: NameInvalidation, now: UInt64) {
        guard let holding = holders[invalidation.name]?[peer], holding.end > now, holding.version == invalidation.version else {
            retries.removeAll { $0.peer == peer && $0.name == invalidation.name && $0.version <= invalidation.version }
            return
        }
        func delay(_ attempts: UInt32) -> UInt64 {
            let shift = UInt64(min(attempts - 1, 20))
            return min(retryInterval << shift, maxRetryInterval)
        }
        if let index = retries.firstIndex(where: { $0.peer == peer && $0.name == invalidation.name }) {
            retries[index].version = invalidation.version
            retries[index].attempts &+= 1
            retries[index].at = now &+ delay(retries[index].attempts)
        } else {
            retries.append(Retry(peer: peer, name: invalidation.name, version: invalidation.version, at: now &+ delay(1), attempts: 1))
        }
    }

    /// The push of `invalidation` to `peer` was taken: no retry is left for it.
    public mutating func handlePushDelivered(peer: Peer, invalidation: NameInvalidation) {
        retries.removeAll { $0.peer == peer && $0.name == invalidation.name && $0.version <= invalidation.version }
    }

    /// When the next retry is due (nanoseconds), or nil when none is waiting.
    public func pollTimeout() -> UInt64? {
        retries.lazy.map(\.at).filter { $0 != .max }.min()
    }

    /// Queues the retries that are due (``pollTransmit()`` then returns them) and forgets those
    /// whose subscription lapsed.
    public mutating func handleTimeout(now: UInt64) {
        var kept: [Retry] = []
        for var retry in retries {
            guard let holding = holders[retry.name]?[retry.peer], holding.end > now, holding.version == retry.version else { continue }
            if retry.at <= now {
                retry.at = .max  // in flight until the runtime reports the outcome
                if let invalidation = try? NameInvalidation(name: retry.name, version: retry.version) {
                    outbox.append((retry.peer, invalidation))
                    retriesQueued += 1
                }
            }
            kept.append(retry)
        }
        retries = kept
    }

    /// Pushes waiting to be retried (or in flight as retries).
    public var pendingRetries: Int { retries.count }

    /// An edge fetched `name` from this origin; it will be told when the name changes.
    /// - Returns: the current record to send it, or nil when the name is unknown.
    public mutating func handleSubscribe(peer: Peer, name: String, now: UInt64) -> NameRecord? {
        guard let record = records[name] else { return nil }
        handleRelaySubscribe(peer: peer, record: record, now: now)
        return record
    }

    /// Relay: this node gave `record` (not its own: one it holds from upstream) to a peer below
    /// it that will be told when the name changes, for the record's TTL (plus `grace`).
    public mutating func handleRelaySubscribe(peer: Peer, record: NameRecord, now: UInt64) {
        let end = now &+ UInt64(record.ttlSeconds) &* 1_000_000_000 &+ grace
        let told = holders[record.name]?[peer]?.version ?? 0
        holders[record.name, default: [:]][peer] = Holding(end: end, version: max(told, record.version))
    }

    /// An edge dropped `name`.
    public mutating func handleUnsubscribe(peer: Peer, name: String) {
        retries.removeAll { $0.peer == peer && $0.name == name }
        holders[name]?[peer] = nil
        if holders[name]?.isEmpty == true { holders[name] = nil }
    }

    /// An edge went away (connection closed, marked down): forget its subscriptions.
    public mutating func handlePeerGone(_ peer: Peer) {
        retries.removeAll { $0.peer == peer }
        for name in Array(holders.keys) {
            holders[name]?[peer] = nil
            if holders[name]?.isEmpty == true { holders[name] = nil }
        }
    }

    /// Edges subscribed to `name` at `now`.
    public func holders(of name: String, now: UInt64) -> [Peer] {
        (holders[name] ?? [:]).filter { $0.value.end > now }.map(\.key)
    }

    /// The next invalidation to send, or nil.
    public mutating func pollTransmit() -> (peer: Peer, invalidation: NameInvalidation)? {
        guard outboxHead < outbox.count else {
            outbox.removeAll(keepingCapacity: true)
            outboxHead = 0
            return nil
        }
        defer { outboxHead += 1 }
        return outbox[outboxHead]
    }
}
