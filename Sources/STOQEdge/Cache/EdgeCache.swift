import STOQContent

/// An edge node's cache policy, chosen by name in the node's configuration.
///
/// A thin wrapper over ``CachePolicy`` so the runtime holds one concrete type whatever the
/// configured policy. The bytes live in the node's ``ChunkStore``: on every request call
/// ``recordAccess(_:size:)``; on a miss, fetch, verify, then ``admit(_:size:)`` and delete
/// the evicted chunks from the store (and the offered chunk too when it was not admitted).
public struct EdgeCache: Sendable {
    /// Which policy to run.
    public enum Kind: String, Sendable, CaseIterable {
        /// Plain byte-bounded LRU.
        case lru
        /// W-TinyLFU (the default): better hit ratios on skewed workloads, scan resistant.
        case tinyLFU = "tinylfu"
    }

    /// The configured policy.
    public let kind: Kind
    private var policy: any CachePolicy

    /// Creates an empty cache.
    /// - Parameters:
    ///   - kind: the policy.
    ///   - capacity: the byte bound.
    ///   - averageChunkSize: expected chunk size (sizes W-TinyLFU's frequency sketch).
    public init(kind: Kind = .tinyLFU, capacity: Int, averageChunkSize: Int = 64 * 1024) {
        self.kind = kind
        switch kind {
        case .lru: policy = LRUCachePolicy(capacity: capacity)
        case .tinyLFU: policy = TinyLFUCachePolicy(capacity: capacity, averageEntrySize: averageChunkSize)
        }
    }

    /// The byte bound.
    public var capacity: Int { policy.capacity }
    /// Counters (hits, misses, bytes, evictions).
    public var stats: CacheStats { policy.stats }

    /// See ``CachePolicy/recordAccess(_:size:)``.
    public mutating func recordAccess(_ id: ChunkID, size: Int) -> CacheAccess { policy.recordAccess(id, size: size) }
    /// See ``CachePolicy/admit(_:size:)``.
    public mutating func admit(_ id: ChunkID, size: Int) -> CacheAdmission { policy.admit(id, size: size) }
    /// See ``CachePolicy/remove(_:)``.
    @discardableResult
    public mutating func remove(_ id: ChunkID) -> Bool { policy.remove(id) }
    /// See ``CachePolicy/pin(_:size:)``.
    public mutating func pin(_ id: ChunkID, size: Int) -> CacheAdmission { policy.pin(id, size: size) }
    /// See ``CachePolicy/unpin(_:)``.
    @discardableResult
    public mutating func unpin(_ id: ChunkID) -> Bool { policy.unpin(id) }
    /// Whether the chunk is resident.
    public func contains(_ id: ChunkID) -> Bool { policy.contains(id) }
    /// Whether the chunk is pinned.
    public func isPinned(_ id: ChunkID) -> Bool { policy.isPinned(id) }
}
