/// The `STOQIdentity` module. See DESIGN.md.
public enum STOQIdentityModule {}
