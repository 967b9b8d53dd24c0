import Testing
@testable import STOQWire

@Test func moduleLinks() { _ = STOQWireModule.self }
