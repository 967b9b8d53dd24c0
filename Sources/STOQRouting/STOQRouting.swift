/// The `STOQRouting` module. See DESIGN.md.
public enum STOQRoutingModule {}
