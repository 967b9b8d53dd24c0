import Foundation
import STOQTransport
import STOQWire

extension ChunkServer {
    /// How long a request may wait for its chunk before the server says it is still filling.
    static let pendingDelay: Duration = .milliseconds(5)
    /// Interval of `CHUNK_PENDING` frames while the fill makes progress; well below the requester's
    /// shortest stall timeout (``STOQSwarm/SwarmConfiguration/minStallTimeout``, 40 ms).
    static let pendingInterval: Duration = .milliseconds(10)
    /// For this long after a request arrives the server vouches for it even without progress (an
    /// upstream that is being dialled, or takes a moment to answer); after that only progress of
    /// an upstream fill earns keepalives. Short enough that a stuck provider still fails over well
    /// within the requester's budget (this + its stall timeout < 500 ms).
    static let pendingGrace: Duration = .milliseconds(50)
    /// Lateness of the keepalive writer's own wake-ups that is ordinary jitter; beyond it, the
    /// lateness extends the grace (slowness of this node is not its upstream's death).
    static let lagTolerance: Duration = .milliseconds(5)
    /// After this long the server stops vouching for a fill: a requester's stall detection then
    /// moves the request elsewhere (an upstream that never answers must not hold clients forever).
    static let pendingLimit: Duration = .seconds(10)

    /// Runs `body` (the provider's lookup, which on an edge miss is an upstream fetch) and, while
    /// it runs and its `fill` makes progress (bytes or signs of life from upstream), writes
    /// `CHUNK_PENDING` frames on `stream` every ``pendingInterval`` so the requester sees a live
    /// source rather than a stall. A lookup that makes no progress (a provider stuck for good)
    /// gets no keepalives, so the requester's stall detection moves the request elsewhere.
    /// Returns once no keepalive write is in progress, so the caller's header never interleaves
    /// with one.
    func withFillKeepalive<T: Sendable>(on stream: QUICStream, _ body: (FillProgress) async throws -> T) async throws -> T {
        let state = KeepaliveState()
        let fill = FillProgress()
        let keepalive = Task {
            let start = ContinuousClock.now
            // The grace counts only time this process ran: a wake-up that comes late (the machine
            // is busy) extends it by its lateness, since the upstream could not be heard meanwhile.
            var graceEnd = start + Self.pendingGrace
            var expected = start + Self.pendingDelay
            do { try await Task.sleep(for: Self.pendingDelay) } catch { return }
            // Ends as soon as the answer is ready: a writer that only checked when it next wanted
            // to write idled on until `pendingLimit` whenever the answer came during a write and
            // the fill (now complete) made no more progress, holding the answer back for up to
            // 10 s (the two-tier fill stall of issue 11).
            while !state.isFinished, ContinuousClock.now - start < Self.pendingLimit {
                let now = ContinuousClock.now
                if now - expected > Self.lagTolerance { graceEnd += now - expected - Self.lagTolerance }
                if fill.takeProgress() || now < graceEnd {
                    guard state.beginWrite() else { return }
                    let waited = UInt64(max(0, (ContinuousClock.now - start).nanoseconds / 1_000_000))
                    let written: Bool
                    do {
                        try await stream.write(STOQMessage.chunkPending(waitedMillis: waited).encoded())
                        written = true
                    } catch {
                        written = false
                    }
                    state.endWrite()
                    guard written else { return }
                }
                expected = ContinuousClock.now + Self.pendingInterval
                do { try await Task.sleep(for: Self.pendingInterval) } catch { return }
            }
        }
        let result: Result<T, any Error>
        do { result = .success(try await body(fill)) } catch { result = .failure(error) }
        // Asleep: the cancellation wakes it to exit. Mid-write: the write (not cancellable) completes,
        // then the writer sees the answer is ready and exits without sleeping again.
        state.finish()
        keepalive.cancel()
        await keepalive.value
        return try result.get()
    }
}

/// Progress of one chunk fill (an edge's upstream fetch): the fetch notes bytes and signs of life;
/// the server's keepalive writer takes them. Fills shared by several requests forward to each.
///
/// `@unchecked Sendable`: every access goes through `lock`.
public final class FillProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var progressed = false
    private var listeners: [FillProgress] = []

    /// Creates a fill with no progress yet.
    public init() {}

    /// The fill moved (bytes arrived, or upstream said it is alive).
    public func note() {
        let forward = lock.withLock { progressed = true; return listeners }
        for listener in forward { listener.note() }
    }

    /// Makes `other` see this fill's progress too (a request that joins a fill in flight).
    public func forward(to other: FillProgress) {
        lock.withLock { listeners.append(other) }
    }

    /// Whether the fill moved since the last call.
    func takeProgress() -> Bool { lock.withLock { defer { progressed = false }; return progressed } }
}

/// The fills a node's requests wait for; progress of any upstream fetch marks them all alive.
///
/// `@unchecked Sendable`: every access goes through `lock`.
package final class FillRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var fills: [ObjectIdentifier: FillProgress] = [:]

    package init() {}
    package func add(_ fill: FillProgress) { lock.withLock { fills[ObjectIdentifier(fill)] = fill } }
    package func remove(_ fill: FillProgress) { lock.withLock { fills[ObjectIdentifier(fill)] = nil } }
    package func noteAll() {
        for fill in lock.withLock({ Array(fills.values) }) { fill.note() }
    }
}

/// Signs of life of one upstream: bumped by every byte or keepalive of any fill from it, so a fill
/// that waits its turn behind others from the same upstream is not taken for a dead one.
///
/// `@unchecked Sendable`: every access goes through `lock`.
package final class FillWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 0
    package init() {}
    package func note() { lock.withLock { value &+= 1 } }
    package var count: UInt64 { lock.withLock { value } }
}

/// Whether a keepalive writer may write, and whether it is writing.
///
/// `@unchecked Sendable`: every access goes through `lock`.
final class KeepaliveState: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    private var writing = false

    /// Claims the stream for one keepalive frame; false once the answer is ready.
    func beginWrite() -> Bool { lock.withLock { if done { return false }; writing = true; return true } }
    /// Releases the stream.
    func endWrite() { lock.withLock { writing = false } }
    /// The answer is ready: no more keepalives. Returns whether one is being written now.
    @discardableResult
    func finish() -> Bool { lock.withLock { done = true; return writing } }
    /// Whether the answer is ready (the writer must stop).
    var isFinished: Bool { lock.withLock { done } }
}
