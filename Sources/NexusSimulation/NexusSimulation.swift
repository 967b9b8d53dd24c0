/// # NexusSimulation
///
/// Harnesses that run many Nexus DHT nodes in one process under a virtual clock:
/// ``DHTSimulator`` (an in-memory network of ``KademliaNode``s with per-pair latencies and
/// killable nodes) and ``ConvergedView`` (the routing tables a converged network would hold,
/// built from a global view of the ids).
///
/// They serve NexusTests and `NexusBenchmarks`, so they are a target of their own and not part
/// of the `Nexus` product. They cannot live in `STOQSimulation`: no `STOQ*` module may depend on
/// Nexus. Imports Nexus and `STOQSimulation`; must not import HyperMesh.
public enum NexusSimulationModule {}
