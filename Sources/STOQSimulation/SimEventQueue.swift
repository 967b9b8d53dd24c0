/// One scheduled event. 32 bytes, stored by value in the heap's flat array.
struct SimEvent {
    enum Kind: UInt8 {
        case deliver
        case timer
        case fault
        case action
    }

    var time: UInt64
    /// Tie-breaker: events at the same time run in the order they were scheduled.
    var sequence: UInt64
    var target: UInt32
    var source: UInt32
    /// Index into the message slab, the fault list or the action list.
    var payload: UInt32
    var kind: Kind

    @inline(__always)
    func runsBefore(_ other: SimEvent) -> Bool {
        time != other.time ? time < other.time : sequence < other.sequence
    }
}

/// A binary min-heap of events over a flat array (the simulator's priority queue).
struct SimEventQueue {
    private(set) var storage: [SimEvent] = []

    var isEmpty: Bool { storage.isEmpty }
    var count: Int { storage.count }
    var first: SimEvent? { storage.first }

    init() { storage.reserveCapacity(1024) }

    mutating func push(_ event: SimEvent) {
        storage.append(event)
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) >> 1
            if storage[child].runsBefore(storage[parent]) {
                storage.swapAt(child, parent)
                child = parent
            } else {
                break
            }
        }
    }

    mutating func pop() -> SimEvent? {
        guard let top = storage.first else { return nil }
        let last = storage.removeLast()
        if storage.isEmpty { return top }
        storage[0] = last
        var parent = 0
        let count = storage.count
        while true {
            let left = 2 * parent + 1
            if left >= count { break }
            var best = left
            let right = left + 1
            if right < count && storage[right].runsBefore(storage[left]) { best = right }
            if storage[best].runsBefore(storage[parent]) {
                storage.swapAt(best, parent)
                parent = best
            } else {
                break
            }
        }
        return top
    }
}
