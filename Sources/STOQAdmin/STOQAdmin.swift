/// # STOQAdmin
///
/// The operator's endpoint of a node: ``AdminServer``, plain HTTP/1.1 on a loopback TCP port
/// (`/metrics`, `/status`, `/healthz`), and the rule that it listens on IPv6 only. The metrics it
/// renders are ``NodeMetrics`` (in `STOQExchange`, where the servers count into them); the status
/// document is the node runtime's (`Node.statusJSON()`).
///
/// This is the only node module that speaks TCP or HTTP/1 (swift-nio's `NIOHTTP1`).
/// Must not import: `STOQPeering`, `STOQEdgeNode`, `STOQNode`, `STOQHTTP`, Nexus or HyperMesh.
public enum STOQAdminModule {}
