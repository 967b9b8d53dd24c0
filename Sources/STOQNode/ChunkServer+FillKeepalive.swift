import Foundation
import STOQTransport
import STOQWire

extension ChunkServer {
    /// How long a request may wait for its chunk before the server says it is still filling.
    static let pendingDelay: Duration = .milliseconds(5)
    /// Interval of `CHUNK_PENDING` frames while the fill goes on; well below the requester's
    /// shortest stall timeout (``STOQSwarm/SwarmConfiguration/minStallTimeout``, 40 ms).
    static let pendingInterval: Duration = .milliseconds(10)
    /// After this long the server stops vouching for a fill: a requester's stall detection then
    /// moves the request elsewhere (an upstream that never answers must not hold clients forever).
    static let pendingLimit: Duration = .seconds(10)

    /// Runs `body` (the provider's lookup, which on an edge miss is an upstream fetch) and, while
    /// it runs longer than ``pendingDelay``, writes `CHUNK_PENDING` frames on `stream` so the
    /// requester sees a live source rather than a stall. Returns once no keepalive write is in
    /// progress, so the caller's header never interleaves with one.
    func withFillKeepalive<T: Sendable>(on stream: QUICStream, _ body: () async throws -> T) async throws -> T {
        let state = KeepaliveState()
        let keepalive = Task {
            let start = ContinuousClock.now
            do { try await Task.sleep(for: Self.pendingDelay) } catch { return }
            while ContinuousClock.now - start < Self.pendingLimit {
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
                do { try await Task.sleep(for: Self.pendingInterval) } catch { return }
            }
        }
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        if !state.finish() { keepalive.cancel() }  // asleep: wake it to exit; mid-write: let it finish
        await keepalive.value
        return try result.get()
    }
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
    func finish() -> Bool { lock.withLock { done = true; return writing } }
}
