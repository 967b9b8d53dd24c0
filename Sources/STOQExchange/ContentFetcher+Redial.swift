import STOQSwarm
import STOQTransport

extension ContentFetcher {
    /// Dials `source` again after `delay` nanoseconds and reports the outcome into the fetch's
    /// event stream (``SourceRedials`` decides when). Cancelled with the fetch.
    static func redial(
        _ source: any PeerChunkSource, _ id: SourceID, after delay: UInt64, into events: AsyncStream<Event>.Continuation
    ) -> Task<Void, Never> {
        Task {
            try? await Task.sleep(for: .nanoseconds(Int64(clamping: delay)))
            guard !Task.isCancelled else { return }
            do {
                try await source.redial()
                events.yield(.redial(id, nil))
            } catch {
                guard !Task.isCancelled else { return }
                events.yield(.redial(id, plain(error)))
            }
        }
    }

    /// An error as a person reads it: a transport error's reason without its type name.
    static func plain(_ error: any Error) -> String {
        (error as? STOQError)?.reason ?? "\(error)"
    }
}
