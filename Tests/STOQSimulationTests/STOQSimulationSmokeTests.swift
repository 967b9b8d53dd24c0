import Testing
@testable import STOQSimulation

@Test func moduleLinks() { _ = STOQSimulationModule.self }
