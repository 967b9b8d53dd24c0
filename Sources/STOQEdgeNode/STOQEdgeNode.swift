/// # STOQEdgeNode
///
/// What makes a node an edge or a name origin: the runtime side of `STOQEdge`'s policies.
///
/// Owns:
/// - ``EdgeChunkProvider``: serves from a byte-bounded cache, fills misses from upstream (one
///   fill per chunk however many readers ask), reads ahead of sequential readers, and answers
///   WANT with what it holds and can fill;
/// - ``NameDirectory``: mutable names published at an origin, resolved and cached at edges, and
///   purged when the origin invalidates them; ``NameService`` and ``InvalidationService`` answer
///   their frame types on the node.
///
/// Must not import: `STOQPeering`, `STOQAdmin`, `STOQNode`, `STOQHTTP`, Nexus or HyperMesh.
public enum STOQEdgeNodeModule {}
