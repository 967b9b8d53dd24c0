import Testing

@testable import STOQExchange

/// ``ConnectionLimiter`` under virtual time: admissions, slots, the byte budget and the timers.
@Suite struct ConnectionLimiterTests {
    private func limits(_ edit: (inout PeerLimits) -> Void) -> PeerLimits {
        var l = PeerLimits()
        edit(&l)
        return l
    }

    @Test func requestsAreAdmittedUpToTheBoundAndExpireAtTheirDeadline() {
        var limiter = ConnectionLimiter(limits: limits { $0.maxPendingRequests = 2; $0.requestTimeoutMilliseconds = 10_000 })
        let r1 = limiter.admitRequest(0, now: 0)
        #expect(r1)
        let r2 = limiter.admitRequest(4, now: 1_000_000_000)
        #expect(r2)
        let r3 = limiter.admitRequest(8, now: 1_000_000_000)
        #expect(!r3)
        #expect(limiter.check(now: 9_999_999_999).lateRequests.isEmpty)
        #expect(limiter.check(now: 10_000_000_000).lateRequests == [0])
        limiter.requestEnded(0)
        let r4 = limiter.admitRequest(8, now: 10_000_000_000)
        #expect(r4)
        #expect(limiter.check(now: 11_000_000_000).lateRequests == [4])
    }

    @Test func responsesShareSlotsAndABudgetInOrderOfAsking() {
        var limiter = ConnectionLimiter(limits: limits { $0.maxResponses = 3; $0.maxResponseBytes = 100 << 10 })
        let r5 = limiter.acquireResponse(0)
        let r6 = limiter.acquireResponse(4)
        let r7 = limiter.acquireResponse(8)
        #expect(r5 && r6 && r7)
        let r8 = limiter.acquireResponse(12)
        #expect(!r8)
        let r9 = limiter.reserve(0, bytes: 60 << 10, now: 0)
        #expect(r9)
        let fits4 = limiter.reserve(4, bytes: 60 << 10, now: 0)
        #expect(!fits4)  // does not fit next to 0
        let fits8 = limiter.reserve(8, bytes: 10 << 10, now: 0)
        #expect(!fits8)  // would fit, but 4 asked first
        limiter.releaseResponse(0)
        let r10 = limiter.acquireResponse(12)
        #expect(r10)
        let r11 = limiter.reserve(4, bytes: 60 << 10, now: 0)
        #expect(r11)
        let r12 = limiter.reserve(8, bytes: 10 << 10, now: 0)
        #expect(r12)
        #expect(limiter.bytesInUse == 70 << 10)
        // One response larger than the whole budget goes when it is alone.
        let r13 = limiter.reserve(12, bytes: 1 << 20, now: 0)
        #expect(!r13)
        limiter.releaseResponse(4)
        limiter.releaseResponse(8)
        let r14 = limiter.reserve(12, bytes: 1 << 20, now: 0)
        #expect(r14)
        #expect(limiter.bytesInUse == 100 << 10)
    }

    @Test func aResponseWhosePeerStopsAcknowledgingIsStalled() {
        var limiter = ConnectionLimiter(limits: limits { $0.responseStallTimeoutMilliseconds = 30_000 })
        let r15 = limiter.acquireResponse(0)
        let r16 = limiter.reserve(0, bytes: 1000, now: 0)
        #expect(r15 && r16)
        let preparing = limiter.acquireResponse(4)
        #expect(preparing)  // preparing: not subject to the stall timer
        limiter.progress(0, acknowledged: 500, now: 20_000_000_000)
        #expect(limiter.check(now: 49_999_999_999).stalledResponses.isEmpty)
        limiter.progress(0, acknowledged: 500, now: 45_000_000_000)  // no new bytes: no progress
        #expect(limiter.check(now: 50_000_000_000).stalledResponses == [0])
        #expect(limiter.sendingResponses == [0])
    }
}
