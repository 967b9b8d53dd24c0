import STOQContent
import STOQWire
import Testing
@testable import STOQSwarm

/// Slowness is not death (issue 11): the scheduler's stall timers do not count the fetch's own
/// scheduling lag against its sources, yet a source that really stopped is still detected within
/// the configured bound; and a source down for too long stops holding the fetch. Virtual clock.
struct SwarmSchedulerLagTests {
    typealias T = SwarmSchedulerTests

    /// One source with requests out at time 0; returns the scheduler and the first stall deadline.
    private func oneBusySource(_ configuration: SwarmConfiguration = .init()) throws -> (SwarmScheduler, UInt64) {
        var scheduler = SwarmScheduler(chunks: T.chunks(8), configuration: configuration)
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        #expect(!T.requests(T.drain(&scheduler)).isEmpty)
        let deadline = try #require(scheduler.pollTimeout())
        return (scheduler, deadline)
    }

    private func stalls(_ scheduler: SwarmScheduler) -> Int { scheduler.progress.sources[0].stalls }

    @Test func aLateWakeUpIsNotCountedAsTheSourcesSilence() throws {
        var (scheduler, deadline) = try oneBusySource()
        // The timer fires 300 ms late: the process was starved; the source's bytes may be queued.
        let late: UInt64 = 300_000_000
        let woke = deadline + late
        scheduler.handleSchedulingLag(late, now: woke)
        scheduler.handleTimeout(now: woke)
        #expect(stalls(scheduler) == 0)
        #expect(scheduler.lateWakeups == 1)
        // The deadline moved back by the lateness beyond the tolerance, and as much again.
        let excess = late - scheduler.configuration.lagTolerance
        #expect(scheduler.stallDeadline(of: SourceID(1)) == deadline + 2 * excess)
        // The queued bytes are read right after: the source is alive and its deadline is fresh.
        let (request, _) = try #require(scheduler.outstandingRequests(of: SourceID(1)).first)
        scheduler.handleProgress(request, bytes: 100, now: woke + 1_000_000)
        scheduler.handleTimeout(now: woke + 2_000_000)
        #expect(stalls(scheduler) == 0)
        #expect(try #require(scheduler.stallDeadline(of: SourceID(1))) > woke + 1_000_000)
    }

    @Test func jitterWithinTheToleranceChangesNothing() throws {
        var (scheduler, deadline) = try oneBusySource()
        let jitter = scheduler.configuration.lagTolerance
        scheduler.handleSchedulingLag(jitter, now: deadline + jitter)
        #expect(scheduler.lateWakeups == 0)
        scheduler.handleTimeout(now: deadline + jitter)
        #expect(stalls(scheduler) == 1)
    }

    @Test func aSourceThatStoppedIsStillDetectedOnAStarvedMachine() throws {
        var (scheduler, deadline) = try oneBusySource()
        let bound = deadline + scheduler.configuration.maxLagCredit
        // Every wake-up comes 250 ms late and the source never sends a byte: the credit is capped,
        // so the stall is declared at most maxLagCredit (plus one lateness) after the idle-machine deadline.
        let late: UInt64 = 250_000_000
        var now: UInt64 = 0
        var wakeups = 0
        while stalls(scheduler) == 0, wakeups < 100 {
            let target = try #require(scheduler.pollTimeout())
            now = max(now, target) + late
            scheduler.handleSchedulingLag(late, now: now)
            scheduler.handleTimeout(now: now)
            wakeups += 1
        }
        #expect(stalls(scheduler) == 1)
        #expect(now > deadline + late)  // later than on an idle machine…
        #expect(now <= bound + late)  // …but within the configured bound
    }

    @Test func onAnIdleMachineTheStallBoundIsUnchanged() throws {
        var (scheduler, deadline) = try oneBusySource()
        scheduler.handleSchedulingLag(0, now: deadline)
        scheduler.handleTimeout(now: deadline)
        #expect(stalls(scheduler) == 1)
        #expect(deadline <= scheduler.configuration.maxStallTimeout)
    }

    @Test func creditIsPerSilenceAndProgressResetsIt() throws {
        var configuration = SwarmConfiguration()
        configuration.maxLagCredit = 400_000_000
        var (scheduler, deadline) = try oneBusySource(configuration)
        // A huge lag is capped at maxLagCredit.
        scheduler.handleSchedulingLag(10_000_000_000, now: deadline)
        #expect(scheduler.stallDeadline(of: SourceID(1)) == deadline + configuration.maxLagCredit)
        // Progress starts a new silence: old lag does not extend it.
        let (request, _) = try #require(scheduler.outstandingRequests(of: SourceID(1)).first)
        let at = deadline + 1
        scheduler.handleProgress(request, bytes: 10, now: at)
        let fresh = try #require(scheduler.stallDeadline(of: SourceID(1)))
        #expect(fresh == at + scheduler.stallTimeout(of: SourceID(1))!)
    }

    @Test func aSourceDownTooLongStopsHoldingTheFetchAndTheErrorNamesIt() throws {
        var scheduler = SwarmScheduler(chunks: T.chunks(4))
        var edgeHas = ChunkBitfield(count: 4)
        edgeHas[0] = true
        edgeHas[1] = true
        scheduler.handleSourceAdded(SourceID("origin"), now: 0)
        scheduler.handleSourceAdded(SourceID("edge"), have: edgeHas, now: 0)
        _ = T.drain(&scheduler)
        scheduler.handleSourceDown(SourceID("origin"), now: 1_000)
        _ = T.drain(&scheduler)
        // Chunks 2 and 3 have no live holder; the fetch waits for the origin, but not forever.
        let limit = scheduler.configuration.downSourceLimit
        let wake = try #require(scheduler.pollTimeout())
        #expect(wake <= 1_000 + limit)
        scheduler.handleTimeout(now: limit / 2)
        #expect(!T.drain(&scheduler).contains { if case .failed = $0 { true } else { false } })
        scheduler.handleTimeout(now: 1_000 + limit)
        let failure = try #require(T.drain(&scheduler).compactMap { if case .failed(let error) = $0 { error } else { nil } }.first)
        #expect(failure.chunkIndices == [2, 3])
        #expect(failure.reason.contains("origin down (health probes unanswered or connection lost)"))
        #expect(scheduler.holderCountsAreConsistent)
    }

    @Test func aSourceDownTooLongThatReturnsHoldsItsChunksAgain() throws {
        var scheduler = SwarmScheduler(chunks: T.chunks(4))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        scheduler.handleSourceAdded(SourceID(2), now: 0)
        _ = T.drain(&scheduler)
        scheduler.handleSourceDown(SourceID(1), now: 0)
        // Source 2 holds everything: giving up on source 1 fails nothing.
        scheduler.handleTimeout(now: scheduler.configuration.downSourceLimit)
        #expect(!scheduler.isFinished)
        #expect(scheduler.holderCountsAreConsistent)
        scheduler.handleSourceUp(SourceID(1), now: scheduler.configuration.downSourceLimit + 1)
        #expect(scheduler.state(of: SourceID(1)) == .active)
        #expect(scheduler.holderCountsAreConsistent)
        #expect(scheduler.unavailableChunks.isEmpty)
    }

    @Test func onABusyMachineTheStallTimeoutStretchesToTheSourcesUnevenPace() throws {
        var scheduler = SwarmScheduler(chunks: T.chunks(64, size: 1 << 20))
        let source = SourceID(1)
        scheduler.handleSourceAdded(source, now: 0)
        _ = T.drain(&scheduler)
        let ms: UInt64 = 1_000_000
        // Progress with a 300 ms gap in it (a starved peer's pace).
        var now: UInt64 = 0
        for gap in [10, 10, 300, 10] {
            now += UInt64(gap) * ms
            let (request, _) = try #require(scheduler.outstandingRequests(of: source).first)
            scheduler.handleProgress(request, bytes: 1000, now: now)
        }
        let idle = try #require(scheduler.stallTimeout(of: source))
        #expect(idle <= scheduler.configuration.maxStallTimeout)  // nothing reported late: unchanged
        // The runtime reports a late wake-up: the machine is busy, the timeout covers twice the gap.
        scheduler.handleSchedulingLag(50 * ms, now: now)
        let busy = try #require(scheduler.stallTimeout(of: source))
        #expect(busy == 600 * ms)
        // A source that stopped is still detected, within busyStallTimeout plus the lag credit.
        let deadline = try #require(scheduler.stallDeadline(of: source))
        #expect(deadline <= now + scheduler.configuration.busyStallTimeout + scheduler.configuration.maxLagCredit)
        scheduler.handleTimeout(now: deadline)
        #expect(scheduler.progress.sources[0].stalls == 1)
        // Once the machine has been quiet for busyHold, the idle bound is back.
        scheduler.handleTimeout(now: now + scheduler.configuration.busyHold + 1)
        #expect(try #require(scheduler.stallTimeout(of: source)) <= scheduler.configuration.maxStallTimeout)
    }
}
