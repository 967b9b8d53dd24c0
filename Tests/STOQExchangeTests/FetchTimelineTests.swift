@testable import STOQExchange
import STOQSwarm
import Testing

/// The per-source timeline a fetch reports (idle, awaiting first byte, first-byte times, windows),
/// driven with explicit times.
@Suite struct FetchTimelineTests {
    @Test func integratesIdleAwaitingAndOutstandingTime() throws {
        let ms: UInt64 = 1_000_000
        let a = SourceID("a"), b = SourceID("b")
        var recorder = FetchTimelineRecorder(start: 0, binWidth: 100 * ms)
        recorder.window(a, bytes: 1000, now: 0)
        recorder.window(b, bytes: 0, now: 0)
        let r1 = RequestID(rawValue: 1), r2 = RequestID(rawValue: 2), r3 = RequestID(rawValue: 3)
        // a: idle 0-10, awaiting 10-15, receiving 15-50, idle 50-60 (endgame), awaiting 60-70, cancelled at 70, idle to 100.
        recorder.requested(r1, on: a, now: 10 * ms)
        recorder.received(r1, bytes: 500, now: 15 * ms)
        recorder.received(r1, bytes: 700, now: 40 * ms)
        recorder.ended(r1, now: 50 * ms)
        recorder.inEndgame = true
        recorder.requested(r2, on: a, now: 60 * ms)
        recorder.requested(r3, on: a, now: 60 * ms)
        recorder.ended(r2, now: 70 * ms)
        recorder.ended(r3, now: 70 * ms)
        let timelines = recorder.finish(at: 100 * ms)
        let ta = try #require(timelines.first { $0.name == "a" })
        let tb = try #require(timelines.first { $0.name == "b" })
        #expect(abs(ta.seconds - 0.1) < 1e-9)
        #expect(abs(ta.idleSeconds - 0.05) < 1e-9)  // 0-10, 50-60, 70-100
        #expect(abs(ta.endgameIdleSeconds - 0.04) < 1e-9)  // 50-60, 70-100
        #expect(abs(ta.awaitingSeconds - 0.015) < 1e-9)  // 10-15, 60-70
        #expect(ta.firstByteMilliseconds == [5])
        #expect(ta.maxOutstandingRequests == 2)
        #expect(abs(ta.meanOutstandingRequests - (40.0 * 1 + 10.0 * 2) / 100) < 1e-9)
        #expect(abs(ta.meanWindowBytes - 1000) < 1e-6)
        #expect(ta.bytesPerBin == [1200])
        #expect(abs(ta.idleFraction - 0.5) < 1e-9)
        #expect(abs(tb.idleFraction - 1) < 1e-9)
        #expect(tb.firstByteMilliseconds(quantile: 0.5).isNaN)
    }
}
