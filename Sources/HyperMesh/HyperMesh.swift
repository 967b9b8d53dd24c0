/// The `HyperMesh` module. See DESIGN.md.
public enum HyperMeshModule {}
