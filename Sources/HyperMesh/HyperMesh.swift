// HyperMesh: erasure-coded, encrypted block storage across regions (DESIGN.md §8).
//
// Goals
// - A block survives the loss of any m of its k + m shards (default 10 + 4) and reads back
//   bit-identical; with more lost, it fails saying how many are missing and how many are needed.
// - Storage nodes see only ciphertext: each block has its own random key, sealed (HPKE, P-256)
//   for its readers in the manifest.
// - Shards land on distinct nodes spread across regions, weighted by free space; the plan says why.
// - Storage is provable: signed receipts per shard (commit at k + 2), a hash-chained audit log,
//   and random-range challenges that flag lost shards for repair.
// - The protocol logic is sans-IO (placement, put, read, challenges, repair), driven with an
//   injected clock, so it runs the same under the simulator and over real QUIC.
// - Erasure coding within 10 % of raw ISA-L (scripts/bench-erasure.sh measures it).
//
// Non-goals (for now)
// - Networking: the put/read state machines emit actions; transports and Nexus discovery plug in
//   at the edges.
// - Choosing a zstd binding: compression sits behind `BlockCompressor` (STOQContent provides zstd).
// - Erasure patterns over more than 64 shards.

/// The `HyperMesh` module: see ``ErasureCoder``, ``BlockCodec``, ``BlockManifest``,
/// ``PlacementPlanner``, ``StorageReceipt``, ``AuditLog``, ``ChallengeTracker``,
/// ``BlockPutStateMachine``, ``BlockReadStateMachine`` and ``BlockRepair``. Its benchmark
/// (`ErasureBenchmark`) is in the `HyperMeshBenchmarks` target, not in this product.
public enum HyperMeshModule {}
