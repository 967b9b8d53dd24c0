import Testing

@testable import STOQTransport

@Suite struct TokenBucketTests {
    /// After running dry the bucket waits for a batch of tokens (not one byte), and the long-run
    /// rate stays exact.
    @Test func aDrainedBucketResumesInBatchesAtTheSameRate() {
        let rate: UInt64 = 20_000_000
        var bucket = TokenBucket(RateLimit(bytesPerSecond: rate), now: 0)
        #expect(bucket.resumeThreshold == 16 * 1024)
        var now: UInt64 = 0
        var sent = 0
        var wakes = 0
        while now < 1_000_000_000 {
            bucket.refill(now: now)
            if bucket.hasTokens {
                while bucket.hasTokens { bucket.spend(1200); sent += 1200 }
            } else {
                let next = bucket.nextAvailable(now: now)
                #expect(next > now)
                now = next
                wakes += 1
            }
        }
        // One second at 20 MB/s plus the initial 2 MB burst, within a datagram or two.
        let expected = Double(rate) + Double(RateLimit(bytesPerSecond: rate).burst)
        #expect(abs(Double(sent) - expected) < 20_000, "sent \(sent), expected \(expected)")
        // About one wake per 16 KiB rather than one per datagram.
        #expect(wakes < Int(rate) / (12 * 1024), "\(wakes) wakes")
        #expect(wakes > Int(rate) / (20 * 1024), "\(wakes) wakes")
    }

    @Test func aSmallBurstStillResumes() {
        var bucket = TokenBucket(RateLimit(bytesPerSecond: 1000, burst: 100), now: 0)
        #expect(bucket.resumeThreshold == 50)
        bucket.spend(150)
        #expect(!bucket.hasTokens)
        let next = bucket.nextAvailable(now: 0)
        bucket.refill(now: next)
        #expect(bucket.hasTokens)
        #expect(bucket.tokens >= 50 - 0.001)
    }
}
