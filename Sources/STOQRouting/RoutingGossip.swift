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
    /// The node's own signature over this advert, when the matrix runs with a verifier (signed
    /// routing): the matrix keeps it with the record and hands it back in `makeGossip`.
    public var proof: RoutingAdvertProof?

    /// Creates an advert.
    public init(
        node: RoutingNodeID, version: UInt64, hops: UInt8 = 0, region: UInt16 = 0, geo: GeoCoordinate = .unknown,
        coordinate: VivaldiCoordinate = .origin, load: Float = 0, bandwidthBitsPerSecond: Float = 0,
        ageMilliseconds: UInt32 = 0, proof: RoutingAdvertProof? = nil
    ) {
        self.proof = proof
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
    /// Of `rejected`: adverts whose proof was missing, expired or not accepted by the verifier,
    /// and unsigned link adverts (signed routing only).
    public var unverified = 0

    /// Creates an empty outcome.
    public init() {}
}

/// A node's signature over its own advert, in whatever form the wire layer carries it (opaque to
/// the matrix). With a ``RoutingAdvertVerifier`` the matrix accepts an advert about a node only
/// with a proof the verifier accepts, takes that node's links only from the proof, keeps the proof
/// with the record, and hands it back in `makeGossip` so that gossip carries adverts unchanged.
public struct RoutingAdvertProof: Sendable, Equatable {
    /// When the signed advert expires, on the matrix's clock (the signer's wall clock); after it
    /// the node carries no routes until a newer advert arrives.
    public var expiresAt: Duration
    /// The links the node signed (each `from` the node, versioned with the advert's version).
    public var links: [RoutingLinkAdvert]
    /// Identifies the signed form (e.g. its signature bytes): equal proofs have equal fingerprints.
    public var fingerprint: [UInt8]
    /// The signed form itself, for the wire layer and the verifier.
    public var signed: any Sendable

    /// Creates a proof.
    public init(expiresAt: Duration, links: [RoutingLinkAdvert], fingerprint: [UInt8], signed: any Sendable) {
        self.expiresAt = expiresAt
        self.links = links
        self.fingerprint = fingerprint
        self.signed = signed
    }

    public static func == (lhs: RoutingAdvertProof, rhs: RoutingAdvertProof) -> Bool {
        lhs.expiresAt == rhs.expiresAt && lhs.links == rhs.links && lhs.fingerprint == rhs.fingerprint
    }
}

/// Decides whether an advert is the node's own (signed routing). Injected into a
/// `RoutingMatrix`, which stays sans-IO: the verifier answers from what it already holds (e.g.
/// certificates whose chains were checked before the gossip was handed over). A simulation runs
/// without one (every advert is taken as it comes) or with a stub.
public protocol RoutingAdvertVerifier: Sendable {
    /// Whether `proof` is a valid signature of `advert.node` over exactly `advert` (its version,
    /// placement, coordinate, load, bandwidth) and `proof.links`, valid at `now`.
    func verify(_ advert: RoutingNodeAdvert, proof: RoutingAdvertProof, now: Duration) -> Bool
}
