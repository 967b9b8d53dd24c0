/// The `STOQContent` module. See DESIGN.md.
public enum STOQContentModule {}
