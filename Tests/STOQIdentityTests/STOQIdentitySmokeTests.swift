import Testing
@testable import STOQIdentity

@Test func moduleLinks() { _ = STOQIdentityModule.self }
