
import Foundation
import STOQTransport

/// The async side of ``ConnectionLimiter`` for one connection a ``ChunkServer`` serves: streams
/// wait here for admission, a response slot or budget bytes, and ``watch()`` aborts what the
/// limiter finds late or stalled.
///
/// `@unchecked Sendable`: every mutable field is behind `lock`.
final class ConnectionGuard: @unchecked Sendable {
    private let lock = NSLock()
    private var limiter: ConnectionLimiter
    private var watched: [Int64: QUICStream] = [:]
    private var requestWaiters: [(stream: QUICStream, cont: CheckedContinuation<Void, Never>)] = []
    private var slotWaiters: [(stream: QUICStream, cont: CheckedContinuation<Void, Never>)] = []
    private var byteWaiters: [(id: Int64, bytes: Int, cont: CheckedContinuation<Void, Never>)] = []
    private let started = ContinuousClock.now
    private let onAbort: @Sendable (String) -> Void

    /// A guard enforcing `limits`; `onAbort` hears `request_timeout` or `response_stalled` for
    /// every stream it aborts (for metrics).
    init(limits: PeerLimits, onAbort: @escaping @Sendable (String) -> Void = { _ in }) {
        limiter = ConnectionLimiter(limits: limits)
        self.onAbort = onAbort
    }

    var limits: PeerLimits { limiter.limits }

    private func now() -> UInt64 {
        let d = ContinuousClock.now - started
        return UInt64(max(0, d.components.seconds)) &* 1_000_000_000 &+ UInt64(max(0, d.components.attoseconds) / 1_000_000_000)
    }

    // MARK: Requests

    /// Waits until `stream` may read its request (fewer than ``PeerLimits/maxPendingRequests``
    /// streams of the connection are reading theirs); its request deadline starts then.
    func admitRequest(_ stream: QUICStream) async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let now = now()
            let admitted = lock.withLock { () -> Bool in
                if requestWaiters.isEmpty, limiter.admitRequest(stream.id, now: now) {
                    watched[stream.id] = stream
                    return true
                }
                requestWaiters.append((stream, cont))
                return false
            }
            if admitted { cont.resume() }
        }
    }

    /// The request of `stream` was read, or its stream failed.
    func requestEnded(_ id: Int64) {
        let now = now()
        let wake = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            limiter.requestEnded(id)
            if limiter.responses[id] == nil { watched[id] = nil }
            var wake: [CheckedContinuation<Void, Never>] = []
            while let next = requestWaiters.first, limiter.admitRequest(next.stream.id, now: now) {
                requestWaiters.removeFirst()
                watched[next.stream.id] = next.stream
                wake.append(next.cont)
            }
            return wake
        }
        for c in wake { c.resume() }
    }

    // MARK: Responses

    /// Waits for a response slot for `stream`.
    func acquireResponse(_ stream: QUICStream) async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let granted = lock.withLock { () -> Bool in
                if slotWaiters.isEmpty, limiter.acquireResponse(stream.id) {
                    watched[stream.id] = stream
                    return true
                }
                slotWaiters.append((stream, cont))
                return false
            }
            if granted { cont.resume() }
        }
    }

    /// Waits for `bytes` of the connection's response budget for `stream` (which holds a slot).
    func reserve(_ stream: QUICStream, bytes: Int) async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let now = now()
            let granted = lock.withLock { () -> Bool in
                if byteWaiters.isEmpty, limiter.reserve(stream.id, bytes: bytes, now: now) { return true }
                byteWaiters.append((stream.id, bytes, cont))
                return false
            }
            if granted { cont.resume() }
        }
    }

    /// Response `id` is over (sent and acknowledged, failed or aborted): frees its slot and bytes.
    func releaseResponse(_ id: Int64) {
        let now = now()
        let wake = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            limiter.releaseResponse(id)
            if limiter.requestDeadlines[id] == nil { watched[id] = nil }
            var wake: [CheckedContinuation<Void, Never>] = []
            // A waiter of this very stream (released from outside while it waited) goes on at once.
            if let i = slotWaiters.firstIndex(where: { $0.stream.id == id }) { wake.append(slotWaiters.remove(at: i).cont) }
            if let i = byteWaiters.firstIndex(where: { $0.id == id }) { wake.append(byteWaiters.remove(at: i).cont) }
            while let next = slotWaiters.first, limiter.acquireResponse(next.stream.id) {
                slotWaiters.removeFirst()
                watched[next.stream.id] = next.stream
                wake.append(next.cont)
            }
            while let next = byteWaiters.first, limiter.reserve(next.id, bytes: next.bytes, now: now) {
                byteWaiters.removeFirst()
                wake.append(next.cont)
            }
            return wake
        }
        for c in wake { c.resume() }
    }

    // MARK: Watchdog

    /// Every tick (a quarter of the shorter timeout, at most 1 s): reads how much of each response
    /// the peer acknowledged, then aborts the streams whose request is late and the responses
    /// the peer stopped reading. Runs until its task is cancelled.
    func watch() async {
        let shortest = min(limits.requestTimeoutNanoseconds, limits.responseStallNanoseconds)
        let tick = Duration.nanoseconds(Int64(clamping: max(1_000_000, min(1_000_000_000, shortest / 4))))
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            let sending = lock.withLock { limiter.sendingResponses.compactMap { id in watched[id].map { (id, $0) } } }
            for (id, stream) in sending {
                guard let progress = await stream.sendProgress() else { continue }
                let now = now()
                lock.withLock { limiter.progress(id, acknowledged: progress.acknowledged, now: now) }
            }
            let now = now()
            let (late, stalled) = lock.withLock { () -> ([QUICStream], [QUICStream]) in
                let verdict = limiter.check(now: now)
                return (verdict.lateRequests.compactMap { watched[$0] }, verdict.stalledResponses.compactMap { watched[$0] })
            }
            for stream in late {
                onAbort("request_timeout")
                await stream.abort(code: ChunkErrorCode.limitExceeded)
                requestEnded(stream.id)
            }
            for stream in stalled {
                onAbort("response_stalled")
                await stream.abort(code: ChunkErrorCode.limitExceeded)
                releaseResponse(stream.id)
            }
        }
    }
}
