import Foundation

/// A node's health as seen by the prober (DESIGN.md §5: 1 s interval, 100 ms timeout, 3 failures = down).
public enum NodeHealth: Hashable, Sendable {
    /// Answering probes.
    case up
    /// Missed some probes but not yet down.
    case degraded
    /// Marked down.
    case down
    /// Never probed.
    case unknown
}

/// A point on Earth in degrees.
public struct GeoLocation: Hashable, Sendable {
    /// Latitude, degrees (−90…90).
    public var latitude: Double
    /// Longitude, degrees (−180…180).
    public var longitude: Double

    /// Creates a location.
    public init(latitude: Double, longitude: Double) { self.latitude = latitude; self.longitude = longitude }

    /// Great-circle distance in kilometres (haversine, mean Earth radius 6371 km).
    public func distance(to other: GeoLocation) -> Double {
        let r = 6371.0, rad = Double.pi / 180
        let dLat = (other.latitude - latitude) * rad, dLon = (other.longitude - longitude) * rad
        let a = sin(dLat / 2) * sin(dLat / 2) + cos(latitude * rad) * cos(other.latitude * rad) * sin(dLon / 2) * sin(dLon / 2)
        return 2 * r * asin(min(1, sqrt(a)))
    }
}

/// Where latency and health come from; STOQRouting (Vivaldi, EWMA) and the health prober plug in here.
public protocol ServiceMetrics {
    /// Predicted round-trip time to `node` in milliseconds, or nil if unknown.
    func predictedLatency(to node: NexusID) -> Double?
    /// The node's health.
    func health(of node: NexusID) -> NodeHealth
}

/// Closure-backed ``ServiceMetrics``.
public struct ClosureServiceMetrics: ServiceMetrics {
    let latency: (NexusID) -> Double?
    let healthOf: (NexusID) -> NodeHealth
    /// Creates metrics from two closures.
    public init(latency: @escaping (NexusID) -> Double?, health: @escaping (NexusID) -> NodeHealth) { self.latency = latency; self.healthOf = health }
    /// Calls the latency closure.
    public func predictedLatency(to node: NexusID) -> Double? { latency(node) }
    /// Calls the health closure.
    public func health(of node: NexusID) -> NodeHealth { healthOf(node) }
}

/// One candidate node of a service.
public struct ServiceCandidate: Hashable, Sendable {
    /// The node.
    public var endpoint: ServiceEndpoint
    /// Where it is, if known.
    public var location: GeoLocation?
    /// Creates a candidate.
    public init(endpoint: ServiceEndpoint, location: GeoLocation? = nil) { self.endpoint = endpoint; self.location = location }
}

/// The chosen node and why.
public struct ServiceSelection: Hashable, Sendable {
    /// Why this node was chosen.
    public enum Basis: Hashable, Sendable {
        /// Lowest predicted latency (ms).
        case latency(Double)
        /// Nearest by great-circle distance (km), no latency known.
        case proximity(Double)
        /// Neither latency nor location known: the first healthy node in id order.
        case arbitrary
    }
    /// The chosen node.
    public var candidate: ServiceCandidate
    /// Why.
    public var basis: Basis
}

/// Anycast selection: the healthy node with the lowest predicted latency, falling back to
/// geographic proximity (haversine) when no latency is known.
///
/// `up` and `unknown` nodes are eligible (a node never probed is not known to be bad); `degraded`
/// nodes only if no `up`/`unknown` node exists; `down` nodes never. Ties break by node id so the
/// choice is deterministic.
public enum ServiceSelector {
    /// Chooses a node.
    /// - Parameters:
    ///   - candidates: the service's nodes (e.g. from its name record).
    ///   - metrics: predicted latency and health.
    ///   - clientLocation: where the client is, for the proximity fallback.
    /// - Throws: ``NexusError`` `.noHealthyNode` if every node is down (or there are none).
    public static func select(from candidates: [ServiceCandidate], metrics: some ServiceMetrics, clientLocation: GeoLocation?) throws(NexusError) -> ServiceSelection {
        let sorted = candidates.sorted { $0.endpoint.nodeID < $1.endpoint.nodeID }
        var eligible = sorted.filter { [.up, .unknown].contains(metrics.health(of: $0.endpoint.nodeID)) }
        if eligible.isEmpty { eligible = sorted.filter { metrics.health(of: $0.endpoint.nodeID) == .degraded } }
        guard !eligible.isEmpty else {
            throw NexusError(.noHealthyNode, "none of the service's \(candidates.count) nodes is healthy; retry later or publish more nodes")
        }
        var best: (ServiceCandidate, Double)?
        for c in eligible {
            if let l = metrics.predictedLatency(to: c.endpoint.nodeID), l.isFinite, l >= 0, best == nil || l < best!.1 { best = (c, l) }
        }
        if let best { return ServiceSelection(candidate: best.0, basis: .latency(best.1)) }
        if let clientLocation {
            var near: (ServiceCandidate, Double)?
            for c in eligible {
                if let loc = c.location {
                    let d = loc.distance(to: clientLocation)
                    if near == nil || d < near!.1 { near = (c, d) }
                }
            }
            if let near { return ServiceSelection(candidate: near.0, basis: .proximity(near.1)) }
        }
        return ServiceSelection(candidate: eligible[0], basis: .arbitrary)
    }
}
