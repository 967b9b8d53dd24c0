/// The `STOQEdge` module. See DESIGN.md.
public enum STOQEdgeModule {}
