import Testing
@testable import STOQContent

@Test func moduleLinks() { _ = STOQContentModule.self }
