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
        guard lru.canHold(size, capacity: capacity) else {
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
        defer { refresh() }
        return lru.remove(id: id)
    }

    /// Pins a chunk, inserting it if absent.
    public mutating func pin(_ id: ChunkID, size: Int) -> CacheAdmission {
        if lru.pinIfResident(id) {
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
        defer { refresh() }
        return lru.unpin(id, to: Self.main)
    }

    /// Whether the chunk is resident.
    public func contains(_ id: ChunkID) -> Bool { lru.contains(id) }

    /// Whether the chunk is pinned.
    public func isPinned(_ id: ChunkID) -> Bool { lru.isPinned(id) }

    private mutating func refresh() { lru.record(into: &stats) }
}
