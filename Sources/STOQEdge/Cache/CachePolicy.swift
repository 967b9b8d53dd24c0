import Foundation
import STOQContent

/// Whether a looked-up chunk was resident in the cache.
public enum CacheAccess: Sendable, Equatable {
    /// The chunk is resident: serve it from the store.
    case hit
    /// The chunk is not resident: fetch it, then offer it with `admit(_:size:)`.
    case miss
}

/// The outcome of offering a chunk to a cache.
public struct CacheAdmission: Sendable, Equatable {
    /// Whether the offered chunk is now resident. When false, the runtime should not keep
    /// its bytes (the policy judged it less valuable than what it would have displaced).
    public var admitted: Bool
    /// Chunks the policy dropped to make room; the runtime deletes their bytes. Never
    /// contains the offered chunk itself, never contains a pinned chunk.
    public var evicted: [ChunkID]

    /// Creates an admission outcome.
    public init(admitted: Bool, evicted: [ChunkID]) {
        self.admitted = admitted
        self.evicted = evicted
    }
}

/// Counters a cache policy keeps (exported as metrics by the runtime, shown by `stoq status`).
public struct CacheStats: Sendable, Equatable, CustomStringConvertible {
    /// Accesses that found the chunk resident.
    public var hits: UInt64 = 0
    /// Accesses that did not.
    public var misses: UInt64 = 0
    /// Chunks admitted.
    public var admissions: UInt64 = 0
    /// Chunks offered but refused (by the admission filter or because they cannot fit).
    public var rejections: UInt64 = 0
    /// Chunks evicted to make room.
    public var evictions: UInt64 = 0
    /// Bytes evicted to make room.
    public var evictedBytes: UInt64 = 0
    /// Bytes resident now (pinned included); never above the capacity.
    public var bytes: Int = 0
    /// Bytes of pinned chunks now.
    public var pinnedBytes: Int = 0
    /// Chunks resident now.
    public var count: Int = 0

    /// Creates zeroed counters.
    public init() {}

    /// `hits / (hits + misses)`, or 0 before any access.
    public var hitRatio: Double {
        let total = hits + misses
        return total == 0 ? 0 : Double(hits) / Double(total)
    }

    /// One line for logs and `stoq status`.
    public var description: String {
        "hits=\(hits) misses=\(misses) ratio=\(String(format: "%.4f", hitRatio)) bytes=\(bytes) pinned=\(pinnedBytes) count=\(count) evictions=\(evictions)"
    }
}

/// A byte-bounded cache policy over chunk ids.
///
/// The policy tracks ids and sizes only; the bytes live in a ``ChunkStore`` that the
/// runtime manages. The runtime calls ``recordAccess(_:size:)`` on every request, and on a
/// miss fetches the chunk and calls ``admit(_:size:)``, deleting whatever the policy evicts.
/// The sum of resident sizes never exceeds ``capacity``. Pinned chunks are never evicted.
public protocol CachePolicy: Sendable {
    /// The byte bound.
    var capacity: Int { get }
    /// Counters.
    var stats: CacheStats { get }

    /// Records a request for `id`; a hit refreshes the chunk's recency and frequency, a miss
    /// still counts toward its frequency (so a popular chunk is admitted later).
    /// - Parameters:
    ///   - id: the requested chunk.
    ///   - size: its size in bytes (used only by policies that weigh misses by size).
    mutating func recordAccess(_ id: ChunkID, size: Int) -> CacheAccess

    /// Offers a fetched chunk; the policy admits it or not and names what it evicts.
    /// Offering a resident chunk changes nothing and reports it admitted.
    /// - Parameters:
    ///   - id: the chunk.
    ///   - size: its size in bytes; a chunk larger than the capacity is always refused.
    mutating func admit(_ id: ChunkID, size: Int) -> CacheAdmission

    /// Forgets a chunk (deleted by the runtime, or found corrupt). Pinned or not.
    /// - Returns: whether it was resident.
    @discardableResult
    mutating func remove(_ id: ChunkID) -> Bool

    /// Pins a chunk: inserted if absent (bypassing admission) and never evicted until
    /// unpinned. Refused (admitted false) when pinned bytes would exceed the capacity.
    /// - Parameters:
    ///   - id: the chunk.
    ///   - size: its size in bytes.
    mutating func pin(_ id: ChunkID, size: Int) -> CacheAdmission

    /// Unpins a chunk; it stays resident and becomes evictable again.
    /// - Returns: whether it was pinned.
    @discardableResult
    mutating func unpin(_ id: ChunkID) -> Bool

    /// Whether a chunk is resident (no side effect on recency or frequency).
    func contains(_ id: ChunkID) -> Bool

    /// Whether a chunk is pinned.
    func isPinned(_ id: ChunkID) -> Bool
}
