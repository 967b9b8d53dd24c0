import Testing
@testable import STOQTransport

@Test func moduleLinks() { _ = STOQTransportModule.self }
