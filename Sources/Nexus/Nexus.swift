/// The `Nexus` module. See DESIGN.md.
public enum NexusModule {}
