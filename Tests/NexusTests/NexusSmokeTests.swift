import Testing
@testable import Nexus

@Test func moduleLinks() { _ = NexusModule.self }
