import Foundation
import Logging
import STOQContent
import Testing

@testable import STOQExchange

/// A settable clock for the tracker.
private final class FakeClock: @unchecked Sendable {
    private let lock = NSLock()
    private var t = 0.0
    var now: Double { lock.withLock { t } }
    func advance(_ seconds: Double) { lock.withLock { t += seconds } }
}

private final class Owner {}

/// ``TransferTracker`` under virtual time: grouping by peer and content, rate, finishing.
@Suite struct TransferTrackerTests {
    private let root = ChunkID.of(Array("manifest".utf8))
    private let other = ChunkID.of(Array("another manifest".utf8))
    private let chunk = ChunkID.of(Array("data".utf8))

    /// The grant a transfer is made under is looked up once per transfer and ends up in its record.
    @Test func aTransfersGrantIsClaimedOnceAndFinishedWithIt() {
        let clock = FakeClock()
        let tracker = TransferTracker(idle: 3, now: { clock.now })
        let connection = ObjectIdentifier(Owner())
        let first = tracker.beginServe(chunk: root, connection: connection, peer: "reader (00bb)")
        #expect(tracker.content(of: first!) == ContentID(root).description)
        #expect(tracker.claimGrantCheck(first!))
        tracker.setGrant(Array(repeating: 9, count: 16), for: first!)
        tracker.setGrant([1, 2], for: first!)  // not a grant id: ignored
        tracker.end(first)
        let next = tracker.beginServe(chunk: chunk, connection: connection, peer: "reader (00bb)")
        #expect(!tracker.claimGrantCheck(next!))
        tracker.end(next)
        let done = tracker.sweep(all: true)
        #expect(done.count == 1)
        #expect(done.first?.grant == Array(repeating: 9, count: 16))
    }

    @Test func chunksOfOneConnectionCountUnderTheContentItReads() {
        let clock = FakeClock()
        let tracker = TransferTracker(idle: 3, now: { clock.now })
        let connection = ObjectIdentifier(Owner())
        // The first chunk asked for (the root manifest) names the content.
        let first = tracker.beginServe(chunk: root, connection: connection, peer: "edge-1 (00aa)")
        tracker.add(first, bytes: 1000)
        tracker.end(first)
        for _ in 0..<4 {
            clock.advance(0.5)
            let t = tracker.beginServe(chunk: chunk, connection: connection, peer: "edge-1 (00aa)")
            tracker.add(t, bytes: 1 << 20)
            tracker.end(t)
        }
        let snapshot = tracker.snapshot()
        #expect(snapshot.count == 1)
        #expect(snapshot[0].content == ContentID(root).description)
        #expect(snapshot[0].peers == ["edge-1 (00aa)"])
        #expect(snapshot[0].bytes == 1000 + 4 << 20)
        #expect(snapshot[0].chunks == 5)
        #expect(snapshot[0].direction == .serve)
        #expect(snapshot[0].bytesPerSecond > 1_000_000)
        #expect(tracker.sweep().isEmpty)
    }

    @Test func aWantSwitchesTheContentAndIdleTransfersFinishOnce() {
        let clock = FakeClock()
        let tracker = TransferTracker(idle: 3, now: { clock.now })
        let connection = ObjectIdentifier(Owner())
        tracker.reading(ContentID(other), on: connection)
        let t = tracker.beginServe(chunk: chunk, connection: connection, peer: "p")
        tracker.add(t, bytes: 4000)
        clock.advance(2)
        tracker.end(t)
        clock.advance(2.9)
        #expect(tracker.sweep().isEmpty)
        clock.advance(0.2)
        let finished = tracker.sweep()
        #expect(finished == [.init(direction: .serve, content: ContentID(other).description, peers: ["p"], bytes: 4000, chunks: 1, seconds: 2)])
        #expect(finished[0].bytesPerSecond == 2000)
        #expect(tracker.sweep().isEmpty)
        #expect(tracker.count == 0)
    }

    @Test func aTransferInFlightIsNeverIdle() {
        let clock = FakeClock()
        let tracker = TransferTracker(idle: 1, now: { clock.now })
        let t = tracker.beginFetch(content: ContentID(root), peer: "origin (00bb)")
        clock.advance(10)
        #expect(tracker.sweep().isEmpty)
        #expect(tracker.snapshot().first?.inFlight == 1)
        tracker.end(t, completed: false)
        clock.advance(1)
        let finished = tracker.sweep()
        #expect(finished.count == 1 && finished[0].chunks == 0 && finished[0].direction == .fetch)
    }

    @Test func fillsOfOneContentFromSeveralPeersAreOneFetch() {
        let clock = FakeClock()
        let tracker = TransferTracker(now: { clock.now })
        let a = tracker.beginFetch(content: ContentID(root), peer: "origin-a")
        let b = tracker.beginFetch(content: ContentID(root), peer: "origin-b")
        tracker.add(a, bytes: 10)
        tracker.add(b, bytes: 20)
        tracker.end(a)
        tracker.end(b)
        let snapshot = tracker.snapshot()
        #expect(snapshot.count == 1 && snapshot[0].peers == ["origin-a", "origin-b"] && snapshot[0].bytes == 30 && snapshot[0].chunks == 2)
    }

    @Test func aClosedConnectionFinishesItsTransfersAtOnce() {
        let clock = FakeClock()
        let tracker = TransferTracker(now: { clock.now })
        let owners = (Owner(), Owner())  // alive: two distinct identifiers
        let one = ObjectIdentifier(owners.0), two = ObjectIdentifier(owners.1)
        let t1 = tracker.beginServe(chunk: root, connection: one, peer: "one")
        tracker.add(t1, bytes: 5)
        tracker.end(t1)
        let t2 = tracker.beginServe(chunk: other, connection: two, peer: "two")
        tracker.end(t2)
        tracker.closed(one)
        let finished = tracker.sweep()
        #expect(finished.map(\.peers) == [["one"]])
        #expect(tracker.snapshot().map(\.peers) == [["two"]])
        withExtendedLifetime(owners) {}
    }

    @Test func closingFinishesEveryTransfer() {
        let tracker = TransferTracker(now: { 0 })
        let t = tracker.beginFetch(content: ContentID(root), peer: "p")
        tracker.add(t, bytes: 7)
        #expect(tracker.sweep().isEmpty)
        #expect(tracker.sweep(all: true).map(\.bytes) == [7])
        #expect(tracker.count == 0)
        tracker.end(t)  // after the end of its transfer: ignored
        #expect(tracker.sweep(all: true).isEmpty)
    }

    @Test func theTrackerIsBounded() {
        let tracker = TransferTracker(maximumTransfers: 2, now: { 0 })
        let tokens = (0..<5).map { i in tracker.beginFetch(content: ContentID(ChunkID.of([UInt8(i)])), peer: "p") }
        #expect(tokens.compactMap { $0 }.count == 2)
        #expect(tracker.count == 2)
        tracker.add(tokens[4], bytes: 100)  // untracked: ignored
        tracker.end(tokens[4])
        #expect(tracker.snapshot().map(\.bytes) == [0, 0])
    }

    @Test func theRateFollowsTheLastSecond() {
        let clock = FakeClock()
        let tracker = TransferTracker(now: { clock.now })
        let t = tracker.beginFetch(content: ContentID(root), peer: "p")
        for _ in 0..<50 {
            clock.advance(0.1)
            tracker.add(t, bytes: 1000)  // 10 kB/s for 5 s
        }
        for _ in 0..<30 {
            clock.advance(0.1)
            tracker.add(t, bytes: 100_000)  // then 1 MB/s for 3 s (the average is 381 kB/s)
        }
        let rate = tracker.snapshot()[0].bytesPerSecond
        #expect(rate > 800_000 && rate < 1_200_000, "rate \(rate)")
        clock.advance(10)
        #expect(tracker.snapshot()[0].bytesPerSecond < 300_000)
    }
}

/// ``PersistentCounters``: the file survives a round trip; missing, corrupt or absurd files start at zero.
@Suite struct PersistentCountersTests {
    private func directory() -> String {
        let d = NSTemporaryDirectory() + "counters-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func savedTotalsLoadBack() throws {
        let path = directory() + "/counters.json"
        var c = PersistentCounters()
        c.servedBytes = 123_456
        c.servedChunks = 7
        c.cacheHits = 3
        c.cacheMisses = 4
        c.cacheUpstreamBytes = 99
        c.uploads = 1
        c.uploadBytes = 10
        try c.save(path: path)
        #expect(PersistentCounters.load(path: path, logger: Logger(label: "test")) == c)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        var more = PersistentCounters()
        more.servedBytes = 1
        #expect(c.adding(more).servedBytes == 123_457)
    }

    @Test func aMissingOrCorruptFileStartsAtZero() throws {
        let d = directory()
        #expect(PersistentCounters.load(path: d + "/none.json", logger: Logger(label: "test")) == PersistentCounters())
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: d + "/bad.json"))
        #expect(PersistentCounters.load(path: d + "/bad.json", logger: Logger(label: "test")) == PersistentCounters())
        try Data(#"{"servedBytes": "many"}"#.utf8).write(to: URL(fileURLWithPath: d + "/wrong.json"))
        #expect(PersistentCounters.load(path: d + "/wrong.json", logger: Logger(label: "test")) == PersistentCounters())
    }

    @Test func anOlderOrDamagedFileIsReadSafely() throws {
        let d = directory()
        try Data(#"{"servedBytes": 5, "cacheHits": -3}"#.utf8).write(to: URL(fileURLWithPath: d + "/old.json"))
        let c = PersistentCounters.load(path: d + "/old.json", logger: Logger(label: "test"))
        #expect(c.servedBytes == 5 && c.cacheHits == 0 && c.uploads == 0)
        var big = PersistentCounters()
        big.servedBytes = .max
        var one = PersistentCounters()
        one.servedBytes = 1
        #expect(big.adding(one).servedBytes == .max)
    }
}
