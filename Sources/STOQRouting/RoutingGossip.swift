/// What a node announces about itself (or relays about others) in routing gossip.
///
/// The origin stamps `version`; a receiver keeps the highest version it has seen, and for
/// equal versions the smallest hop count (`hops` is the sender's distance; the receiver adds 1).
public struct RoutingNodeAdvert: Sendable, Equatable {
    /// The node described.
    public var node: RoutingNodeID
    /// Version stamped by the node itself (monotonic; newer wins).
    public var version: UInt64
    /// Gossip hops between the sender and the node (0 when the sender is the node).
    public var hops: UInt8
    /// Region number (deployment-defined).
    public var region: UInt16
    /// Geographic position.
    public var geo: GeoCoordinate
    /// The node's Vivaldi coordinate.
    public var coordinate: VivaldiCoordinate
    /// Load, 0 (idle) ... 1 (saturated); values above 1 mean overload.
    public var load: Float
    /// Access bandwidth estimate in bits per second (0 = unknown).
    public var bandwidthBitsPerSecond: Float
    /// How long ago, in milliseconds, the sender last heard fresh news of the node (0 when the
    /// sender is the node). Receivers age the record by it, so a dead node goes stale after
    /// `staleAfter` plus one gossip hop, however far the gossip travelled.
    public var ageMilliseconds: UInt32

    /// Creates an advert.
    public init(
        node: RoutingNodeID, version: UInt64, hops: UInt8 = 0, region: UInt16 = 0, geo: GeoCoordinate = .unknown,
        coordinate: VivaldiCoordinate = .origin, load: Float = 0, bandwidthBitsPerSecond: Float = 0,
        ageMilliseconds: UInt32 = 0
    ) {
        self.node = node
        self.version = version
        self.hops = hops
        self.region = region
        self.geo = geo
        self.coordinate = coordinate
        self.load = load
        self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
        self.ageMilliseconds = ageMilliseconds
    }
}

/// A link one node measured (by PING/PONG), announced in gossip so others can route over it.
public struct RoutingLinkAdvert: Sendable, Equatable {
    /// The measuring node.
    public var from: RoutingNodeID
    /// The measured peer.
    public var to: RoutingNodeID
    /// Version stamped by the measuring node (newer wins).
    public var version: UInt64
    /// Smoothed RTT in milliseconds.
    public var rttMilliseconds: Float
    /// Measured throughput in bits per second (0 = unknown).
    public var bandwidthBitsPerSecond: Float

    /// Creates a link advert.
    public init(from: RoutingNodeID, to: RoutingNodeID, version: UInt64, rttMilliseconds: Float, bandwidthBitsPerSecond: Float = 0) {
        self.from = from
        self.to = to
        self.version = version
        self.rttMilliseconds = rttMilliseconds
        self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
    }
}

/// One gossip message: node and link adverts from `sender`'s routing matrix.
public struct RoutingGossip: Sendable, Equatable {
    /// The node that sent the message.
    public var sender: RoutingNodeID
    /// Node adverts (the sender's own first).
    public var nodes: [RoutingNodeAdvert]
    /// Link adverts.
    public var links: [RoutingLinkAdvert]

    /// Creates a gossip message.
    public init(sender: RoutingNodeID, nodes: [RoutingNodeAdvert], links: [RoutingLinkAdvert]) {
        self.sender = sender
        self.nodes = nodes
        self.links = links
    }

    /// A rough size on the wire in bytes (for simulators and budgets).
    public var approximateSize: Int { 16 + nodes.count * 60 + links.count * 32 }
}

/// What `RoutingMatrix.handleGossip` did with a message.
public struct RoutingGossipOutcome: Sendable, Equatable {
    /// Node adverts that created or refreshed a record.
    public var acceptedNodes = 0
    /// Link adverts that created or refreshed a link.
    public var acceptedLinks = 0
    /// Adverts older than (or equal to) what the matrix holds.
    public var stale = 0
    /// Adverts refused: invalid numbers, too many hops, over the size limits, or the table is full.
    public var rejected = 0

    /// Creates an empty outcome.
    public init() {}
}
