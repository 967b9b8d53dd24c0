/// # STOQBenchmarks
///
/// The measuring code behind `make bench` and the `stoq bench …` commands for the `STOQ*`
/// layers, kept out of the `STOQ` library product so that no user of it links benchmark code.
///
/// It owns, one folder per layer measured:
/// - `Routing/`: ``RoutingBenchmark`` (route queries under a concurrent updater, Vivaldi error,
///   beside a dense Dijkstra);
/// - `Swarm/`: ``SwarmBenchmark`` (the scheduler's goodput and failover under the swarm simulator)
///   and ``RealSwarmBenchmark`` (the same over real QUIC on `[::1]`, `stoq node` processes as sources);
/// - `Edge/`: ``EdgeBenchmark`` (W-TinyLFU beside LRU on a Zipf workload);
/// - `Transport/`: ``TransportBenchmark`` (one STOQ connection over `[::1]`);
/// - `Content/`: ``ContentBenchmark`` (chunking and hashing throughput, JSON for
///   scripts/bench-content.sh).
///
/// It is a target, never a product. It may import any `STOQ*` module and must not import Nexus or
/// HyperMesh (their benchmarks are `NexusBenchmarks` and `HyperMeshBenchmarks`, one layer up, so
/// the layering of the benchmarks is the layering of the products). No library target imports
/// it; the `stoq` executable does, and the `STOQ*` test targets may, to check its scenarios.
public enum STOQBenchmarksModule {}
