import Foundation
import STOQEdge

/// Kademlia parameters. Times are milliseconds, TTLs seconds.
public struct DHTConfiguration: Sendable, Hashable {
    /// Bucket size and the number of closest nodes a lookup converges on.
    public var k = 20
    /// Requests in flight per lookup.
    public var alpha = 3
    /// How many of the closest nodes store a record or provider entry.
    public var replication = 3
    /// How many replicas a value lookup hears from before it ends (it returns the best value
    /// among them: for names, the highest version), unless fewer hold one. 1: the first hit.
    public var valueQuorum = 3
    /// A request not answered within this time fails (the node may have left).
    public var requestTimeout: UInt64 = 1_000
    /// Lifetime of a stored value.
    public var recordTTL: UInt32 = 24 * 3600
    /// How often a holder re-stores its records on the current closest nodes.
    public var republishInterval: UInt64 = 3600 * 1000
    /// Lifetime of a provider entry.
    public var providerTTL: UInt32 = 24 * 3600
    /// How often a provider re-announces itself.
    public var providerRepublishInterval: UInt64 = 12 * 3600 * 1000
    /// A bucket not looked into for this long is refreshed with a random-id lookup.
    public var bucketRefreshInterval: UInt64 = 3600 * 1000
    /// How often the maintenance timer (expiry, republish, refresh) runs.
    public var maintenanceInterval: UInt64 = 60 * 1000
    /// Most values a node stores (further stores are refused).
    public var maxStoredRecords = 65_536
    /// Most provider keys a node tracks.
    public var maxProviderKeys = 65_536
    /// Most providers kept per key.
    public var maxProvidersPerKey = 32
    /// Replacement cache size per bucket.
    public var replacementCacheSize = 8
    /// Failed requests before a contact is evicted.
    public var maxFailures: UInt8 = 2
    /// A full bucket probes its least-recently-seen entry only if it has been silent this long.
    public var probeAfter: UInt64 = 60 * 1000

    /// The defaults: k = 20, α = 3, replication 3, 1 s request timeout, 24 h TTLs, 1 h republish.
    public init() {}
}

/// Decides which values a node accepts for storage (e.g. only valid signed name records).
public protocol DHTRecordValidator: Sendable {
    /// True if `value` may be stored under `key`.
    func validate(key: NexusID, value: [UInt8], now: UInt64) -> Bool
    /// True if `incoming` should replace the held `existing` value.
    func shouldReplace(existing: [UInt8], with incoming: [UInt8]) -> Bool
}

/// Accepts any value under any key; a newer store replaces the old one.
public struct AcceptAllValidator: DHTRecordValidator {
    /// Creates the validator.
    public init() {}
    /// Always true.
    public func validate(key: NexusID, value: [UInt8], now: UInt64) -> Bool { true }
    /// Always true.
    public func shouldReplace(existing: [UInt8], with incoming: [UInt8]) -> Bool { true }
}

/// Accepts only signed name records stored under their name's key; a higher version wins and a
/// record for a name held under another owner key is refused while the held one is valid.
public struct NameRecordValidator: DHTRecordValidator {
    /// Owned names: who owns which name on this node (first key seen, or bound in the CT log),
    /// kept across restarts and across the records' expiry. Nil: only the held record binds.
    public let ownership: STOQEdge.NameOwnershipStore?
    /// Creates the validator.
    public init(ownership: STOQEdge.NameOwnershipStore? = nil) { self.ownership = ownership }
    /// Decodes, verifies (signature, expiry) and checks the key; with ``ownership``, refuses a
    /// record signed by another key than the name's owner and binds an unowned name to its signer.
    public func validate(key: NexusID, value: [UInt8], now: UInt64) -> Bool {
        guard let r = try? NameRecord.decode(value), r.name.key == key, (try? r.verify(now: now)) != nil else { return false }
        if let ownership {
            do { try ownership.admit(r.name.text, key: r.ownerKey, now: now) } catch { return false }
        }
        return true
    }
    /// True for a strictly higher version by the same owner.
    public func shouldReplace(existing: [UInt8], with incoming: [UInt8]) -> Bool {
        guard let a = try? NameRecord.decode(existing), let b = try? NameRecord.decode(incoming) else { return false }
        if a.ownerKey != b.ownerKey, let ownership {
            // The name was handed over (a transfer or recovery in the CT log): the new owner's
            // record replaces the old owner's.
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            return ownership.owner(of: b.name.text, now: now)?.key == b.ownerKey
        }
        return a.ownerKey == b.ownerKey && b.version > a.version
    }
}
