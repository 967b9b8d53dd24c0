import Testing
@testable import STOQEdge

/// An edge whose upstream fills all fail stops claiming it can fill (issue 11, the kill -9 hang).
struct UpstreamBreakerTests {
    let s: UInt64 = 1_000_000_000

    @Test func aFailedUpstreamIsLeftAloneThenProbedByOneFill() {
        var breaker = UpstreamBreaker(upstream: ["origin"])
        let tried = breaker.shouldTry("origin", now: 0)
        #expect(breaker.canFill(now: 0) && tried)
        breaker.handleFillFailed("origin", now: 1 * s)
        #expect(!breaker.canFill(now: 2 * s))
        let early = breaker.shouldTry("origin", now: 2 * s)
        #expect(!early)
        // After retryAfter one fill tries it; the others do not until it succeeds.
        let retry = 1 * s + breaker.configuration.retryAfter
        #expect(breaker.canFill(now: retry))
        let probe = breaker.shouldTry("origin", now: retry)
        let second = breaker.shouldTry("origin", now: retry)
        #expect(probe && !second)
        breaker.handleFillSucceeded("origin", now: retry + 1)
        let a = breaker.shouldTry("origin", now: retry + 2), b = breaker.shouldTry("origin", now: retry + 2)
        #expect(a && b)
        #expect(breaker.consecutiveFailures(of: "origin") == 0)
    }

    @Test func aFailedProbeFillOpensItAgain() {
        var breaker = UpstreamBreaker(upstream: ["origin"])
        breaker.handleFillFailed("origin", now: 0)
        let retry = breaker.configuration.retryAfter
        let probe = breaker.shouldTry("origin", now: retry)
        #expect(probe)
        breaker.handleFillFailed("origin", now: retry + 1)
        #expect(!breaker.canFill(now: retry + 2))
        #expect(breaker.consecutiveFailures(of: "origin") == 2)
    }

    @Test func oneUsableUpstreamIsEnough() {
        var breaker = UpstreamBreaker(upstream: ["a", "b"])
        breaker.handleFillFailed("a", now: 0)
        #expect(breaker.canFill(now: 1))
        let a = breaker.shouldTry("a", now: 1), b = breaker.shouldTry("b", now: 1)
        #expect(!a && b)
        breaker.handleFillFailed("b", now: 2)
        #expect(!breaker.canFill(now: 3))
    }

    @Test func anUpstreamThatAnswersProbesAgainIsRetriedAtOnce() {
        var breaker = UpstreamBreaker(upstream: ["origin"])
        breaker.handleFillFailed("origin", now: 0)
        breaker.handleHealth("origin", isDown: true, now: 1)
        #expect(!breaker.canFill(now: 2))
        breaker.handleHealth("origin", isDown: false, now: 3)
        let retried = breaker.shouldTry("origin", now: 3)
        #expect(breaker.canFill(now: 3) && retried)
        // Health alone never opens it: a peer reported down is tried until a fill fails.
        var fresh = UpstreamBreaker(upstream: ["x"])
        fresh.handleHealth("x", isDown: true, now: 0)
        #expect(fresh.canFill(now: 0))
        #expect(!UpstreamBreaker<String>(upstream: []).canFill(now: 0))
    }
}
