import Testing
@testable import HyperMesh

@Test func moduleLinks() { _ = HyperMeshModule.self }
