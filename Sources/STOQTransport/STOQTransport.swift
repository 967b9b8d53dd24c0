/// The `STOQTransport` module. See DESIGN.md.
public enum STOQTransportModule {}
