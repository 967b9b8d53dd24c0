/// # STOQInterop
///
/// QUIC interop tooling: hq-interop (`GET /path` per stream, ALPN `hq-interop`) file serving
/// (``HQFileServer``) and fetching (``HQClient``), which `stoq serve` and `stoq fetch` run against
/// other QUIC stacks (`Tests/Interop`). It exercises `STOQTransport`; it is no part of a CDN node.
///
/// A target, never a product: library users do not link it.
/// Must not import: the node modules above `STOQExchange`, `STOQHTTP`, Nexus or HyperMesh.
public enum STOQInteropModule {}
