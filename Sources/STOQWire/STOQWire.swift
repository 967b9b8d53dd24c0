/// The `STOQWire` module. See DESIGN.md.
public enum STOQWireModule {}
