import Foundation
import Logging
import NIOConcurrencyHelpers
import STOQContent
import STOQEdgeNode

/// Announces what an edge caches in the DHT and withdraws it on eviction: the edge's cache tells
/// a ``ProviderAnnouncer`` of every manifest it caches and every chunk it drops, and a loop sends
/// what the announcer's rate limit allows, one flush per interval (ADD_PROVIDER for cached
/// content, ADD_PROVIDER with TTL 0 for evicted content).
public final class EdgeAnnouncements: Sendable {
    /// What has been sent so far.
    public struct Counters: Sendable, Hashable {
        /// Keys announced (ADD_PROVIDER operations started).
        public var announced = 0
        /// Keys withdrawn.
        public var withdrawn = 0
        /// Keys not announced because the bound was reached.
        public var skipped = 0
        /// Keys announced now.
        public var current = 0
        /// Changes waiting for the next flush.
        public var pending = 0
    }

    private let announcer: NIOLockedValueBox<ProviderAnnouncer>
    private let dht: NexusDHT
    private let logger: Logger
    private let loop = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// Watches `edge` and announces through `dht`.
    public init(edge: EdgeChunkProvider, dht: NexusDHT, configuration: ProviderAnnouncer.Configuration = .init(), logger: Logger) async {
        let announcer = NIOLockedValueBox(ProviderAnnouncer(configuration: configuration))
        self.announcer = announcer
        self.dht = dht
        self.logger = logger
        await edge.observeCache { change in
            announcer.withLockedValue { a in
                switch change {
                case .cachedManifest(let id): a.cached(NexusID(bytes: id.bytes)!)
                case .removed(let ids): for id in ids { a.evicted(NexusID(bytes: id.bytes)!) }
                }
            }
        }
    }

    /// The counters.
    public var counters: Counters {
        announcer.withLockedValue { a in
            Counters(announced: a.provided, withdrawn: a.withdrawn, skipped: a.skipped, current: a.announced.count, pending: a.pending)
        }
    }

    /// Starts the flush loop (once).
    public func start() {
        loop.withLockedValue { task in
            guard task == nil else { return }
            task = Task { [self] in await self.run() }
        }
    }

    /// Stops the flush loop.
    public func stop() { loop.withLockedValue { $0?.cancel() } }

    private func run() async {
        let interval = announcer.withLockedValue { $0.configuration.interval }
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Int(max(interval, 50))))
            await flush()
        }
    }

    /// Sends what the rate limit allows now; returns the operations performed.
    @discardableResult
    public func flush(now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) async -> [ProviderAnnouncer.Change] {
        let changes = announcer.withLockedValue { $0.flush(now: now) }
        guard !changes.isEmpty else { return [] }
        let dht = self.dht
        let acks = await withTaskGroup(of: Int.self) { group in
            for change in changes {
                group.addTask {
                    switch change {
                    case .provide(let key): return (try? await dht.provide(key: key).count) ?? 0
                    case .withdraw(let key): return (try? await dht.withdraw(key: key).count) ?? 0
                    }
                }
            }
            return await group.reduce(0, +)
        }
        let provided = changes.filter { if case .provide = $0 { return true } else { return false } }.count
        logger.info("edge provider records", metadata: [
            "announced": "\(provided)", "withdrawn": "\(changes.count - provided)", "acknowledgements": "\(acks)",
        ])
        return changes
    }
}
