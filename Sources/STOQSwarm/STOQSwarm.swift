/// The `STOQSwarm` module. See DESIGN.md.
public enum STOQSwarmModule {}
