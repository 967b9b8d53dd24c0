import Testing
@testable import STOQEdge

@Test func moduleLinks() { _ = STOQEdgeModule.self }
