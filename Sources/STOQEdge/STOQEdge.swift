/// The `STOQEdge` module: sans-IO edge logic (DESIGN.md §5).
///
/// Goals: the policies an edge node runs, as pure state machines fed with events and a
/// clock (`now` in nanoseconds of a monotonic clock the runtime owns):
/// - ``CachePolicy`` (``LRUCachePolicy``, ``TinyLFUCachePolicy``) says which chunks to keep
///   in a byte-bounded cache; the bytes themselves live in a STOQContent store.
/// - ``Prefetcher`` says which chunks of a manifest to fetch ahead of a sequential reader.
/// - ``NameRecord``, ``NameTable`` and ``Subscriptions`` keep mutable names coherent
///   between an origin and its edges.
/// - ``HealthMonitor`` probes peers and reports them down and up.
/// - ``ServeThrottle`` decides which pending response gets the next bytes.
///
/// Non-goals: no sockets, no timers, no disk. The node runtime wires these to QUIC.
public enum STOQEdgeModule {}
