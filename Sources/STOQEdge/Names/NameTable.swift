import Crypto
import STOQContent

/// What accepting a record changed in a ``NameTable``.
public enum NameTableUpdate: Sendable, Equatable {
    /// The name was not mapped (or its mapping had expired or been invalidated).
    case inserted
    /// A newer version replaced the one held.
    case replaced(previous: NameRecord)
    /// The same version again: its TTL restarts.
    case refreshed
}

/// Something a ``NameTable`` tells the runtime.
public enum NameTableEvent: Sendable, Equatable {
    /// The mapping's TTL ran out; the next lookup must fetch a fresh record from the origin.
    case expired(name: String, version: UInt64)
    /// The origin said the name moved on; the mapping was dropped.
    case invalidated(name: String, version: UInt64)
}

/// An edge's table of mutable names, kept coherent with the origin (sans-IO).
///
/// - A record is accepted only if it is signed by the name's registered owner key
///   (``registerOwner(_:for:)``) and its version is at least the one held or announced;
///   a higher version replaces, the same version refreshes the TTL, anything else is refused
///   with a typed ``NameRecordError`` (`.unknownOwner`, `.wrongOwner`, `.badSignature`,
///   `.staleVersion`, `.conflictingVersion`).
/// - A mapping expires `ttlSeconds` after it was accepted (virtual `now` in nanoseconds).
/// - ``handleInvalidation(_:now:)`` from the origin drops a mapping older than the announced
///   version and remembers that version, so a replayed older record is refused as stale.
/// - A mapping is trusted for its TTL only while the subscription that would carry its
///   invalidation lasts. When the edge loses it (its connection to the upstream closed: a
///   partition, a restart), ``handleSubscriptionLost()`` marks every mapping unconfirmed:
///   ``lookup(_:now:)`` stops answering with them, so the next read asks the upstream again, and
///   ``lastKnown(_:now:)`` still offers them for when the upstream cannot be reached.
public struct NameTable: Sendable {
    /// A mapping held by the table.
    public struct Entry: Sendable, Equatable {
        /// The accepted record.
        public var record: NameRecord
        /// When it expires (nanoseconds on the runtime's clock).
        public var expiresAt: UInt64
        /// False once the subscription that would have carried its invalidation was lost.
        public var confirmed = true

        /// Creates an entry.
        public init(record: NameRecord, expiresAt: UInt64, confirmed: Bool = true) {
            self.record = record
            self.expiresAt = expiresAt
            self.confirmed = confirmed
        }
    }

    /// Most names the table tracks (owners, mappings and version floors).
    public let maxNames: Int
    private var owners: [String: [UInt8]] = [:]
    private(set) var entries: [String: Entry] = [:]
    /// The lowest version still acceptable per name (raised by acceptance and invalidation).
    private var floors: [String: UInt64] = [:]
    private var events: [NameTableEvent] = []
    private var eventHead = 0

    /// Creates an empty table.
    /// - Parameter maxNames: bound on tracked names (default 100,000).
    public init(maxNames: Int = 100_000) {
        self.maxNames = maxNames
    }

    /// Registers (or replaces) the key allowed to sign records for `name`.
    /// - Parameters:
    ///   - key: the owner's public key.
    ///   - name: the name it owns.
    public mutating func registerOwner(_ key: P256.Signing.PublicKey, for name: String) throws(NameRecordError) {
        try NameRecord.validate(name: name)
        guard owners[name] != nil || owners.count < maxNames else {
            throw NameRecordError(.tableFull, "this edge tracks \(maxNames) names already; raise maxNames or remove owners")
        }
        owners[name] = Array(key.x963Representation)
    }

    /// The key registered as the owner of `name` (X9.63), or nil.
    public func owner(of name: String) -> [UInt8]? { owners[name] }

    /// Feeds a record received from the origin or a peer.
    /// - Parameters:
    ///   - record: the record.
    ///   - now: the runtime's clock in nanoseconds.
    /// - Returns: what changed.
    /// - Throws: ``NameRecordError`` when the record is refused; the table is unchanged then.
    @discardableResult
    public mutating func handleRecord(_ record: NameRecord, now: UInt64) throws(NameRecordError) -> NameTableUpdate {
        let name = record.name
        guard let owner = owners[name] else {
            throw NameRecordError(.unknownOwner, "no owner key is registered for '\(name)' on this edge; register the publisher's key first")
        }
        guard owner == record.ownerKey else {
            throw NameRecordError(.wrongOwner, "the record for '\(name)' is signed by a key that does not own the name")
        }
        guard record.hasValidSignature else {
            throw NameRecordError(.badSignature, "the signature of '\(name)' v\(record.version) does not verify: forged or damaged record")
        }
        if let floor = floors[name], record.version < floor {
            throw NameRecordError(.staleVersion, "'\(name)' v\(record.version) is older than v\(floor) already seen; fetch the current record from the origin")
        }
        expire(name, now: now)
        let expiresAt = now &+ UInt64(record.ttlSeconds) &* 1_000_000_000
        if let held = entries[name] {
            if record.version == held.record.version {
                guard record.content == held.record.content, record.ttlSeconds == held.record.ttlSeconds else {
                    throw NameRecordError(.conflictingVersion, "'\(name)' v\(record.version) points to \(record.content), but the held v\(held.record.version) points to \(held.record.content); the owner signed two records for one version")
                }
                entries[name]?.expiresAt = expiresAt
                entries[name]?.confirmed = true
                return .refreshed
            }
            entries[name] = Entry(record: record, expiresAt: expiresAt)
            floors[name] = record.version
            return .replaced(previous: held.record)
        }
        guard floors[name] != nil || floors.count < maxNames else {
            throw NameRecordError(.tableFull, "this edge tracks \(maxNames) names already")
        }
        entries[name] = Entry(record: record, expiresAt: expiresAt)
        floors[name] = record.version
        return .inserted
    }

    /// Feeds an invalidation from the origin: drops the mapping if it is older than
    /// `invalidation.version` and refuses older records from now on.
    /// - Returns: whether a mapping was dropped.
    @discardableResult
    public mutating func handleInvalidation(_ invalidation: NameInvalidation, now: UInt64) -> Bool {
        let name = invalidation.name
        if floors[name] != nil || floors.count < maxNames {
            floors[name] = max(floors[name] ?? 0, invalidation.version)
        }
        guard let held = entries[name], held.record.version < invalidation.version else { return false }
        entries[name] = nil
        events.append(.invalidated(name: name, version: held.record.version))
        return true
    }

    /// The current mapping of `name`, or nil when absent, expired or unconfirmed (then fetch
    /// from the origin).
    public func lookup(_ name: String, now: UInt64) -> NameRecord? {
        guard let entry = entries[name], now < entry.expiresAt, entry.confirmed else { return nil }
        return entry.record
    }

    /// When the mapping of `name` expires (nanoseconds on the runtime's clock), if one is held.
    public func expiry(of name: String) -> UInt64? { entries[name]?.expiresAt }

    /// The mapping of `name` within its TTL, confirmed or not: what to serve when the upstream
    /// cannot be reached to revalidate an unconfirmed one.
    public func lastKnown(_ name: String, now: UInt64) -> NameRecord? {
        guard let entry = entries[name], now < entry.expiresAt else { return nil }
        return entry.record
    }

    /// The subscription that would carry invalidations was lost (the connection to the upstream
    /// closed): every mapping must be revalidated before ``lookup(_:now:)`` answers with it again.
    /// - Returns: how many mappings became unconfirmed.
    @discardableResult
    public mutating func handleSubscriptionLost() -> Int {
        var marked = 0
        for name in entries.keys where entries[name]!.confirmed {
            entries[name]!.confirmed = false
            marked += 1
        }
        return marked
    }

    /// Removes expired mappings, emitting `.expired` events.
    public mutating func handleTimeout(now: UInt64) {
        for name in entries.keys.sorted() { expire(name, now: now) }
    }

    /// The next expiry, or nil when the table is empty.
    public func pollTimeout() -> UInt64? {
        entries.values.lazy.map(\.expiresAt).min()
    }

    /// The next event, or nil.
    public mutating func pollEvent() -> NameTableEvent? {
        guard eventHead < events.count else {
            events.removeAll(keepingCapacity: true)
            eventHead = 0
            return nil
        }
        defer { eventHead += 1 }
        return events[eventHead]
    }

    /// What the table holds, for saving: owner keys (X9.63), version floors and mappings.
    public var saved: (owners: [String: [UInt8]], floors: [String: UInt64], entries: [String: Entry]) { (owners, floors, entries) }

    /// Restores saved state into an empty table (an edge that restarts). Owners and floors are
    /// taken as saved (bounded by ``maxNames``); a mapping only if its record is signed by the
    /// name's saved owner and is not below its floor. Restored mappings are unconfirmed: no
    /// subscription carries their invalidations yet, so ``lookup(_:now:)`` asks the upstream first
    /// and ``lastKnown(_:now:)`` serves them when it cannot be reached.
    /// - Returns: how many mappings were restored.
    @discardableResult
    public mutating func restore(owners savedOwners: [String: [UInt8]], floors savedFloors: [String: UInt64], entries savedEntries: [String: Entry]) -> Int {
        for (name, key) in savedOwners.sorted(by: { $0.key < $1.key }) where owners.count < maxNames {
            guard (try? NameRecord.validate(name: name)) != nil, (try? P256.Signing.PublicKey(x963Representation: key)) != nil else { continue }
            owners[name] = key
        }
        for (name, floor) in savedFloors where owners[name] != nil && floors.count < maxNames { floors[name] = floor }
        var restored = 0
        for (name, entry) in savedEntries {
            guard entry.record.name == name, let owner = owners[name], owner == entry.record.ownerKey, entry.record.hasValidSignature,
                  entry.record.version >= (floors[name] ?? 0) else { continue }
            floors[name] = max(floors[name] ?? 0, entry.record.version)
            var e = entry
            e.confirmed = false
            entries[name] = e
            restored += 1
        }
        return restored
    }

    /// Names mapped now (expired ones included until the next timeout).
    public var count: Int { entries.count }

    private mutating func expire(_ name: String, now: UInt64) {
        guard let entry = entries[name], now >= entry.expiresAt else { return }
        entries[name] = nil
        events.append(.expired(name: name, version: entry.record.version))
    }
}
