import Logging
import STOQContent

/// An edge's chunk supply: its local store first, then its upstream peers (origin or other edges),
/// keeping what it fetched so the next request is a hit. Concurrent misses for one chunk share one
/// upstream fetch.
public actor EdgeChunkProvider: ChunkProvider {
    /// The local store (cache).
    public let store: any ChunkStore
    private let upstream: [PeerAddress]
    private let peers: PeerSet
    private let logger: Logger
    private var inFlight: [ChunkID: Task<[UInt8]?, any Error>] = [:]

    /// Cache counters.
    public private(set) var hits = 0
    /// Requests that went upstream.
    public private(set) var misses = 0
    /// Bytes fetched from upstream.
    public private(set) var upstreamBytes = 0

    /// Creates a provider.
    public init(store: any ChunkStore, upstream: [PeerAddress], peers: PeerSet, logger: Logger = Logger(label: "stoq.edge")) {
        self.store = store
        self.upstream = upstream
        self.peers = peers
        self.logger = logger
    }

    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        if try store.contains(id) {
            do {
                let bytes = try store.read(id)
                hits += 1
                return bytes
            } catch let error as ContentError where error.code == .idMismatch || error.code == .notFound {
                logger.warning("cached chunk damaged; fetching again", metadata: ["chunk": "\(id.short)"])
            }
        }
        if let task = inFlight[id] { return try await task.value }
        misses += 1
        let task = Task { try await self.fetchUpstream(id) }
        inFlight[id] = task
        defer { inFlight[id] = nil }
        return try await task.value
    }

    private func fetchUpstream(_ id: ChunkID) async throws -> [UInt8]? {
        guard !upstream.isEmpty else { return nil }
        let start = Int(id.bytes[0]) % upstream.count
        for offset in 0..<upstream.count {
            let address = upstream[(start + offset) % upstream.count]
            do {
                let client = try await peers.client(for: address)
                let bytes = try await client.fetchChunk(id)
                try store.writeChunk(id, bytes)
                var batch = CommitBatch()
                batch.chunks = [(id, bytes.count)]
                try store.commit(batch)
                upstreamBytes += bytes.count
                return bytes
            } catch let error as NodeError where error.code == .notFound {
                continue
            } catch {
                logger.info("upstream failed", metadata: ["peer": "\(address)", "error": "\(error)"])
                await peers.drop(address)
            }
        }
        return nil
    }

    /// Counters for reports.
    public var counters: (hits: Int, misses: Int, upstreamBytes: Int) { (hits, misses, upstreamBytes) }
}
