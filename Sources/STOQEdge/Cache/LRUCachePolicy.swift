import STOQContent

/// Plain byte-bounded least-recently-used policy: admits everything that fits and evicts the
/// least recently used unpinned chunks. The baseline ``TinyLFUCachePolicy`` is measured against.
public struct LRUCachePolicy: CachePolicy {
    /// The byte bound.
    public let capacity: Int
    /// Counters.
    public private(set) var stats = CacheStats()

    private static let main: UInt8 = 1
    private var lru = SegmentedLRU(segments: 2)

    /// Creates an empty cache holding at most `capacity` bytes.
    /// - Parameter capacity: the byte bound (must be positive).
    public init(capacity: Int) {
        precondition(capacity > 0, "LRUCachePolicy: capacity must be positive")
        self.capacity = capacity
    }

    /// Records a request; a hit makes the chunk the most recently used.
    public mutating func recordAccess(_ id: ChunkID, size: Int) -> CacheAccess {
        guard let slot = lru.slot(of: id) else {
            stats.misses += 1
            return .miss
        }
        stats.hits += 1
        if lru.segment(of: slot) != SegmentedLRU.pinned { lru.moveToHead(slot, segment: Self.main) }
        return .hit
    }

    /// Admits the chunk if it fits once every unpinned chunk is considered for eviction.
    public mutating func admit(_ id: ChunkID, size: Int) -> CacheAdmission {
        if lru.slot(of: id) != nil { return CacheAdmission(admitted: true, evicted: []) }
        guard size >= 0, size <= capacity - lru.bytes[Int(SegmentedLRU.pinned)] else {
            stats.rejections += 1
            return CacheAdmission(admitted: false, evicted: [])
        }
        var evicted: [ChunkID] = []
        while lru.totalBytes + size > capacity, let victim = lru.tail(Self.main) {
            evicted.append(lru.id(of: victim))
            stats.evictions += 1
            stats.evictedBytes += UInt64(lru.size(of: victim))
            lru.remove(victim)
        }
        lru.insert(id, size: size, segment: Self.main)
        stats.admissions += 1
        refresh()
        return CacheAdmission(admitted: true, evicted: evicted)
    }

    /// Forgets a chunk.
    @discardableResult
    public mutating func remove(_ id: ChunkID) -> Bool {
        guard let slot = lru.slot(of: id) else { return false }
        lru.remove(slot)
        refresh()
        return true
    }

    /// Pins a chunk, inserting it if absent.
    public mutating func pin(_ id: ChunkID, size: Int) -> CacheAdmission {
        if let slot = lru.slot(of: id) {
            if lru.segment(of: slot) != SegmentedLRU.pinned { lru.moveToHead(slot, segment: SegmentedLRU.pinned) }
            refresh()
            return CacheAdmission(admitted: true, evicted: [])
        }
        let outcome = admit(id, size: size)
        if outcome.admitted, let slot = lru.slot(of: id) { lru.moveToHead(slot, segment: SegmentedLRU.pinned) }
        refresh()
        return outcome
    }

    /// Unpins a chunk; it becomes the most recently used.
    @discardableResult
    public mutating func unpin(_ id: ChunkID) -> Bool {
        guard let slot = lru.slot(of: id), lru.segment(of: slot) == SegmentedLRU.pinned else { return false }
        lru.moveToHead(slot, segment: Self.main)
        refresh()
        return true
    }

    /// Whether the chunk is resident.
    public func contains(_ id: ChunkID) -> Bool { lru.slot(of: id) != nil }

    /// Whether the chunk is pinned.
    public func isPinned(_ id: ChunkID) -> Bool {
        guard let slot = lru.slot(of: id) else { return false }
        return lru.segment(of: slot) == SegmentedLRU.pinned
    }

    private mutating func refresh() {
        stats.bytes = lru.totalBytes
        stats.pinnedBytes = lru.bytes[Int(SegmentedLRU.pinned)]
        stats.count = lru.totalCount
    }
}
