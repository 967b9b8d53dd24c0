import STOQContent

/// A change in an edge's cache that the edge announces to others (Nexus provider records).
public enum EdgeCacheChange: Sendable, Hashable {
    /// A manifest chunk (a content id: a file's or a directory's manifest) entered the cache.
    case cachedManifest(ChunkID)
    /// These chunks left the cache (evicted by the policy, or purged).
    case removed([ChunkID])
}

extension EdgeChunkProvider {
    /// Calls `observer` (synchronously, on the edge's executor: keep it short, e.g. queue the change)
    /// whenever a manifest is cached and whenever chunks leave the cache. One observer; a second
    /// call replaces the first.
    public func observeCache(_ observer: @escaping @Sendable (EdgeCacheChange) -> Void) {
        cacheObserver = observer
    }

    /// Tells the observer when `bytes` is a manifest (what readers ask for first, by content id).
    func noteCached(_ id: ChunkID, _ bytes: [UInt8]) {
        guard let cacheObserver, bytes.starts(with: FileManifest.magic) || bytes.starts(with: DirectoryManifest.magic) else { return }
        cacheObserver(.cachedManifest(id))
    }
}
