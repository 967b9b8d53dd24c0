import Testing
@testable import STOQRouting

@Test func moduleLinks() { _ = STOQRoutingModule.self }
