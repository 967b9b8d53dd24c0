/// # HyperMeshBenchmarks
///
/// The measuring code behind `stoq bench erasure` (scripts/bench-erasure.sh, the
/// `erasure` part of `make bench`), kept out of the `HyperMesh` library product:
/// ``ErasureBenchmark`` times ``ErasureCoder`` encode and rebuild.
///
/// A target, never a product. It may import every layer; no library target imports it. The
/// `stoq` executable and HyperMeshTests do.
public enum HyperMeshBenchmarksModule {}
