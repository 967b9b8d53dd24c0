import STOQContent

/// Resident entries of a cache policy, each in one of a few recency lists ("segments").
///
/// Entries live in one flat array linked by indices (no object per entry); a dictionary
/// maps ids to slots. Each segment is a doubly linked list, head = most recently used,
/// tail = least recently used, with its byte and entry totals. Segment 0 holds pinned
/// entries and is never chosen for eviction by the policies.
struct SegmentedLRU: Sendable {
    struct Entry: Sendable {
        var id: ChunkID
        var size: Int
        var prev: Int32
        var next: Int32
        var segment: UInt8
    }

    static let none: Int32 = -1
    static let pinned: UInt8 = 0

    private(set) var entries: [Entry] = []
    private var freeSlots: [Int32] = []
    private(set) var slots: [ChunkID: Int32] = [:]
    private var heads: [Int32]
    private var tails: [Int32]
    /// Bytes per segment.
    private(set) var bytes: [Int]
    /// Entries per segment.
    private(set) var counts: [Int]

    init(segments: Int) {
        heads = Array(repeating: Self.none, count: segments)
        tails = Array(repeating: Self.none, count: segments)
        bytes = Array(repeating: 0, count: segments)
        counts = Array(repeating: 0, count: segments)
    }

    var totalBytes: Int { bytes.reduce(0, +) }
    var totalCount: Int { slots.count }

    func slot(of id: ChunkID) -> Int32? { slots[id] }
    func segment(of slot: Int32) -> UInt8 { entries[Int(slot)].segment }
    func size(of slot: Int32) -> Int { entries[Int(slot)].size }
    func id(of slot: Int32) -> ChunkID { entries[Int(slot)].id }

    /// The least recently used entry of a segment.
    func tail(_ segment: UInt8) -> Int32? {
        let t = tails[Int(segment)]
        return t == Self.none ? nil : t
    }

    /// The entry after `slot` towards the head (more recently used), if any.
    func newer(than slot: Int32) -> Int32? {
        let p = entries[Int(slot)].prev
        return p == Self.none ? nil : p
    }

    /// Inserts a new entry at the head of `segment`.
    @discardableResult
    mutating func insert(_ id: ChunkID, size: Int, segment: UInt8) -> Int32 {
        precondition(slots[id] == nil, "SegmentedLRU: \(id.short) is already resident")
        let entry = Entry(id: id, size: size, prev: Self.none, next: Self.none, segment: segment)
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            entries[Int(free)] = entry
        } else {
            slot = Int32(entries.count)
            entries.append(entry)
        }
        slots[id] = slot
        link(slot, segment: segment)
        return slot
    }

    /// Removes an entry entirely.
    mutating func remove(_ slot: Int32) {
        unlink(slot)
        slots[entries[Int(slot)].id] = nil
        freeSlots.append(slot)
    }

    /// Moves an entry to the head of `segment` (its own or another).
    mutating func moveToHead(_ slot: Int32, segment: UInt8) {
        unlink(slot)
        link(slot, segment: segment)
    }

    private mutating func link(_ slot: Int32, segment: UInt8) {
        let s = Int(segment)
        let oldHead = heads[s]
        entries[Int(slot)].segment = segment
        entries[Int(slot)].prev = Self.none
        entries[Int(slot)].next = oldHead
        if oldHead != Self.none { entries[Int(oldHead)].prev = slot } else { tails[s] = slot }
        heads[s] = slot
        bytes[s] += entries[Int(slot)].size
        counts[s] += 1
    }

    private mutating func unlink(_ slot: Int32) {
        let e = entries[Int(slot)]
        let s = Int(e.segment)
        if e.prev != Self.none { entries[Int(e.prev)].next = e.next } else { heads[s] = e.next }
        if e.next != Self.none { entries[Int(e.next)].prev = e.prev } else { tails[s] = e.prev }
        bytes[s] -= e.size
        counts[s] -= 1
    }
}

/// What every policy built on a ``SegmentedLRU`` does the same way: residency, pinning of a
/// resident chunk, removal and the byte counters. The policies differ only in admission,
/// eviction order and where a hit or an unpinned chunk goes.
extension SegmentedLRU {
    /// Whether `id` is resident.
    func contains(_ id: ChunkID) -> Bool { slot(of: id) != nil }

    /// Whether `id` is resident and pinned.
    func isPinned(_ id: ChunkID) -> Bool {
        guard let slot = slot(of: id) else { return false }
        return segment(of: slot) == Self.pinned
    }

    /// Bytes held by pinned chunks.
    var pinnedBytes: Int { bytes[Int(Self.pinned)] }

    /// Whether a chunk of `size` bytes could ever fit beside the pinned ones.
    func canHold(_ size: Int, capacity: Int) -> Bool { size >= 0 && size <= capacity - pinnedBytes }

    /// Removes `id`; false when it was not resident.
    mutating func remove(id: ChunkID) -> Bool {
        guard let slot = slot(of: id) else { return false }
        remove(slot)
        return true
    }

    /// Pins `id` if it is resident (moving it to the pinned segment); false when it is not.
    mutating func pinIfResident(_ id: ChunkID) -> Bool {
        guard let slot = slot(of: id) else { return false }
        if segment(of: slot) != Self.pinned { moveToHead(slot, segment: Self.pinned) }
        return true
    }

    /// Moves a pinned `id` to the head of `segment`; false when it is not resident and pinned.
    mutating func unpin(_ id: ChunkID, to segment: UInt8) -> Bool {
        guard let slot = slot(of: id), self.segment(of: slot) == Self.pinned else { return false }
        moveToHead(slot, segment: segment)
        return true
    }

    /// Copies the byte and entry counters into `stats`.
    func record(into stats: inout CacheStats) {
        stats.bytes = totalBytes
        stats.pinnedBytes = pinnedBytes
        stats.count = totalCount
    }
}
