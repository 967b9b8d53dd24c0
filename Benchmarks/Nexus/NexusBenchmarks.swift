/// # NexusBenchmarks
///
/// The measuring code behind `stoq bench dht` and `stoq bench relay` (the `dht` part of
/// `make bench`), kept out of the `Nexus` library product:
/// ``NexusBenchmark`` (DHT lookups on converged or bootstrapped simulated networks, up to a
/// million nodes), ``NexusQUICBenchmark`` (real DHT lookups over QUIC on `[::1]`) and
/// ``RelayBenchmark`` (a relay route chosen by a live router and followed over real QUIC).
///
/// A target, never a product. It may import Nexus, `NexusSimulation` and the `STOQ*` modules,
/// and must not import HyperMesh. No library target imports it; the `stoq` executable and
/// NexusTests do.
public enum NexusBenchmarksModule {}
