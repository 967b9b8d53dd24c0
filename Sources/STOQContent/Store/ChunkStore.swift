/// What one ``ChunkStore/commit(_:)`` records, atomically.
///
/// The chunk bytes named here must already have been written with ``ChunkStore/writeChunk(_:_:)``:
/// bytes first, metadata second, so a crash between the two leaves only orphan files (found and
/// removed by ``ChunkStore/verify(repair:)``), never metadata pointing at missing bytes.
public struct CommitBatch: Sendable {
    /// Chunks (data and manifests) with their stored sizes.
    public var chunks: [(id: ChunkID, size: Int)] = []
    /// Manifest → child edges (the reference counts are the number of edges to a child).
    public var edges: [(parent: ChunkID, child: ChunkID)] = []
    /// Manifests: id, kind ("file", "node", "dir"), plaintext size covered, content type.
    public var manifests: [(id: ChunkID, kind: String, size: UInt64, contentType: String)] = []
    /// Convergent index: tag (SHA-256 of the chunk key) → stored id, so re-putting skips encryption.
    public var plainIndex: [(tag: ChunkID, id: ChunkID)] = []
    /// Roots to pin, with a label.
    public var pins: [(id: ContentID, name: String)] = []
    /// Creates an empty batch.
    public init() {}
}

/// A pinned root.
public struct Pin: Sendable, Hashable {
    /// The content id.
    public var id: ContentID
    /// The label given at put time (usually the path).
    public var name: String
    /// Kind of the root manifest ("file", "node", "dir").
    public var kind: String
    /// Bytes the content covers.
    public var size: UInt64
}

/// Result of a garbage collection.
public struct GCReport: Sendable, Equatable {
    /// Chunks removed.
    public var removedChunks: Int
    /// Stored bytes freed.
    public var freedBytes: Int64
    /// Pack files rewritten by compaction (their live records copied to a new pack, the old file removed).
    public var packsCompacted: Int = 0
    /// Bytes of pack files compaction gave back to the file system.
    public var packBytesReclaimed: Int64 = 0
}

/// Result of ``ChunkStore/verify(repair:)``.
public struct VerifyReport: Sendable, Equatable {
    /// Chunks whose bytes no longer hash to their id.
    public var damaged: [ChunkID] = []
    /// Chunks recorded in the metadata, or referenced by pinned content, whose bytes are gone.
    public var missing: [ChunkID] = []
    /// Chunk files neither the index nor any manifest on disk refers to (e.g. data left by a crash
    /// before commit); a repair moves them to the quarantine.
    public var orphaned: [ChunkID] = []
    /// Chunk files the index does not record but that are manifests or that a manifest names; a repair
    /// records them again (and pins the manifests nothing names), never removes them.
    public var unindexed: [ChunkID] = []
    /// Roots a repair pinned again (manifests found among the unindexed files that nothing names).
    public var recoveredPins: [ContentID] = []
    /// The index rebuild a damaged index (SQLite's integrity check failed) caused, before the checks.
    public var indexRebuilt: IndexRebuildReport?
    /// Where a repair moved damaged, orphaned and temp files (nil when it moved none).
    public var quarantine: String?
    /// How many files a repair moved to ``quarantine``.
    public var quarantinedFiles: Int = 0
    /// Temp files left by an interrupted write.
    public var tempFiles: Int = 0
    /// Pinned roots that can no longer be fully read because of damaged or missing chunks.
    public var brokenPins: [ContentID] = []
    /// Chunks checked.
    public var checked: Int = 0
    /// Whether problems were removed.
    public var repaired: Bool = false
    /// True when nothing is wrong.
    public var isClean: Bool { damaged.isEmpty && missing.isEmpty && orphaned.isEmpty && unindexed.isEmpty && tempFiles == 0 }
    /// True when a repair has left nothing to fix except what only a new put can restore (missing chunks).
    public var isConsistent: Bool { damaged.isEmpty && orphaned.isEmpty && unindexed.isEmpty && tempFiles == 0 }
}

/// Totals of a store.
public struct StoreStats: Sendable, Equatable {
    /// Chunks recorded.
    public var chunks: Int
    /// Stored bytes.
    public var bytes: Int64
    /// Pinned roots.
    public var pins: Int
}

/// One store API, with a memory backend (``MemoryChunkStore``) and a disk backend (``DiskChunkStore``).
///
/// Every read verifies the bytes against the id. Writing is two-phase: ``writeChunk(_:_:)`` puts bytes
/// (durably, for the disk store), then ``commit(_:)`` records metadata in one transaction.
public protocol ChunkStore: AnyObject, Sendable {
    /// Whether metadata records the chunk (its bytes were committed).
    func contains(_ id: ChunkID) throws -> Bool
    /// The chunk's bytes, verified against `id`.
    /// - Throws: `.notFound`, or `.idMismatch` when the stored bytes are damaged.
    func read(_ id: ChunkID) throws -> [UInt8]
    /// Writes a chunk's bytes (not yet referenced by metadata). The caller guarantees `id` = SHA-256(bytes).
    func writeChunk(_ id: ChunkID, _ bytes: [UInt8]) throws
    /// Records metadata atomically (after the bytes it names were written).
    func commit(_ batch: CommitBatch) throws
    /// Looks up convergent-index tags; returns the stored ids of the tags known (and whose chunk exists).
    func lookupPlain(_ tags: [ChunkID]) throws -> [ChunkID: ChunkID]
    /// Which of `ids` metadata records (``contains(_:)`` for many ids at once).
    func containing(_ ids: [ChunkID]) throws -> Set<ChunkID>
    /// Pins a root (it and everything it references survive ``gc()``).
    func pin(_ id: ContentID, name: String) throws
    /// Removes a pin. - Throws: `.notFound` if it was not pinned.
    func unpin(_ id: ContentID) throws
    /// Pinned roots.
    func pins() throws -> [Pin]
    /// Number of manifest edges pointing at `id`.
    func referenceCount(_ id: ChunkID) throws -> Int
    /// Records that chunks were read now (for eviction policies).
    func touch(_ ids: [ChunkID], now: Int64) throws
    /// Removes every chunk not reachable from a pin.
    func gc() throws -> GCReport
    /// Removes the given chunks when nothing refers to them (no manifest edge, not pinned): a cache's
    /// evictions. Chunks still referenced are kept. - Returns: the bytes freed.
    @discardableResult
    func evict(_ ids: [ChunkID]) throws -> Int64
    /// Checks every chunk and file; with `repair`, drops the index entries of damaged and missing
    /// chunks, indexes again the files manifests name, and takes damaged, orphaned and temp files out
    /// (the disk store moves them to its quarantine folder; it never removes a chunk a manifest names).
    func verify(repair: Bool) throws -> VerifyReport
    /// Totals.
    func stats() throws -> StoreStats
}

extension ChunkStore {
    /// One ``contains(_:)`` per id (a backend with an index answers in one query).
    public func containing(_ ids: [ChunkID]) throws -> Set<ChunkID> {
        Set(try ids.filter { try contains($0) })
    }

    /// Writes a chunk and commits it unreferenced (tests and tools).
    public func put(_ bytes: [UInt8]) throws -> ChunkID {
        let id = ChunkID.of(bytes)
        try writeChunk(id, bytes)
        var b = CommitBatch()
        b.chunks = [(id, bytes.count)]
        try commit(b)
        return id
    }
}

/// Reachability from pins over edges (shared by both backends).
enum Reachability {
    static func closure(roots: [ChunkID], children: (ChunkID) throws -> [ChunkID]) rethrows -> Set<ChunkID> {
        var seen = Set<ChunkID>(), stack = roots
        while let x = stack.popLast() {
            if seen.insert(x).inserted { stack += try children(x) }
        }
        return seen
    }
}
