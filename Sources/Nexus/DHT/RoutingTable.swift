/// A Kademlia routing table: 256 k-buckets by XOR prefix length, each with a bounded
/// replacement cache.
///
/// Memory is bounded by `256 × (k + replacementCacheSize)` contacts whatever a peer sends: a node
/// flooding the table with fresh ids only churns replacement caches. Long-lived nodes are preferred:
/// a full bucket never evicts a live entry for a newcomer; it asks the caller to ping the
/// least-recently-seen entry and evicts it only after ``maxFailures`` failed requests, promoting
/// the most recently seen replacement.
public struct RoutingTable: Sendable {
    /// One known node.
    public struct Contact: Sendable, Hashable {
        /// The node.
        public var record: NodeRecord
        /// When it was last heard from (ms).
        public var lastSeen: UInt64
        /// Consecutive failed requests.
        public var failures: UInt8
    }

    struct Bucket: Sendable {
        /// Least recently seen first.
        var entries: [Contact] = []
        /// Most recently seen last.
        var replacements: [Contact] = []
        /// True while a ping to the head is outstanding.
        var probing = false
    }

    /// This node's id.
    public let selfID: NexusID
    /// Bucket size.
    public let k: Int
    /// Replacement cache size per bucket.
    public let replacementCacheSize: Int
    /// Failures before a contact is evicted.
    public let maxFailures: UInt8
    /// A full bucket's least-recently-seen entry is probed only if silent for this long (ms), so
    /// strangers cannot set off ping storms against nodes that were just heard from.
    public let probeAfter: UInt64
    private var buckets: [Bucket]
    /// Number of contacts in buckets (not counting replacement caches).
    public private(set) var count = 0

    /// Creates an empty table.
    public init(selfID: NexusID, k: Int = 20, replacementCacheSize: Int = 8, maxFailures: UInt8 = 2, probeAfter: UInt64 = 0) {
        self.selfID = selfID; self.k = k; self.replacementCacheSize = replacementCacheSize; self.maxFailures = maxFailures
        self.probeAfter = probeAfter
        buckets = Array(repeating: Bucket(), count: 256)
    }

    /// The bucket index of `id`: the length of the common prefix with this node (0…255), or nil for self.
    @inline(__always)
    public func bucketIndex(of id: NexusID) -> Int? {
        let d = (selfID ^ id).leadingZeroBitCount
        return d == 256 ? nil : d
    }

    /// What the caller should do after ``seen(_:now:)``.
    public enum Insertion: Equatable, Sendable {
        /// The contact is in a bucket (new or refreshed).
        case inserted
        /// The bucket is full; the contact waits in the replacement cache.
        case cached
        /// Like ``cached``, and the caller should ping this least-recently-seen entry.
        case cachedProbe(NodeRecord)
        /// Own id; ignored.
        case ignored
    }

    /// Records that a node was heard from.
    @discardableResult
    public mutating func seen(_ record: NodeRecord, now: UInt64) -> Insertion {
        guard let b = bucketIndex(of: record.id) else { return .ignored }
        if let i = buckets[b].entries.firstIndex(where: { $0.record.id == record.id }) {
            var c = buckets[b].entries.remove(at: i)
            c.record = record; c.lastSeen = now; c.failures = 0
            buckets[b].entries.append(c)
            if i == 0 { buckets[b].probing = false }
            return .inserted
        }
        let contact = Contact(record: record, lastSeen: now, failures: 0)
        if buckets[b].entries.count < k {
            buckets[b].entries.append(contact)
            count += 1
            return .inserted
        }
        if let j = buckets[b].replacements.firstIndex(where: { $0.record.id == record.id }) {
            buckets[b].replacements.remove(at: j)
        } else if buckets[b].replacements.count >= replacementCacheSize {
            buckets[b].replacements.removeFirst()
        }
        buckets[b].replacements.append(contact)
        if !buckets[b].probing, now >= buckets[b].entries[0].lastSeen &+ probeAfter {
            buckets[b].probing = true
            return .cachedProbe(buckets[b].entries[0].record)
        }
        return .cached
    }

    /// Records a failed request to `id`; evicts it after ``maxFailures`` and promotes a replacement.
    /// - Returns: true if the contact was evicted.
    @discardableResult
    public mutating func failed(_ id: NexusID) -> Bool {
        guard let b = bucketIndex(of: id), let i = buckets[b].entries.firstIndex(where: { $0.record.id == id }) else {
            if let b = bucketIndex(of: id) { buckets[b].replacements.removeAll { $0.record.id == id } }
            return false
        }
        if i == 0 { buckets[b].probing = false }
        buckets[b].entries[i].failures &+= 1
        // A full bucket with waiting replacements evicts at once; otherwise tolerate transient loss.
        guard buckets[b].entries[i].failures >= maxFailures || !buckets[b].replacements.isEmpty else { return false }
        buckets[b].entries.remove(at: i)
        count -= 1
        if let r = buckets[b].replacements.popLast() {
            buckets[b].entries.append(r)
            count += 1
        }
        return true
    }

    /// Removes a node (e.g. it announced it is leaving).
    public mutating func remove(_ id: NexusID) {
        guard let b = bucketIndex(of: id) else { return }
        if let i = buckets[b].entries.firstIndex(where: { $0.record.id == id }) {
            buckets[b].entries.remove(at: i); count -= 1
            if let r = buckets[b].replacements.popLast() { buckets[b].entries.append(r); count += 1 }
        }
        buckets[b].replacements.removeAll { $0.record.id == id }
    }

    /// True if `id` is in a bucket.
    public func contains(_ id: NexusID) -> Bool {
        guard let b = bucketIndex(of: id) else { return false }
        return buckets[b].entries.contains { $0.record.id == id }
    }

    /// Contacts in bucket `index`, least recently seen first.
    public func bucket(_ index: Int) -> [Contact] { buckets[index].entries }

    /// Entries waiting in bucket `index`'s replacement cache.
    public func replacements(_ index: Int) -> [Contact] { buckets[index].replacements }

    /// Total contacts held, including replacement caches (the table's memory bound).
    public var storedContacts: Int { buckets.reduce(0) { $0 + $1.entries.count + $1.replacements.count } }

    /// The number of non-empty buckets.
    public var nonEmptyBuckets: Int { buckets.reduce(0) { $0 + ($1.entries.isEmpty ? 0 : 1) } }

    /// The `count` known nodes closest to `target` by XOR distance, closest first.
    ///
    /// Visits buckets in distance order (the target's own bucket, then the deeper buckets, then the
    /// shallower ones) so it touches only about `count` contacts, not the whole table.
    public func closest(to target: NexusID, count want: Int) -> [NodeRecord] {
        var out: [NodeRecord] = []
        out.reserveCapacity(want)
        let c = bucketIndex(of: target) ?? 255
        func take(_ contacts: [Contact]) {
            let sorted = contacts.sorted { target.isCloser($0.record.id, than: $1.record.id) }
            for s in sorted { if out.count < want { out.append(s.record) } else { return } }
        }
        take(buckets[c].entries)
        if out.count < want, c < 255 {
            var deeper: [Contact] = []
            for b in (c + 1)..<256 where !buckets[b].entries.isEmpty { deeper.append(contentsOf: buckets[b].entries) }
            take(deeper)
        }
        var b = c - 1
        while out.count < want && b >= 0 { take(buckets[b].entries); b -= 1 }
        return out
    }

    /// All contacts in buckets.
    public var allContacts: [Contact] { buckets.flatMap { $0.entries } }
}
