/// # STOQBenchmarks
///
/// The measuring code behind `make bench` and the `stoq bench …` commands, kept out of the
/// library products so that no user of `STOQ`, `Nexus` or `HyperMesh` links it.
///
/// It owns, one folder per layer measured:
/// - `Routing/`: ``RoutingBenchmark`` (route queries under a concurrent updater, Vivaldi error);
/// - `Nexus/`: ``NexusBenchmark`` (DHT lookups at scale, simulated), ``NexusQUICBenchmark`` and
///   ``RelayBenchmark`` (real QUIC on `[::1]`);
/// - `HyperMesh/`: ``ErasureBenchmark``;
/// - `Edge/`: ``EdgeBenchmark`` (W-TinyLFU beside LRU on a Zipf workload);
/// - `Swarm/`: ``SwarmBenchmark`` (the scheduler under the swarm simulator);
/// - `Transport/`, `Content/`: ``TransportBenchmark`` and ``ContentBenchmark``.
///
/// It may import every layer (it is a target, never a product, and sits beside the CLI);
/// no library target may import it. Test targets may, to check the benchmarks' scenarios.
/// The DHT simulator the Nexus benchmarks drive lives in `NexusSimulation`.
public enum STOQBenchmarks {}
