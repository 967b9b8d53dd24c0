import STOQContent
import Testing
@testable import STOQSwarm

/// The per-source window under the two ways a real source serves several requests: interleaved
/// (QUIC streams sent round-robin, so a batch completes at once) and one after another (a
/// queue). Virtual time, 1 ms steps: the source is driven by hand, not by the simulator, so the
/// service order is exact.
struct SwarmSchedulerWindowTests {
    static let chunkSize = 256 << 10
    static let ms: UInt64 = 1_000_000

    /// One source at `rate` bytes/s whose responses start `turnaround` after their request;
    /// `interleaved` splits each millisecond's bytes over every started response, else the
    /// oldest is served first. Returns the most requests outstanding at once after the start.
    static func drive(_ scheduler: inout SwarmScheduler, rate: Int, turnaround: UInt64, interleaved: Bool, milliseconds: Int) -> Int {
        let source = SourceID(1)
        var sent: [RequestID: UInt64] = [:]
        var received: [RequestID: Int] = [:]
        var order: [RequestID] = []
        var most = 0
        func take(_ now: UInt64) {
            while let action = scheduler.pollAction() {
                switch action {
                case .request(let id, _, _):
                    sent[id] = now
                    received[id] = 0
                    order.append(id)
                case .cancel(let id, _, _):
                    sent[id] = nil
                    order.removeAll { $0 == id }
                default:
                    break
                }
            }
        }
        scheduler.handleSourceAdded(source, now: 0)
        take(0)
        let perStep = rate / 1000
        for step in 1 ... milliseconds {
            let now = UInt64(step) * ms
            let started = order.filter { sent[$0]! + turnaround <= now }
            guard !started.isEmpty else { continue }
            var shares: [(RequestID, Int)] = []
            if interleaved {
                shares = started.map { ($0, perStep / started.count) }
            } else {
                var budget = perStep
                for id in started where budget > 0 {
                    let n = min(budget, chunkSize - received[id]!)
                    shares.append((id, n))
                    budget -= n
                }
            }
            // Bytes in the order they arrive; a response completes as its last byte arrives.
            for (id, n) in shares {
                let n = min(n, chunkSize - received[id]!)
                guard n > 0 else { continue }
                received[id]! += n
                scheduler.handleProgress(id, bytes: n, now: now)
                if received[id] == chunkSize {
                    order.removeAll { $0 == id }
                    sent[id] = nil
                    scheduler.handleResponse(id, verified: true, now: now)
                }
            }
            take(now)
            if step > 100 { most = max(most, scheduler.outstandingCount(of: source)) }
            if scheduler.isFinished { break }
        }
        return most
    }

    @Test func interleavedCompletionsDoNotInflateTheRateOrTheWindow() throws {
        // Two responses served round-robin finish within a millisecond of each other; counting each
        // completion as "chunk size over the time since the previous one" measured hundreds of MB/s
        // and grew the window to the 32-request cap (seen over real QUIC: 2-12 MiB per source).
        var scheduler = SwarmScheduler(chunks: (0 ..< 400).map { SwarmChunk(index: $0, id: .of([UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)]), size: Self.chunkSize) })
        let rate = 10_000_000
        let most = Self.drive(&scheduler, rate: rate, turnaround: 3 * Self.ms, interleaved: true, milliseconds: 3000)
        let source = try #require(scheduler.progress.sources.first)
        let measured = try #require(source.throughputBytesPerSecond)
        #expect(abs(measured - Double(rate)) < 0.25 * Double(rate), "measured \(measured) B/s for a 10 MB/s source")
        // The window bounds the bytes still to come, so requests overlap (the next starts while the
        // current ones finish) but stay few.
        #expect(most <= 6, "window \(source.windowBytes) bytes, \(most) requests outstanding at most")
        #expect(source.windowBytes < 3 * Self.chunkSize)
        // No pause between batches: at least 97 % of what 3 s at 10 MB/s allow was delivered
        // (requesting only after a batch completed left a turnaround gap per batch: about 94 %).
        #expect(Double(source.bytesDelivered) >= 0.97 * Double(rate) * 3, "\(source.bytesDelivered) bytes delivered")
    }

    @Test func aQueueAtTheSourceIsNotCountedAsTurnaround() throws {
        // Start with a deep queue (16 requests) at a source that serves in order: requests waiting
        // behind others see their first byte late, but that is queueing, not path delay, and must
        // not keep the window deep.
        var configuration = SwarmConfiguration()
        configuration.initialWindowBytes = 16 * Self.chunkSize
        var scheduler = SwarmScheduler(chunks: (0 ..< 400).map { SwarmChunk(index: $0, id: .of([UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)]), size: Self.chunkSize) }, configuration: configuration)
        let rate = 10_000_000
        _ = Self.drive(&scheduler, rate: rate, turnaround: 2 * Self.ms, interleaved: false, milliseconds: 3000)
        let source = try #require(scheduler.progress.sources.first)
        #expect(source.windowBytes < 2 * Self.chunkSize, "window \(source.windowBytes) bytes")
        #expect(scheduler.outstandingCount(of: SourceID(1)) <= 2)
        let measured = try #require(source.throughputBytesPerSecond)
        #expect(abs(measured - Double(rate)) < 0.25 * Double(rate), "measured \(measured) B/s for a 10 MB/s source")
        #expect(Double(source.bytesDelivered) >= 0.9 * Double(rate) * 3)
    }
}
