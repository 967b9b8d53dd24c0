import NIOCore

/// ROUTING_GOSSIP (frame type `0x11`): one node's routing view, exchanged with a peer.
///
/// The wire form of `STOQRouting`'s `RoutingGossip`, kept free of the routing module so that
/// STOQWire stays at the bottom of the layer graph (STOQNode converts between the two). A request
/// carries the asker's view; the answer on the same stream is the receiver's own view, so one
/// round trip teaches both sides.
///
/// Layout: `sender: u64`, `nodeCount: varint (≤ maxNodeAdverts)`, node adverts,
/// `linkCount: varint (≤ maxLinkAdverts)`, link adverts. Node ids are the routing layer's 64-bit
/// ids (the first 8 bytes of a node's SHA-256 `NodeID`). Every number is range-checked when
/// decoded: a non-finite float, a coordinate off the globe, a negative load or a link from a node
/// to itself makes the whole message malformed, so a receiver never applies half a message.
/// Coordinates, heights and RTTs are at most ``maxMilliseconds``.
public struct RoutingGossipMessage: Hashable, Sendable {
    /// The node whose view this is (its routing id).
    public var sender: UInt64
    /// Node adverts (the sender's own first).
    public var nodes: [NodeAdvert]
    /// Link adverts (links measured by the sender, then links it relays).
    public var links: [LinkAdvert]

    /// The most node adverts one message carries (about 70 bytes each).
    public static let maxNodeAdverts = 256
    /// The most link adverts one message carries (about 30 bytes each).
    public static let maxLinkAdverts = 2048
    /// An upper bound of the encoded payload: a receiver can refuse longer frames unread.
    public static let maxPayloadLength = 16 + maxNodeAdverts * 80 + maxLinkAdverts * 40

    /// What a node announces about itself, or relays about another node.
    public struct NodeAdvert: Hashable, Sendable {
        /// The node described (routing id).
        public var node: UInt64
        /// Version stamped by the node itself (newer wins); at most 2^62 − 1.
        public var version: UInt64
        /// Gossip hops between the sender and the node (0: the sender itself).
        public var hops: UInt8
        /// Region number.
        public var region: UInt16
        /// Latitude in degrees, -90 ... 90.
        public var latitude: Float
        /// Longitude in degrees, -180 ... 180.
        public var longitude: Float
        /// The Euclidean part of the node's Vivaldi coordinate (4 components, milliseconds).
        public var coordinate: SIMD4<Float>
        /// Vivaldi height, milliseconds (≥ 0).
        public var height: Float
        /// Vivaldi error estimate, 0 ... 1.
        public var error: Float
        /// Load, ≥ 0 (1 = saturated).
        public var load: Float
        /// Access bandwidth estimate, bits per second (≥ 0; 0 = unknown).
        public var bandwidthBitsPerSecond: Float
        /// How long ago the sender last heard fresh news of the node, milliseconds.
        public var ageMilliseconds: UInt32

        /// Creates an advert.
        public init(
            node: UInt64, version: UInt64, hops: UInt8, region: UInt16, latitude: Float, longitude: Float,
            coordinate: SIMD4<Float>, height: Float, error: Float, load: Float, bandwidthBitsPerSecond: Float, ageMilliseconds: UInt32
        ) {
            self.node = node
            self.version = version
            self.hops = hops
            self.region = region
            self.latitude = latitude
            self.longitude = longitude
            self.coordinate = coordinate
            self.height = height
            self.error = error
            self.load = load
            self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
            self.ageMilliseconds = ageMilliseconds
        }
    }

    /// A link one node measured by PING/PONG.
    public struct LinkAdvert: Hashable, Sendable {
        /// The measuring node.
        public var from: UInt64
        /// The measured peer (≠ `from`).
        public var to: UInt64
        /// Version stamped by the measuring node.
        public var version: UInt64
        /// Smoothed RTT, milliseconds (> 0).
        public var rttMilliseconds: Float
        /// Measured throughput, bits per second (≥ 0; 0 = unknown).
        public var bandwidthBitsPerSecond: Float

        /// Creates a link advert.
        public init(from: UInt64, to: UInt64, version: UInt64, rttMilliseconds: Float, bandwidthBitsPerSecond: Float) {
            self.from = from
            self.to = to
            self.version = version
            self.rttMilliseconds = rttMilliseconds
            self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
        }
    }

    /// Creates a message.
    public init(sender: UInt64, nodes: [NodeAdvert], links: [LinkAdvert]) {
        self.sender = sender
        self.nodes = nodes
        self.links = links
    }

    /// The largest finite float accepted for loads and bandwidths.
    static let largest = Float.greatestFiniteMagnitude
    /// The largest coordinate component, height or RTT accepted, in milliseconds (1,000 s). Larger
    /// ones mean nothing on Earth, and squaring a component near `Float.greatestFiniteMagnitude`
    /// overflows: one such advert turned the receiver's own Vivaldi coordinate into NaN (it moves
    /// toward the peers it probes), after which every peer refused its gossip as malformed.
    public static let maxMilliseconds: Float = 1_000_000

    /// A coordinate, height or RTT as written: a finite one within ±``maxMilliseconds`` (a node's
    /// own values are finite; a non-finite one is written as it is, and refused by the receiver).
    static func clampMilliseconds(_ value: Float) -> Float {
        value.isFinite ? min(max(value, -maxMilliseconds), maxMilliseconds) : value
    }

    /// Writes the payload. Counts beyond the bounds are cut (the first adverts are kept),
    /// versions are capped at 2^62 − 1 and coordinates, heights and RTTs at ±``maxMilliseconds``,
    /// so whatever is written decodes.
    func encode(into w: inout WireWriter) {
        w.integer(sender)
        let nodes = self.nodes.prefix(Self.maxNodeAdverts)
        w.varint(UInt64(nodes.count))
        for n in nodes {
            w.integer(n.node)
            w.varint(min(n.version, VarInt.max))
            w.integer(n.hops)
            RoutingNodeState(
                region: n.region, latitude: n.latitude, longitude: n.longitude, coordinate: n.coordinate, height: n.height,
                error: n.error, load: n.load, bandwidthBitsPerSecond: n.bandwidthBitsPerSecond
            ).encode(into: &w)
            w.varint(UInt64(n.ageMilliseconds))
        }
        let links = self.links.prefix(Self.maxLinkAdverts)
        w.varint(UInt64(links.count))
        for l in links {
            w.integer(l.from)
            w.integer(l.to)
            w.varint(min(l.version, VarInt.max))
            RoutingLinkMeasure(rttMilliseconds: l.rttMilliseconds, bandwidthBitsPerSecond: l.bandwidthBitsPerSecond).encode(into: &w)
        }
    }

    /// Reads a payload; every count and number is bounded.
    static func decode(from r: inout WireReader) throws(WireError) -> RoutingGossipMessage {
        let sender = try r.integer("sender", as: UInt64.self)
        let nodeCount = Int(try r.varint("nodeCount", max: UInt64(maxNodeAdverts)))
        // Each advert takes at least 53 bytes: a count the payload cannot hold is refused before
        // anything is allocated.
        guard nodeCount * 53 <= r.remaining else {
            throw WireError(.truncated, "\(r.context) declares \(nodeCount) node adverts but holds \(r.remaining) bytes")
        }
        var nodes: [NodeAdvert] = []
        nodes.reserveCapacity(nodeCount)
        for _ in 0 ..< nodeCount {
            let node = try r.integer("node", as: UInt64.self)
            let version = try r.varint("version")
            let hops = try r.integer("hops", as: UInt8.self)
            let state = try RoutingNodeState.decode(from: &r)
            let age = UInt32(try r.varint("age", max: UInt64(UInt32.max)))
            nodes.append(NodeAdvert(
                node: node, version: version, hops: hops, region: state.region, latitude: state.latitude, longitude: state.longitude,
                coordinate: state.coordinate, height: state.height, error: state.error, load: state.load,
                bandwidthBitsPerSecond: state.bandwidthBitsPerSecond, ageMilliseconds: age))
        }
        let linkCount = Int(try r.varint("linkCount", max: UInt64(maxLinkAdverts)))
        guard linkCount * 25 <= r.remaining else {
            throw WireError(.truncated, "\(r.context) declares \(linkCount) link adverts but holds \(r.remaining) bytes")
        }
        var links: [LinkAdvert] = []
        links.reserveCapacity(linkCount)
        for _ in 0 ..< linkCount {
            let from = try r.integer("from", as: UInt64.self)
            let to = try r.integer("to", as: UInt64.self)
            guard from != to else { throw WireError(.malformed, "\(r.context) has a link from node \(from) to itself") }
            let version = try r.varint("version")
            let measure = try RoutingLinkMeasure.decode(from: &r)
            links.append(LinkAdvert(
                from: from, to: to, version: version, rttMilliseconds: measure.rttMilliseconds,
                bandwidthBitsPerSecond: measure.bandwidthBitsPerSecond))
        }
        return RoutingGossipMessage(sender: sender, nodes: nodes, links: links)
    }

    /// Fuzz entry point: decodes arbitrary bytes as a ROUTING_GOSSIP payload (no frame header, so
    /// a fuzzer reaches the adverts at once) and traps only if a decoded message does not survive
    /// a round trip (a real bug).
    public static func fuzz(_ bytes: [UInt8]) {
        let frame = Frame(type: STOQMessage.Types.routingGossip, payload: ByteBuffer(bytes: bytes))
        guard let message = try? STOQMessage.decode(frame) else { return }
        precondition((try? STOQMessage.decode(message.frame())) == message, "routing gossip round trip changed \(message)")
    }
}

/// The values a node states about itself, laid out alike in a ROUTING_GOSSIP node advert and in a
/// ROUTING_ADVERTS body: `region: u16`, `latitude: f32 (−90…90)`, `longitude: f32 (−180…180)`,
/// `coordinate: 4 × f32 (±maxMilliseconds)`, `height: f32 (0…maxMilliseconds)`, `error: f32 (0…1)`,
/// `load: f32 (≥ 0)`, `bandwidthBitsPerSecond: f32 (≥ 0)`: 42 bytes. The one reader and writer of
/// these fields, so that both messages bound them the same way.
struct RoutingNodeState: Hashable, Sendable {
    var region: UInt16
    var latitude: Float
    var longitude: Float
    var coordinate: SIMD4<Float>
    var height: Float
    var error: Float
    var load: Float
    var bandwidthBitsPerSecond: Float

    /// Bytes on the wire.
    static let encodedLength = 2 + 10 * 4

    /// Writes the fields; coordinates and the height are clamped to ±``RoutingGossipMessage/maxMilliseconds``.
    func encode(into w: inout WireWriter) {
        w.integer(region)
        w.float(latitude)
        w.float(longitude)
        for axis in 0 ..< 4 { w.float(RoutingGossipMessage.clampMilliseconds(coordinate[axis])) }
        w.float(RoutingGossipMessage.clampMilliseconds(height))
        w.float(error)
        w.float(load)
        w.float(bandwidthBitsPerSecond)
    }

    /// Reads the fields, refusing a non-finite or out-of-range number (`.malformed`) and a short
    /// buffer (`.truncated`).
    static func decode(from r: inout WireReader) throws(WireError) -> RoutingNodeState {
        let m = RoutingGossipMessage.maxMilliseconds
        let region = try r.integer("region", as: UInt16.self)
        let latitude = try r.float("latitude", in: -90 ... 90)
        let longitude = try r.float("longitude", in: -180 ... 180)
        var coordinate = SIMD4<Float>.zero
        for axis in 0 ..< 4 { coordinate[axis] = try r.float("coordinate", in: -m ... m) }
        let height = try r.float("height", in: 0 ... m)
        let error = try r.float("error", in: 0 ... 1)
        let load = try r.float("load", in: 0 ... RoutingGossipMessage.largest)
        let bandwidth = try r.float("bandwidth", in: 0 ... RoutingGossipMessage.largest)
        return RoutingNodeState(
            region: region, latitude: latitude, longitude: longitude, coordinate: coordinate, height: height, error: error,
            load: load, bandwidthBitsPerSecond: bandwidth)
    }
}

/// A link's measurement, laid out alike in a ROUTING_GOSSIP link advert and in a ROUTING_ADVERTS
/// body's link: `rttMilliseconds: f32 (above 0, ≤ maxMilliseconds)`, `bandwidthBitsPerSecond: f32
/// (≥ 0)`: 8 bytes.
struct RoutingLinkMeasure: Hashable, Sendable {
    var rttMilliseconds: Float
    var bandwidthBitsPerSecond: Float

    /// Bytes on the wire.
    static let encodedLength = 8

    /// Writes the fields; the RTT is clamped to ``RoutingGossipMessage/maxMilliseconds``.
    func encode(into w: inout WireWriter) {
        w.float(RoutingGossipMessage.clampMilliseconds(rttMilliseconds))
        w.float(bandwidthBitsPerSecond)
    }

    /// Reads the fields, refusing a non-finite or out-of-range number.
    static func decode(from r: inout WireReader) throws(WireError) -> RoutingLinkMeasure {
        let rtt = try r.float("rtt", in: Float.leastNonzeroMagnitude ... RoutingGossipMessage.maxMilliseconds)
        let bandwidth = try r.float("bandwidth", in: 0 ... RoutingGossipMessage.largest)
        return RoutingLinkMeasure(rttMilliseconds: rtt, bandwidthBitsPerSecond: bandwidth)
    }
}
