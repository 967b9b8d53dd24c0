import Testing
@testable import STOQEdge

/// A serving node's uplink in virtual time: whenever the link is free, the runtime asks the
/// throttle for the next grant and the link is busy for `bytes / linkRate`.
struct VirtualUplink {
    var throttle: ServeThrottle<String>
    let linkRate: Double  // bytes per second
    var now: UInt64 = 0
    var served: [String: Int] = [:]
    var finished: [ServeThrottle<String>.ResponseID: UInt64] = [:]

    /// Runs until `until`, injecting `arrivals` (time, connection, priority, bytes) on the way.
    mutating func run(until: UInt64, arrivals: [(time: UInt64, connection: String, priority: ServePriority, bytes: Int)]) -> [ServeThrottle<String>.ResponseID: UInt64] {
        var pending = arrivals.sorted { $0.time < $1.time }[...]
        var enqueuedAt: [ServeThrottle<String>.ResponseID: UInt64] = [:]
        while now < until {
            while let a = pending.first, a.time <= now {
                pending.removeFirst()
                let id = throttle.enqueue(connection: a.connection, priority: a.priority, bytes: a.bytes, now: now)
                enqueuedAt[id] = a.time
            }
            if let grant = throttle.pollGrant(now: now) {
                now += UInt64((Double(grant.bytes) / linkRate * 1e9).rounded(.up))
                served[grant.connection, default: 0] += grant.bytes
                if grant.isLast { finished[grant.response] = now }
            } else {
                var next = pending.first?.time ?? until
                if let wake = throttle.pollTimeout(), wake > now { next = min(next, wake) }
                now = max(now + 1, next)
            }
        }
        return enqueuedAt
    }
}

@Test func interactiveLatencyStaysBoundedBesideABulkClient() {
    let linkRate = 10e6  // 10 MB/s
    var uplink = VirtualUplink(throttle: ServeThrottle(configuration: .init(quantum: 16 * 1024)), linkRate: linkRate)
    var arrivals: [(time: UInt64, connection: String, priority: ServePriority, bytes: Int)] = [(0, "bulk", .bulk, 200_000_000)]
    for i in 0..<100 { arrivals.append((UInt64(i) * 50 * ms + 3 * ms, "web", .interactive, 8 * 1024)) }
    let enqueued = uplink.run(until: 5_000 * ms, arrivals: arrivals)
    var latencies: [UInt64] = []
    for (id, start) in enqueued where id.rawValue > 1 {
        guard let end = uplink.finished[id] else { Issue.record("interactive response \(id) never finished"); continue }
        latencies.append(end - start)
    }
    let worst = latencies.max() ?? .max
    // At most one bulk quantum in flight, then its own 8 KiB: (16 + 8) KiB at 10 MB/s ≈ 2.5 ms.
    let bound = UInt64((Double(16 * 1024 + 8 * 1024) / linkRate * 1e9).rounded(.up)) + 1
    print("interactive beside bulk: \(latencies.count) responses, worst latency \(Double(worst) / 1e6) ms (bound \(Double(bound) / 1e6) ms); bulk got \(uplink.served["bulk"] ?? 0) B")
    #expect(latencies.count == 100)
    #expect(worst <= bound)
    // The bulk client still gets the rest of the link.
    #expect(Double(uplink.served["bulk"] ?? 0) > 0.9 * linkRate * 5)
}

@Test func twoBulkClientsShareFairly() {
    var uplink = VirtualUplink(throttle: ServeThrottle(configuration: .init(quantum: 16 * 1024)), linkRate: 10e6)
    // One client queues many small-ish responses, the other one huge response.
    var arrivals: [(time: UInt64, connection: String, priority: ServePriority, bytes: Int)] = [(0, "a", .bulk, 500_000_000)]
    for _ in 0..<2000 { arrivals.append((0, "b", .bulk, 100_000)) }
    _ = uplink.run(until: 3_000 * ms, arrivals: arrivals)
    let a = Double(uplink.served["a"] ?? 0), b = Double(uplink.served["b"] ?? 0)
    print("two bulk clients: a \(a) B, b \(b) B, share a/(a+b) = \(a / (a + b))")
    #expect(abs(a - b) <= 2 * 16 * 1024, "unfair: \(a) vs \(b)")
}

@Test func tokenBucketLimitsAConnectionAndOthersUseTheRest() {
    let linkRate = 10e6
    var uplink = VirtualUplink(throttle: ServeThrottle(configuration: .init(quantum: 16 * 1024)), linkRate: linkRate)
    uplink.throttle.addConnection("limited", rate: 1_000_000, burst: 64 * 1024, now: 0)
    let arrivals: [(time: UInt64, connection: String, priority: ServePriority, bytes: Int)] = [
        (0, "limited", .interactive, 100_000_000), (0, "free", .bulk, 100_000_000),
    ]
    _ = uplink.run(until: 4_000 * ms, arrivals: arrivals)
    let limited = Double(uplink.served["limited"] ?? 0), free = Double(uplink.served["free"] ?? 0)
    print("token bucket 1 MB/s: limited \(limited) B in 4 s, free \(free) B")
    // At most rate × time + burst (+ one quantum of rounding), and close to it.
    let ceiling: Double = 4e6 + Double(64 * 1024 + 16 * 1024)
    let floor: Double = 4e6 * 0.95
    #expect(limited <= ceiling)
    #expect(limited >= floor)
    // Interactive priority does not let a rate-limited client take the link: the bulk one fills it.
    let freeFloor: Double = (linkRate - 1e6) * 4 * 0.95
    #expect(free >= freeFloor)
    #expect((uplink.throttle.stats(of: "limited")?.throttled ?? 0) > 0)
}

@Test func controlFirstAndCancellation() {
    var throttle = ServeThrottle<Int>(configuration: .init(quantum: 1000, connectionRate: 1000, connectionBurst: 1000))
    let bulk = throttle.enqueue(connection: 1, priority: .bulk, bytes: 5000, now: 0)
    let control = throttle.enqueue(connection: 1, priority: .control, bytes: 100, now: 0)
    let first = throttle.pollGrant(now: 0)
    #expect(first == .init(response: control, connection: 1, priority: .control, bytes: 100, isLast: true))
    #expect(throttle.pollGrant(now: 0)?.response == bulk)  // spends the 1000-byte burst
    #expect(throttle.pollGrant(now: 0) == nil)              // out of tokens
    #expect(throttle.pollTimeout() == 1_000_000_000)        // 1000 bytes at 1000 B/s
    let control2 = throttle.enqueue(connection: 1, priority: .control, bytes: 10, now: 1)
    #expect(throttle.pollGrant(now: 1)?.response == control2, "control is never rate limited")
    #expect(throttle.pollGrant(now: 1_000_000_000)?.bytes == 1000)
    throttle.cancel(bulk)
    #expect(throttle.pendingBytes(on: 1) == 0)
    #expect(throttle.pollGrant(now: 5_000_000_000) == nil)
    #expect(throttle.pollTimeout() == nil)
    _ = throttle.enqueue(connection: 2, priority: .bulk, bytes: 10, now: 0)
    #expect(throttle.removeConnection(2).count == 1)
}
