import STOQContent
import STOQWire
import Testing
@testable import STOQSwarm

/// Unit tests that drive the scheduler by hand (no simulator).
struct SwarmSchedulerTests {
    static func chunks(_ count: Int, size: Int = 1000) -> [SwarmChunk] {
        (0 ..< count).map { SwarmChunk(index: $0, id: ChunkID.of(Array("chunk \($0)".utf8)), size: size) }
    }

    static func drain(_ scheduler: inout SwarmScheduler) -> [SwarmAction] {
        var actions: [SwarmAction] = []
        while let action = scheduler.pollAction() { actions.append(action) }
        return actions
    }

    static func requests(_ actions: [SwarmAction]) -> [(RequestID, SourceID, Int)] {
        actions.compactMap { if case .request(let id, let source, let chunk) = $0 { (id, source, chunk) } else { nil } }
    }

    @Test func emptyOrFullyPresentContentCompletesAtOnce() {
        var scheduler = SwarmScheduler(chunks: Self.chunks(3), present: [0, 1, 2])
        #expect(Self.drain(&scheduler) == [.completed])
        #expect(scheduler.pollTimeout() == nil)
        var empty = SwarmScheduler(chunks: [])
        #expect(Self.drain(&empty) == [.completed])
    }

    @Test func requestsRespectHaveAndPresent() {
        var scheduler = SwarmScheduler(chunks: Self.chunks(8), present: [0, 1])
        var have = ChunkBitfield(count: 8)
        for index in [1, 2, 3] { have[index] = true }
        scheduler.handleSourceAdded(SourceID(1), have: have, now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        #expect(!issued.isEmpty)
        for (_, source, chunk) in issued {
            #expect(source == SourceID(1))
            #expect(chunk == 2 || chunk == 3)
        }
    }

    @Test func rarestFirst() {
        // Chunk 5 is held by one source only; chunks 0...4 by both. The partial source is asked for 5 first.
        var scheduler = SwarmScheduler(chunks: Self.chunks(6))
        var have = ChunkBitfield(count: 6, allSet: false)
        for index in 0 ..< 5 { have[index] = true }
        scheduler.handleSourceAdded(SourceID(1), have: have, now: 0)
        _ = Self.drain(&scheduler)
        scheduler.handleSourceAdded(SourceID(2), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        #expect(issued.first?.2 == 5)
    }

    @Test func aFillingEdgeIsGivenWhatItCachesAndTheOthersTakeTheRest() {
        // The edge caches chunks 0..<20 and fills the rest from upstream; the origin holds all 40.
        var scheduler = SwarmScheduler(chunks: Self.chunks(40))
        var cached = ChunkBitfield(count: 40)
        for index in 0 ..< 20 { cached[index] = true }
        let edge = SourceID("edge"), origin = SourceID("origin")
        scheduler.handleSourceAdded(edge, have: nil, cached: cached, now: 0)
        scheduler.handleSourceAdded(origin, now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        #expect(issued.contains { $0.1 == edge } && issued.contains { $0.1 == origin })
        // The edge gets chunks it caches; the origin, rarest first, the ones only it holds (the
        // edge's misses do not count as copies).
        for (_, source, chunk) in issued {
            #expect(source == edge ? chunk < 20 : chunk >= 20, "\(source) got chunk \(chunk)")
        }
    }

    @Test func aFillingEdgeAloneServesItsCachedChunksFirstThenItsMisses() {
        var scheduler = SwarmScheduler(chunks: Self.chunks(30))
        var cached = ChunkBitfield(count: 30)
        for index in stride(from: 0, to: 30, by: 3) { cached[index] = true }
        scheduler.handleHave(SourceID("edge"), have: nil, cached: cached, now: 0)
        var order: [Int] = []
        var now: UInt64 = 0
        var done = false
        while !done {
            let actions = Self.drain(&scheduler)
            done = actions.contains(.completed)
            #expect(!actions.contains { if case .failed = $0 { true } else { false } })
            let issued = Self.requests(actions)
            if issued.isEmpty && !done { Issue.record("the fetch stopped"); break }
            for (id, _, chunk) in issued {
                order.append(chunk)
                now += 1_000_000
                scheduler.handleResponse(id, verified: true, now: now)
            }
        }
        #expect(order.count == 30)
        #expect(order.prefix(10).allSatisfy { $0 % 3 == 0 }, "\(order)")
    }

    @Test func sourceDownReassignsAtOnce() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(4))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let first = Self.requests(Self.drain(&scheduler))
        #expect(first.count == 2)
        scheduler.handleSourceAdded(SourceID(2), now: 1)
        _ = Self.drain(&scheduler)
        scheduler.handleSourceDown(SourceID(1), now: 5_000_000)
        let actions = Self.drain(&scheduler)
        let cancelled = actions.compactMap { if case .cancel(_, _, let chunk) = $0 { chunk } else { nil } }
        #expect(Set(cancelled) == Set(first.map(\.2)))
        // The same chunks go to source 2 in the same call (it may already hold the others).
        let outstanding = Set(scheduler.outstandingRequests(of: SourceID(2)).map(\.chunkIndex))
        #expect(outstanding.isSuperset(of: Set(first.map(\.2))))
        #expect(scheduler.outstandingRequests(of: SourceID(1)).isEmpty)
        scheduler.handleSourceUp(SourceID(1), now: 6_000_000)
        #expect(scheduler.state(of: SourceID(1)) == .active)
    }

    @Test func corruptChunkBansAndReassigns() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(4))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        scheduler.handleSourceAdded(SourceID(2), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        let bad = try #require(issued.first { $0.1 == SourceID(1) })
        scheduler.handleResponse(bad.0, verified: false, now: 1000)
        let actions = Self.drain(&scheduler)
        #expect(actions.contains(.sourceBanned(SourceID(1), reason: .corruptChunk(index: bad.2))))
        guard case .banned = scheduler.state(of: SourceID(1)) else { Issue.record("not banned"); return }
        #expect(scheduler.outstandingRequests(of: SourceID(1)).isEmpty)
        #expect(scheduler.sources(fetching: bad.2) == [SourceID(2)])
        // A re-add never revives a banned source.
        scheduler.handleSourceAdded(SourceID(1), now: 2000)
        guard case .banned = scheduler.state(of: SourceID(1)) else { Issue.record("revived"); return }
    }

    @Test func allSourcesBannedFailsNamingTheChunks() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(2))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        scheduler.handleResponse(issued[0].0, verified: false, now: 10)
        let actions = Self.drain(&scheduler)
        let failure = try #require(actions.compactMap { if case .failed(let error) = $0 { error } else { nil } }.first)
        #expect(failure.code == .noSource)
        #expect(failure.chunkIndices == [0, 1])
        #expect(failure.reason.contains("banned"))
        #expect(scheduler.progress.isFailed)
        #expect(scheduler.pollTimeout() == nil)
    }

    @Test func notFoundStopsAskingThatSourceAndFailsWhenNobodyHasIt() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(1))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        scheduler.handleSourceAdded(SourceID(2), now: 0)
        // One chunk, two sources: the second gets an endgame duplicate.
        let issued = Self.requests(Self.drain(&scheduler))
        try #require(issued.count == 2)
        scheduler.handleFailure(issued[0].0, .notFound, now: 10)
        #expect(Self.requests(Self.drain(&scheduler)).isEmpty)
        #expect(scheduler.progress.sources[0].failures == 1)
        scheduler.handleFailure(issued[1].0, .notFound, now: 20)
        let actions = Self.drain(&scheduler)
        let failure = try #require(actions.compactMap { if case .failed(let error) = $0 { error } else { nil } }.first)
        #expect(failure.chunkIndices == [0])
        #expect(failure.reason.contains("notFound"))
    }

    @Test func errorPenalisesWithBackoff() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(4))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        scheduler.handleFailure(issued[0].0, .error("stream reset"), now: 1_000)
        guard case .backingOff(let until) = scheduler.state(of: SourceID(1)) else { Issue.record("no backoff"); return }
        #expect(until == 1_000 + scheduler.configuration.baseBackoff)
        #expect(Self.requests(Self.drain(&scheduler)).isEmpty)
        let timeout = try #require(scheduler.pollTimeout())
        #expect(timeout <= until)
        scheduler.handleTimeout(now: until)
        #expect(scheduler.state(of: SourceID(1)) == .active)
        #expect(!Self.requests(Self.drain(&scheduler)).isEmpty)
    }

    @Test func stallReassignsWithinTheCap() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(4))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        scheduler.handleSourceAdded(SourceID(2), now: 0)
        _ = Self.drain(&scheduler)
        let deadline = try #require(scheduler.pollTimeout())
        #expect(deadline <= scheduler.configuration.maxStallTimeout)
        // Source 2 makes progress; source 1 does not.
        for (id, _) in scheduler.outstandingRequests(of: SourceID(2)) { scheduler.handleProgress(id, bytes: 10, now: deadline - 1) }
        scheduler.handleTimeout(now: deadline)
        let actions = Self.drain(&scheduler)
        let cancelled = Set(actions.compactMap { if case .cancel(_, let source, let chunk) = $0, source == SourceID(1) { chunk } else { nil } })
        #expect(cancelled == Set(issued.map(\.2)))
        #expect(scheduler.progress.sources[0].stalls == 1)
        #expect(scheduler.outstandingRequests(of: SourceID(1)).isEmpty)
    }

    @Test func endgameDuplicatesAndCancelsTheLoser() throws {
        var scheduler = SwarmScheduler(chunks: Self.chunks(1))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let first = Self.requests(Self.drain(&scheduler))
        #expect(first.count == 1)
        scheduler.handleSourceAdded(SourceID(2), now: 10)
        let second = Self.requests(Self.drain(&scheduler))
        #expect(second.count == 1)
        #expect(second[0].1 == SourceID(2) && second[0].2 == 0)
        scheduler.handleResponse(second[0].0, verified: true, now: 20)
        let actions = Self.drain(&scheduler)
        #expect(actions == [.cancel(first[0].0, source: SourceID(1), chunkIndex: 0), .completed])
        #expect(scheduler.progress.sources[1].bytesDelivered == 1000)
        #expect(scheduler.progress.sources[0].bytesDelivered == 0)
        // A late answer for the loser is ignored.
        scheduler.handleResponse(first[0].0, verified: false, now: 30)
        #expect(Self.drain(&scheduler).isEmpty)
    }

    @Test func chunkPresentByOtherMeansCancelsItsRequests() {
        var scheduler = SwarmScheduler(chunks: Self.chunks(2))
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        #expect(issued.count == 2)
        scheduler.handleChunkPresent(issued[0].2, now: 5)
        #expect(Self.drain(&scheduler) == [.cancel(issued[0].0, source: SourceID(1), chunkIndex: issued[0].2)])
        scheduler.handleResponse(issued[1].0, verified: true, now: 6)
        #expect(Self.drain(&scheduler) == [.completed])
        #expect(scheduler.progress.sources[0].bytesDelivered == 1000)
    }

    @Test func repeatedChunkIDsAreFetchedOnce() {
        let a = ChunkID.of(Array("a".utf8)), b = ChunkID.of(Array("b".utf8))
        let chunks = [a, b, a, a, b].enumerated().map { SwarmChunk(index: $0.offset, id: $0.element, size: 100) }
        var scheduler = SwarmScheduler(chunks: chunks, present: [4])
        scheduler.handleSourceAdded(SourceID(1), now: 0)
        let issued = Self.requests(Self.drain(&scheduler))
        #expect(issued.map(\.2) == [0])
        #expect(scheduler.progress.bytesDone == 200)
        scheduler.handleResponse(issued[0].0, verified: true, now: 1)
        #expect(Self.drain(&scheduler) == [.completed])
        #expect(scheduler.progress.bytesDone == 500)
        #expect(scheduler.progress.chunksDone == 5)
    }

    @Test func rankerOrdersSources() {
        var scheduler = SwarmScheduler(chunks: Self.chunks(40), ranker: ClosureSourceRanker { $0 == SourceID(3) ? 10 : Double(-$0.rawValue.count) })
        for number in 1 ... 3 { scheduler.handleSourceAdded(SourceID(number), now: 0) }
        #expect(scheduler.sourceOrder().first == 2)
        scheduler.ranker = nil
        let unranked = scheduler.sourceOrder()
        #expect(Set(unranked) == [0, 1, 2])
    }
}
