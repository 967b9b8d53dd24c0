/// The `Nexus` module: discovery and trust above the STOQ transport (DESIGN.md §7).
///
/// Pieces, all sans-IO or local (none needs the transport yet):
/// - **Certificate transparency** (`CT/`): ``Merkle`` implements RFC 9162 §2.1 (MTH, PATH, PROOF and
///   the client verification algorithms); ``TransparencyLog`` is an append-only log in SQLite (GRDB,
///   WAL) issuing ``SignedTreeHead``s and ``LogReceipt``s signed with P-256.
/// - **Names** (`Names/`): ``NameRecord`` (signed, versioned, expiring; bounded canonical codec) and
///   ``NameRecordStore`` (higher version wins; stale, forged, expired and foreign-owner records refused).
/// - **DHT** (`DHT/`): ``KademliaNode`` (k = 20, α = 3, replication 3) with ``RoutingTable`` (bounded
///   k-buckets + replacement caches), ``LookupStateMachine`` and ``DHTMessage`` (bounded codec).
/// - **Service selection** (`Selection/`): ``ServiceSelector``.
/// - Not here: the DHT simulator (`NexusSimulation`) and the benchmarks (`NexusBenchmarks`,
///   `Benchmarks/Nexus/`), targets beside the product so that its users do not link them.
///
/// Non-goals for now: running over QUIC (the adapter comes with the transport), NAT traversal,
/// Sybil resistance beyond certificate-bound node ids.
public enum NexusModule {}
