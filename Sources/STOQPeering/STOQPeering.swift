/// # STOQPeering
///
/// How a node lives among its peers, on top of the chunk exchange.
///
/// Owns:
/// - ``PeerHealthService``: probes peers with PING (a `STOQEdge` ``HealthMonitor`` decides), marks
///   them down and up in the ``PeerSet`` and reports changes;
/// - ``NodeRouter``: the node's side of the routing matrix (`STOQRouting`): measurements, gossip
///   over `stoq/1`, and the ``SourcePreference`` a fetch ranks its sources by;
/// - ``RelayService``: carries other nodes' streams to a peer they cannot reach directly;
/// - the multi-peer fetch, ``ContentFetcher/fetch(_:from:peers:health:store:configuration:logger:onProgress:onEvent:router:)``,
///   which joins the fetcher with health probing and the router.
///
/// Must not import: `STOQEdgeNode`, `STOQAdmin`, `STOQNode`, `STOQHTTP`, Nexus or HyperMesh.
public enum STOQPeeringModule {}
