import Logging
import STOQContent
import STOQEdge

/// An edge's chunk supply: its local store first, then its upstream peers (origin or other edges).
/// What it fetched is kept when the byte-bounded cache policy (W-TinyLFU by default) admits it, and
/// the chunks the policy evicts leave the store. Concurrent misses for one chunk share one upstream
/// fetch.
public actor EdgeChunkProvider: ChunkProvider {
    /// The local store (cache).
    public let store: any ChunkStore
    private let upstream: [PeerAddress]
    private let peers: PeerSet
    private let logger: Logger
    private var inFlight: [ChunkID: Task<[UInt8]?, any Error>] = [:]
    private var cache: EdgeCache

    /// Cache counters.
    public private(set) var hits = 0
    /// Requests that went upstream.
    public private(set) var misses = 0
    /// Bytes fetched from upstream.
    public private(set) var upstreamBytes = 0

    /// Creates a provider.
    /// - Parameter cacheBytes: the most chunk bytes the edge keeps.
    public init(
        store: any ChunkStore, upstream: [PeerAddress], peers: PeerSet,
        cacheBytes: Int = 1 << 30, policy: EdgeCache.Kind = .tinyLFU, logger: Logger = Logger(label: "stoq.edge")
    ) {
        self.store = store
        self.cache = EdgeCache(kind: policy, capacity: cacheBytes, averageChunkSize: 16 * 1024)
        self.upstream = upstream
        self.peers = peers
        self.logger = logger
    }

    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        if try store.contains(id) {
            do {
                let bytes = try store.read(id)
                hits += 1
                if cache.recordAccess(id, size: bytes.count) == .miss, !cache.contains(id) {
                    // Held since before this process started: let the policy account for it.
                    try evict(cache.admit(id, size: bytes.count))
                }
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
                upstreamBytes += bytes.count
                _ = cache.recordAccess(id, size: bytes.count)
                let admission = cache.admit(id, size: bytes.count)
                if admission.admitted {
                    try store.writeChunk(id, bytes)
                    var batch = CommitBatch()
                    batch.chunks = [(id, bytes.count)]
                    try store.commit(batch)
                }
                try evict(admission)
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

    private func evict(_ admission: CacheAdmission) throws {
        if !admission.evicted.isEmpty { try store.evict(admission.evicted) }
    }

    /// The cache policy's figures (hits, misses, bytes held, evictions).
    public var cacheStats: CacheStats { cache.stats }

    /// Counters for reports.
    public var counters: (hits: Int, misses: Int, upstreamBytes: Int) { (hits, misses, upstreamBytes) }
}
