/// Tuning of a `RoutingMatrix`. The defaults suit networks of up to ~100,000 known nodes.
public struct RoutingConfiguration: Sendable, Equatable {
    /// Overlay edges per node to its nearest nodes by predicted latency (k).
    public var nearestNeighbours = 32
    /// Extra overlay edges per node to pseudo-random far nodes, so clusters stay connected.
    public var longRangeLinks = 8
    /// How often a new snapshot is published.
    public var updateInterval: Duration = .milliseconds(100)
    /// Overlay rows (k-nearest lists) recomputed per publish: new nodes first, then round robin.
    public var overlayRowsPerUpdate = 256
    /// A node not heard of (directly or by newer gossip) for this long stops carrying routes.
    public var staleAfter: Duration = .seconds(30)
    /// Most nodes the matrix will hold (bounded memory against flooding).
    public var maxNodes = 100_000
    /// Most measured links kept per node.
    public var maxLinksPerNode = 32
    /// Node adverts (besides its own) a node puts into one gossip message.
    public var gossipNodesPerMessage = 64
    /// Link adverts per relayed node in one gossip message.
    public var gossipLinksPerNode = 8
    /// Most adverts accepted from one gossip message.
    public var maxAdvertsPerGossip = 4096
    /// Adverts that travelled more hops are refused.
    public var maxHops: UInt8 = 32
    /// Bandwidth assumed for nodes that did not announce one, bits per second.
    public var defaultBandwidthBitsPerSecond: Float = 100e6
    /// EWMA gain of the smoothed RTT.
    public var rttGain: Float = 0.125
    /// EWMA gain of the RTT variation.
    public var rttVariationGain: Float = 0.25
    /// Vivaldi tuning.
    public var vivaldi = VivaldiConfiguration()
    /// Seed of the pseudo-random choices (long-range overlay links).
    public var seed: UInt64 = 0x5354_4F51

    /// Creates the default configuration.
    public init() {}
}

/// One PING/PONG result (or any RTT sample) to a peer, with what the PONG carried.
public struct RoutingMeasurement: Sendable, Equatable {
    /// The peer measured.
    public var peer: RoutingNodeID
    /// The round-trip time.
    public var rtt: Duration
    /// Throughput measured to the peer in bits per second, if any.
    public var bandwidthBitsPerSecond: Float?
    /// Load the peer reported, if any.
    public var load: Float?
    /// The peer's Vivaldi coordinate, if it sent it (needed to move our own coordinate).
    public var coordinate: VivaldiCoordinate?
    /// The peer's region, if it sent it.
    public var region: UInt16?
    /// The peer's position, if it sent it.
    public var geo: GeoCoordinate?

    /// Creates a measurement.
    public init(
        peer: RoutingNodeID, rtt: Duration, bandwidthBitsPerSecond: Float? = nil, load: Float? = nil,
        coordinate: VivaldiCoordinate? = nil, region: UInt16? = nil, geo: GeoCoordinate? = nil
    ) {
        self.peer = peer
        self.rtt = rtt
        self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
        self.load = load
        self.coordinate = coordinate
        self.region = region
        self.geo = geo
    }
}

/// What the matrix knows about one node.
public struct RoutingNodeRecord: Sendable, Equatable {
    /// The node.
    public var node: RoutingNodeID
    /// Its region.
    public var region: UInt16
    /// Its position.
    public var geo: GeoCoordinate
    /// Its Vivaldi coordinate.
    public var coordinate: VivaldiCoordinate
    /// Its load.
    public var load: Float
    /// Its access bandwidth estimate, bits per second.
    public var bandwidthBitsPerSecond: Float
    /// Gossip hops from the owner (1 = a direct peer).
    public var hops: UInt8
    /// Newest version seen from the node.
    public var version: UInt64
    /// When the node was last heard of (local clock).
    public var lastHeard: Duration
    /// Smoothed RTT measured by the owner, if the owner measures this node.
    public var measuredRTT: RTTEstimate?
    /// Whether health monitoring reported it down.
    public var isDown: Bool
}

/// How well the matrix predicts latency: the report asked for by the routing issue.
public struct RoutingPredictionReport: Sendable, Equatable {
    /// Links the owner measures.
    public var measuredLinks: Int
    /// Mean relative error of the Holt (EWMA + trend) prediction of each next sample.
    public var holtMeanRelativeError: Double
    /// Mean relative error of the plain smoothed RTT used as the prediction of the next sample.
    public var ewmaMeanRelativeError: Double
    /// Median relative error of the Vivaldi prediction over the recent samples (before each update).
    public var vivaldiMedianRelativeError: Double
    /// The owner's own Vivaldi error estimate.
    public var vivaldiLocalError: Float
}
