/// The `STOQSimulation` module. See DESIGN.md.
public enum STOQSimulationModule {}
