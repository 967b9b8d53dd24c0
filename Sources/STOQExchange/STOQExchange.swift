/// # STOQExchange
///
/// The `stoq/1` chunk exchange over real QUIC, and the vocabulary every node module shares.
///
/// Owns:
/// - the chunk protocol: ``ChunkServer`` (answers request streams: GET_CHUNK, WANT/HAVE, PING,
///   STATUS, keep-alive while an edge fills), ``PeerClient`` (asks them), ``ChunkProvider`` and
///   ``StoreChunkProvider``, ``ServeThrottleSettings`` and the per-connection ``PeerLimits``;
/// - peer connections: ``PeerSet`` (dials, keeps and reuses them, directly or through a relay);
/// - the fetcher core: ``ContentFetcher`` pumps a `STOQSwarm` scheduler over ``ChunkSource``s into
///   a store, ``ContentPlan`` reads a content tree's manifests, ``FetchReport`` says what happened;
/// - the shared vocabulary of the node layer: ``PeerAddress``, ``NodeError``, ``NodeMetrics``,
///   ``NodeService`` (the hook the layers above plug their frame types into) and ``StreamServer``.
///
/// Must not import: `STOQPeering`, `STOQEdgeNode`, `STOQAdmin`, `STOQNode`, `STOQHTTP`, Nexus or
/// HyperMesh (they all build on this module; `Package.swift`'s target graph enforces it).
public enum STOQExchangeModule {}
