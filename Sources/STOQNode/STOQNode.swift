/// # STOQNode
///
/// The node runtime: ``Node`` binds the endpoint, opens the store and composes the pieces of the
/// modules below into one running node (chunk server, peer set, health probing, router, edge
/// provider, names, relay, admin endpoint, the services of the layers above);
/// ``NodeConfiguration`` is its settings file and the checks it passes before anything is bound;
/// ``NodeLifecycleService`` runs it under swift-service-lifecycle.
///
/// Layers, bottom up: `STOQExchange` (chunk protocol, server, client, fetcher, shared vocabulary)
/// ← `STOQPeering` (health, routing, relay) and `STOQEdgeNode` (edge provider, names) and
/// `STOQAdmin` (admin HTTP) ← `STOQNode`. This module re-exports them, so `import STOQNode`
/// still gives a user the whole node.
///
/// Must not import: `STOQHTTP` (the front door builds on the node, not the other way round),
/// Nexus or HyperMesh (they plug in through ``NodeService``).
public enum STOQNodeModule {}

@_exported import STOQAdmin
@_exported import STOQEdgeNode
@_exported import STOQExchange
@_exported import STOQPeering
