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

/// The weights of `RouteCostWeights` for one transfer size, premultiplied the way the searches use
/// them: an edge `u → v` costs `edge(e) + load · load(v)`.
struct EdgeCostTerms {
    let latency: Float
    /// Transfer weight times the size in bits, in ms per (seconds per bit).
    let transfer: Float
    let load: Float
    /// Weight per kilometre.
    let geographic: Float
    let hop: Float

    init(_ weights: RouteCostWeights, size: Int) {
        latency = weights.latency
        transfer = weights.transfer * Float(max(0, size)) * 8 * 1000
        load = weights.load
        geographic = weights.geographic / 1000
        hop = weights.hop
    }

    /// The cost of an edge without the load of the node it enters.
    @inline(__always)
    func edge(_ edge: RoutingEdge) -> Float {
        latency * edge.latency + transfer * edge.secondsPerBit + geographic * edge.kilometres + hop
    }
}
