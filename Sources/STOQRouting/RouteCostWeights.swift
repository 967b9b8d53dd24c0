/// Weights of the route cost. Every term is in "milliseconds-equivalent":
///
/// `cost(edge u→v) = latency·rttMs + transfer·(size·8 / bandwidth)·1000
///                  + load·load(v) + geographic·km/1000 + hop`
///
/// and a route costs the sum of its edges. With the defaults, 1 ms of RTT, 1 ms of
/// transfer time, a 10 % load increase on a node the route enters and 4 extra ms per
/// relay hop weigh about the same.
public struct RouteCostWeights: Sendable, Hashable {
    /// Weight per millisecond of round-trip latency.
    public var latency: Float
    /// Weight per millisecond of transfer time (`size / bandwidth`).
    public var transfer: Float
    /// Weight per unit of load (0 = idle, 1 = saturated) of each node entered.
    public var load: Float
    /// Weight per 1000 km of great-circle distance (haversine).
    public var geographic: Float
    /// Constant weight per hop (penalises relays).
    public var hop: Float

    /// Creates weights (defaults favour latency, then transfer time).
    public init(latency: Float = 1, transfer: Float = 1, load: Float = 10, geographic: Float = 0.5, hop: Float = 4) {
        self.latency = latency
        self.transfer = transfer
        self.load = load
        self.geographic = geographic
        self.hop = hop
    }

    /// Latency only (plus a tiny hop term to prefer fewer hops among equals).
    public static let latencyOnly = RouteCostWeights(latency: 1, transfer: 0, load: 0, geographic: 0, hop: 0.001)

    /// Whether every weight is finite and non-negative.
    public var isValid: Bool {
        [latency, transfer, load, geographic, hop].allSatisfy { $0.isFinite && $0 >= 0 }
    }
}
