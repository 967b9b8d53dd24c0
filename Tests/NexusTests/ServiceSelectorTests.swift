import Testing
@testable import Nexus

@Suite struct ServiceSelectorTests {
    let a = ServiceCandidate(endpoint: ServiceEndpoint(nodeID: .sha256([1])), location: GeoLocation(latitude: 48.85, longitude: 2.35))   // Paris
    let b = ServiceCandidate(endpoint: ServiceEndpoint(nodeID: .sha256([2])), location: GeoLocation(latitude: 40.71, longitude: -74.0))  // New York
    let c = ServiceCandidate(endpoint: ServiceEndpoint(nodeID: .sha256([3])), location: GeoLocation(latitude: 35.68, longitude: 139.69)) // Tokyo
    let berlin = GeoLocation(latitude: 52.52, longitude: 13.40)

    func metrics(_ lat: [NexusID: Double], _ health: [NexusID: NodeHealth] = [:]) -> ClosureServiceMetrics {
        ClosureServiceMetrics(latency: { lat[$0] }, health: { health[$0] ?? .up })
    }

    @Test func lowestLatencyHealthyWins() throws {
        let m = metrics([a.endpoint.nodeID: 30, b.endpoint.nodeID: 12, c.endpoint.nodeID: 80])
        let s = try ServiceSelector.select(from: [a, b, c], metrics: m, clientLocation: berlin)
        #expect(s.candidate == b && s.basis == .latency(12))
        let down = metrics([a.endpoint.nodeID: 30, b.endpoint.nodeID: 12, c.endpoint.nodeID: 80], [b.endpoint.nodeID: .down])
        #expect(try ServiceSelector.select(from: [a, b, c], metrics: down, clientLocation: berlin).candidate == a)
    }

    @Test func fallsBackToProximity() throws {
        let s = try ServiceSelector.select(from: [c, b, a], metrics: metrics([:]), clientLocation: berlin)
        #expect(s.candidate == a)
        guard case .proximity(let km) = s.basis else { Issue.record("expected proximity"); return }
        #expect(abs(km - 878) < 15) // Paris–Berlin great circle
    }

    @Test func allDownIsAClearError() throws {
        let m = metrics([:], [a.endpoint.nodeID: .down, b.endpoint.nodeID: .down])
        let e = #expect(throws: NexusError.self) { try ServiceSelector.select(from: [a, b], metrics: m, clientLocation: nil) }
        #expect(e?.code == .noHealthyNode)
        let degraded = metrics([a.endpoint.nodeID: 5], [a.endpoint.nodeID: .down, b.endpoint.nodeID: .degraded])
        let pick = try ServiceSelector.select(from: [a, b], metrics: degraded, clientLocation: nil)
        #expect(pick.candidate == b)
    }
}
