import NIOCore

/// The edge registry (docs/PROTOCOL.md, "Edge registry"): an edge tells the origin it dialled
/// where it listens and where it is, and anyone with a node certificate asks the origin for its
/// edges, nearest first.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x1C | EDGE_REGISTER | `host:string(≤64)` `port:varint(≤65535)` `region:string(≤64)` `location` |
/// | 0x1D | EDGE_REGISTERED | `ttlSeconds:varint(1…86400)` |
/// | 0x1E | EDGES_REQUEST | `region:string(≤64)` `location` `limit:varint(1…256)` |
/// | 0x1F | EDGES | `count:varint(≤256)` then per edge `nodeID:bytes32` `host` `port` `region` `location` `expiresIn:varint(≤86400)` |
///
/// `location` is `0x00` (unknown) or `0x01` followed by `latitude:f64` `longitude:f64` (degrees,
/// −90…90 and −180…180).
public enum EdgeRegistryMessage: Hashable, Sendable {
    /// An edge registers (or renews) itself with the origin over a connection it dialled. The
    /// origin takes the node id from the connection's certificate, never from the payload.
    case register(EdgeAnnouncement)
    /// The origin took the registration: it lasts `ttlSeconds` unless renewed.
    case registered(ttlSeconds: UInt64)
    /// Asks the origin for its registered edges, ordered by nearness to the asker's `region`
    /// and `location`.
    case edgesRequest(region: String, location: WireLocation?, limit: UInt64)
    /// The answer to ``edgesRequest(region:location:limit:)``: nearest first.
    case edges([RegisteredEdge])

    /// What an edge says about itself.
    public struct EdgeAnnouncement: Hashable, Sendable {
        /// The host it listens on (an IPv6 literal; `::` means "the address you see me at").
        public var host: String
        /// The port it listens on.
        public var port: UInt16
        /// Its region (from its certificate), or empty.
        public var region: String
        /// Its location, when configured.
        public var location: WireLocation?

        /// Creates an announcement.
        public init(host: String, port: UInt16, region: String, location: WireLocation?) {
            self.host = host
            self.port = port
            self.region = region
            self.location = location
        }
    }

    /// One edge in an ``edges(_:)`` answer.
    public struct RegisteredEdge: Hashable, Sendable {
        /// The edge's node id (SHA-256 of its certificate's public key).
        public var nodeID: WireID
        /// Where it listens.
        public var announcement: EdgeAnnouncement
        /// Seconds until its registration lapses unless renewed.
        public var expiresIn: UInt64

        /// Creates an entry.
        public init(nodeID: WireID, announcement: EdgeAnnouncement, expiresIn: UInt64) {
            self.nodeID = nodeID
            self.announcement = announcement
            self.expiresIn = expiresIn
        }
    }

    /// A position in degrees.
    public struct WireLocation: Hashable, Sendable {
        /// Latitude, −90…90.
        public var latitude: Double
        /// Longitude, −180…180.
        public var longitude: Double
        /// Creates a location (not checked: the decoder checks what arrives).
        public init(latitude: Double, longitude: Double) {
            self.latitude = latitude
            self.longitude = longitude
        }
    }

    /// Frame types.
    public enum Types {
        public static let register = FrameType(rawValue: 0x1C)
        public static let registered = FrameType(rawValue: 0x1D)
        public static let edgesRequest = FrameType(rawValue: 0x1E)
        public static let edges = FrameType(rawValue: 0x1F)
    }

    /// The longest host carried (an IPv6 literal is at most 45 bytes, with a zone a little more).
    public static let maximumHostLength = 64
    /// The longest region carried.
    public static let maximumRegionLength = 64
    /// The most edges one EDGES answer carries (and the largest `limit` asked for).
    public static let maximumEdges = 256
    /// The longest registration an origin grants, in seconds.
    public static let maximumTTLSeconds: UInt64 = 86_400
    /// The most bytes any of these frames' payloads holds (256 edges of at most 197 bytes each).
    public static let maximumPayloadLength = 64 * 1024

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x1C...0x1F).contains(type.rawValue) }

    /// Encodes the message as one frame (over-long strings are cut, lists capped at ``maximumEdges``).
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .register(let a):
            type = Types.register
            Self.write(a, to: &w)
        case .registered(let ttl):
            type = Types.registered
            w.varint(min(max(ttl, 1), Self.maximumTTLSeconds))
        case .edgesRequest(let region, let location, let limit):
            type = Types.edgesRequest
            w.string(Self.clip(region, Self.maximumRegionLength))
            Self.write(location, to: &w)
            w.varint(min(max(limit, 1), UInt64(Self.maximumEdges)))
        case .edges(let list):
            type = Types.edges
            let kept = list.prefix(Self.maximumEdges)
            w.varint(UInt64(kept.count))
            for edge in kept {
                w.bytes(edge.nodeID.bytes)
                Self.write(edge.announcement, to: &w)
                w.varint(min(edge.expiresIn, Self.maximumTTLSeconds))
            }
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes one of these frames; every field is bounded.
    /// - Throws: ``WireError`` for a malformed payload, or `.unknownType` for a frame of another type.
    public static func decode(_ frame: Frame) throws(WireError) -> EdgeRegistryMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: EdgeRegistryMessage
        switch frame.type {
        case Types.register:
            message = .register(try readAnnouncement(&r))
        case Types.registered:
            let ttl = try r.varint("ttlSeconds", max: maximumTTLSeconds)
            guard ttl > 0 else { throw WireError(.malformed, "\(frame.type).ttlSeconds must be at least 1") }
            message = .registered(ttlSeconds: ttl)
        case Types.edgesRequest:
            let region = try r.string("region", max: maximumRegionLength)
            let location = try readLocation(&r)
            let limit = try r.varint("limit", max: UInt64(maximumEdges))
            guard limit > 0 else { throw WireError(.malformed, "\(frame.type).limit must be at least 1") }
            message = .edgesRequest(region: region, location: location, limit: limit)
        case Types.edges:
            let count = try r.varint("count", max: UInt64(maximumEdges))
            var list: [RegisteredEdge] = []
            list.reserveCapacity(Int(count))
            for _ in 0 ..< count {
                let id = WireID(try r.bytes("nodeID", count: 32))!
                let announcement = try readAnnouncement(&r)
                list.append(RegisteredEdge(nodeID: id, announcement: announcement, expiresIn: try r.varint("expiresIn", max: maximumTTLSeconds)))
            }
            message = .edges(list)
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not an edge registry message")
        }
        try r.finish()
        return message
    }

    private static func clip(_ text: String, _ bound: Int) -> String {
        var out = ""
        for character in text {
            guard out.utf8.count + character.utf8.count <= bound else { break }
            out.append(character)
        }
        return out
    }

    private static func write(_ a: EdgeAnnouncement, to w: inout WireWriter) {
        w.string(clip(a.host, maximumHostLength))
        w.varint(UInt64(a.port))
        w.string(clip(a.region, maximumRegionLength))
        write(a.location, to: &w)
    }

    private static func write(_ location: WireLocation?, to w: inout WireWriter) {
        if let location {
            w.integer(UInt8(1))
            w.double(location.latitude)
            w.double(location.longitude)
        } else {
            w.integer(UInt8(0))
        }
    }

    private static func readAnnouncement(_ r: inout WireReader) throws(WireError) -> EdgeAnnouncement {
        let host = try r.string("host", max: maximumHostLength)
        let port = UInt16(try r.varint("port", max: UInt64(UInt16.max)))
        let region = try r.string("region", max: maximumRegionLength)
        return EdgeAnnouncement(host: host, port: port, region: region, location: try readLocation(&r))
    }

    private static func readLocation(_ r: inout WireReader) throws(WireError) -> WireLocation? {
        switch try r.integer("location", as: UInt8.self) {
        case 0: return nil
        case 1:
            let latitude = try r.double("latitude")
            let longitude = try r.double("longitude")
            guard abs(latitude) <= 90, abs(longitude) <= 180 else {
                throw WireError(.malformed, "\(r.context).location \(latitude),\(longitude) is outside −90…90, −180…180")
            }
            return WireLocation(latitude: latitude, longitude: longitude)
        case let other:
            throw WireError(.malformed, "\(r.context).location flag is \(other); it must be 0 or 1")
        }
    }

    /// Fuzz entry point: decodes arbitrary bytes as frames; traps only on a round-trip mismatch.
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: maximumPayloadLength)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while let frame = try? decoder.pollFrame() {
            guard handles(frame.type), let message = try? decode(frame) else { continue }
            precondition((try? decode(message.frame())) == message, "EdgeRegistryMessage round trip")
        }
    }
}
