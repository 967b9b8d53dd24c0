import Testing
@testable import STOQSwarm

@Test func moduleLinks() { _ = STOQSwarmModule.self }
