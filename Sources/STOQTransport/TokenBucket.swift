/// A token bucket over a virtual clock (nanoseconds). Sans-IO: the caller passes `now`.
struct TokenBucket {
    let rate: Double
    let burst: Double
    private(set) var tokens: Double
    private var last: UInt64

    init(_ limit: RateLimit, now: UInt64) {
        rate = Double(limit.bytesPerSecond)
        burst = Double(limit.burst)
        tokens = burst
        last = now
    }

    mutating func refill(now: UInt64) {
        guard now > last else { return }
        tokens = min(burst, tokens + rate * Double(now - last) / 1e9)
        last = now
    }

    var hasTokens: Bool { tokens > 0 }

    mutating func spend(_ bytes: Int) { tokens -= Double(bytes) }

    /// When the bucket next holds tokens.
    func nextAvailable(now: UInt64) -> UInt64 {
        if tokens > 0 { return now }
        let wait = (1 - tokens) / rate * 1e9
        return now &+ UInt64(wait.rounded(.up))
    }
}
