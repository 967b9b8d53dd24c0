import STOQContent

/// W-TinyLFU: a small admission window (LRU) in front of a segmented LRU main area
/// (probation + protected), with a ``FrequencySketch`` deciding whether a chunk leaving the
/// window may displace the main area's eviction victims.
///
/// New chunks enter the window, so bursts of new content still hit. A chunk pushed out of the
/// window is a candidate; when the cache is over its byte bound, the candidate is kept only if
/// its estimated frequency is strictly higher than that of every victim it would displace
/// (taken from the probation tail, then the protected tail); otherwise the candidate goes.
/// A hit in probation promotes to protected; protected overflow demotes back to probation.
/// Sizes are weights: the bound is in bytes, and a large candidate may displace several victims.
public struct TinyLFUCachePolicy: CachePolicy {
    /// The byte bound.
    public let capacity: Int
    /// Bytes of the admission window.
    public let windowCapacity: Int
    /// Bytes of the protected segment of the main area.
    public let protectedCapacity: Int
    /// Counters.
    public private(set) var stats = CacheStats()
    /// The frequency filter (visible for tests and diagnostics).
    public private(set) var sketch: FrequencySketch

    private static let window: UInt8 = 1
    private static let probation: UInt8 = 2
    private static let protected: UInt8 = 3
    private var lru = SegmentedLRU(segments: 4)
    private let seed: UInt64

    /// Creates an empty cache.
    /// - Parameters:
    ///   - capacity: the byte bound (must be positive).
    ///   - averageEntrySize: the expected chunk size, used to size the sketch (default 64 KiB).
    ///   - windowPercent: share of the capacity for the admission window (default 1 %).
    ///   - protectedPercent: share of the main area for the protected segment (default 80 %).
    ///   - seed: mixes the sketch's hashes, so the ids an adversary would need to collide differ per node.
    public init(capacity: Int, averageEntrySize: Int = 64 * 1024, windowPercent: Double = 1, protectedPercent: Double = 80, seed: UInt64 = 0x5354_4F51) {
        precondition(capacity > 0, "TinyLFUCachePolicy: capacity must be positive")
        precondition(averageEntrySize > 0, "TinyLFUCachePolicy: averageEntrySize must be positive")
        precondition((0...100).contains(windowPercent) && (0...100).contains(protectedPercent), "TinyLFUCachePolicy: percentages are 0 ... 100")
        self.capacity = capacity
        self.windowCapacity = max(1, Int(Double(capacity) * windowPercent / 100))
        self.protectedCapacity = Int(Double(capacity - windowCapacity) * protectedPercent / 100)
        self.sketch = FrequencySketch(expectedEntries: max(16, capacity / averageEntrySize))
        self.seed = seed
    }

    /// Records a request: counts it in the sketch and, on a hit, refreshes the chunk's segment.
    public mutating func recordAccess(_ id: ChunkID, size: Int) -> CacheAccess {
        sketch.increment(mixedHash(id, seed: seed))
        guard let slot = lru.slot(of: id) else {
            stats.misses += 1
            return .miss
        }
        stats.hits += 1
        switch lru.segment(of: slot) {
        case Self.window:
            lru.moveToHead(slot, segment: Self.window)
        case Self.probation:
            lru.moveToHead(slot, segment: Self.protected)
            while lru.bytes[Int(Self.protected)] > protectedCapacity, let demoted = lru.tail(Self.protected), demoted != slot {
                lru.moveToHead(demoted, segment: Self.probation)
            }
        case Self.protected:
            lru.moveToHead(slot, segment: Self.protected)
        default:
            break  // pinned
        }
        return .hit
    }

    /// Offers a chunk: it enters the window; what leaves the window competes with the main
    /// area's victims by frequency.
    public mutating func admit(_ id: ChunkID, size: Int) -> CacheAdmission {
        if lru.slot(of: id) != nil { return CacheAdmission(admitted: true, evicted: []) }
        guard lru.canHold(size, capacity: capacity) else {
            stats.rejections += 1
            return CacheAdmission(admitted: false, evicted: [])
        }
        let newSlot = lru.insert(id, size: size, segment: Self.window)
        var candidates: [Int32] = []
        while lru.bytes[Int(Self.window)] > windowCapacity, let c = lru.tail(Self.window) {
            lru.moveToHead(c, segment: Self.probation)
            candidates.append(c)
        }
        var evicted: [ChunkID] = []
        var admitted = true
        var next = 0
        while lru.totalBytes > capacity {
            guard next < candidates.count else {
                // No candidate left to judge: plain LRU order over what remains.
                guard let victim = lru.tail(Self.probation) ?? lru.tail(Self.protected) ?? lru.tail(Self.window) else { break }
                if victim == newSlot { admitted = false; lru.remove(victim) } else { evicted.append(lru.id(of: victim)); evict(victim) }
                continue
            }
            let candidate = candidates[next]
            next += 1
            let excess = min(lru.totalBytes - capacity, lru.size(of: candidate))
            let candidateFrequency = sketch.frequency(mixedHash(lru.id(of: candidate), seed: seed))
            let skip = Set(candidates[next...])
            var victims: [Int32] = []
            var freed = 0
            var strongest = -1
            var cursor = lru.tail(Self.probation)
            var segment = Self.probation
            while freed < excess {
                guard let slot = cursor else {
                    if segment == Self.probation {
                        segment = Self.protected
                        cursor = lru.tail(Self.protected)
                        continue
                    }
                    break
                }
                cursor = lru.newer(than: slot)
                if slot == candidate || skip.contains(slot) { continue }
                victims.append(slot)
                freed += lru.size(of: slot)
                strongest = max(strongest, sketch.frequency(mixedHash(lru.id(of: slot), seed: seed)))
                if strongest >= candidateFrequency { break }
            }
            if freed >= excess, candidateFrequency > strongest {
                for victim in victims {
                    evicted.append(lru.id(of: victim))
                    evict(victim)
                }
            } else {
                if candidate == newSlot { admitted = false; lru.remove(candidate) } else { evicted.append(lru.id(of: candidate)); evict(candidate) }
            }
        }
        if admitted { stats.admissions += 1 } else { stats.rejections += 1 }
        refresh()
        return CacheAdmission(admitted: admitted, evicted: evicted)
    }

    /// Forgets a chunk.
    @discardableResult
    public mutating func remove(_ id: ChunkID) -> Bool {
        defer { refresh() }
        return lru.remove(id: id)
    }

    /// Pins a chunk, inserting it if absent (bypassing the frequency filter; unpinned chunks are
    /// evicted in LRU order, probation first, to make room).
    public mutating func pin(_ id: ChunkID, size: Int) -> CacheAdmission {
        if lru.pinIfResident(id) {
            refresh()
            return CacheAdmission(admitted: true, evicted: [])
        }
        guard lru.canHold(size, capacity: capacity) else {
            stats.rejections += 1
            return CacheAdmission(admitted: false, evicted: [])
        }
        var evicted: [ChunkID] = []
        while lru.totalBytes + size > capacity, let victim = lru.tail(Self.probation) ?? lru.tail(Self.window) ?? lru.tail(Self.protected) {
            evicted.append(lru.id(of: victim))
            evict(victim)
        }
        lru.insert(id, size: size, segment: SegmentedLRU.pinned)
        stats.admissions += 1
        refresh()
        return CacheAdmission(admitted: true, evicted: evicted)
    }

    /// Unpins a chunk; it goes to the head of probation.
    @discardableResult
    public mutating func unpin(_ id: ChunkID) -> Bool {
        defer { refresh() }
        return lru.unpin(id, to: Self.probation)
    }

    /// Whether the chunk is resident.
    public func contains(_ id: ChunkID) -> Bool { lru.contains(id) }

    /// Whether the chunk is pinned.
    public func isPinned(_ id: ChunkID) -> Bool { lru.isPinned(id) }

    private mutating func evict(_ slot: Int32) {
        stats.evictions += 1
        stats.evictedBytes += UInt64(lru.size(of: slot))
        lru.remove(slot)
    }

    private mutating func refresh() { lru.record(into: &stats) }
}
