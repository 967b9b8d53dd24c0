import NIOCore

/// A 32-byte identifier on the wire: a chunk id, content id or node id (all SHA-256 digests).
public struct WireID: Hashable, Sendable {
    /// The 32 bytes.
    public let bytes: [UInt8]
    /// Wraps 32 bytes; `nil` for any other length.
    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        self.bytes = Array(bytes)
    }
}

/// The roles a node announces in HELLO.
public struct NodeRoles: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Publishes content (the authority for its names).
    public static let origin = NodeRoles(rawValue: 1 << 0)
    /// Caches and serves content near clients.
    public static let edge = NodeRoles(rawValue: 1 << 1)
    /// Fetches content.
    public static let client = NodeRoles(rawValue: 1 << 2)
    /// Carries streams for others (CDN relay).
    public static let relay = NodeRoles(rawValue: 1 << 3)
}

/// The status of a chunk response.
public enum ChunkStatus: UInt64, Hashable, Sendable {
    /// The bytes follow the header.
    case ok = 0
    /// The node does not hold the chunk.
    case notFound = 1
    /// The requested range lies outside the chunk.
    case invalidRange = 2
    /// The node is overloaded; try elsewhere.
    case busy = 3
    /// Something else went wrong on the node.
    case internalError = 4
}

/// The STOQ core messages (DESIGN.md §3). One request per bidirectional stream; the response header
/// is a frame and bulk bytes follow raw until FIN.
public enum STOQMessage: Hashable, Sendable {
    /// First message on a control stream: who the sender is.
    case hello(Hello)
    /// A probe; the peer answers with ``pong(_:)``.
    case ping(nonce: UInt64, sentAtMicros: UInt64)
    /// The answer to a ping, with the responder's load and bandwidth estimates.
    case pong(Pong)
    /// Which chunks of a manifest the sender holds, and how (``HaveFlags``: e.g. it fills misses
    /// from upstream, so it can supply the other chunks too). An empty `flags` is not written, so
    /// a HAVE without flags is the original encoding.
    case have(contentID: WireID, chunks: ChunkBitfield, flags: HaveFlags = [])
    /// Which chunks of a manifest the sender wants.
    case want(contentID: WireID, chunks: ChunkBitfield)
    /// A request for a byte range of a chunk (`length == 0` means to the end).
    case getChunk(chunkID: WireID, offset: UInt64, length: UInt64)
    /// The response header to ``getChunk(chunkID:offset:length:)``; on `.ok`, `length` raw bytes follow.
    case chunkHeader(status: ChunkStatus, totalLength: UInt64, offset: UInt64, length: UInt64)
    /// A mutable name changed: caches holding it drop it (pushed by the origin).
    case invalidate(name: String, version: UInt64)
    /// A request-level error.
    case error(code: UInt64, message: String)
    /// Asks a node for its status (operators' `stoq status`).
    case statusRequest
    /// A node's status as a JSON document (at most 256 KiB).
    case status(json: String)
    /// Sent in place of ``chunkHeader(status:totalLength:offset:length:)`` while the server is
    /// still filling the chunk (an edge fetching a miss from upstream), repeated until the header
    /// follows: a sign of life for the requester's stall detection. `waitedMillis` is how long
    /// the server has waited so far.
    case chunkPending(waitedMillis: UInt64)
    /// Asks for the signed record of a mutable name. `subscribe`: the asker keeps the record and
    /// wants the new version pushed (an edge asking its origin).
    case nameResolve(name: String, subscribe: Bool)
    /// A signed name record (STOQEdge's canonical `NameRecord` encoding, at most
    /// ``maxNameRecordLength`` bytes): the answer to ``nameResolve(name:subscribe:)``.
    case nameRecord(record: [UInt8])
    /// Asks an origin to publish a signed name record (a new version).
    case namePublish(record: [UInt8])
    /// The answer to ``namePublish(record:)``: the version now current and how many holders were
    /// told (``invalidate(name:version:)`` pushed to them).
    case namePublished(version: UInt64, notified: UInt64)
    /// A node's routing view (``RoutingGossipMessage``): sent as a request, answered with the
    /// receiver's own view on the same stream.
    case routingGossip(RoutingGossipMessage)
    /// Asks a relay node to carry this stream to `host`:`port` (CDN relay, DESIGN.md §6). The
    /// requester then writes its request for the target on the same stream, as on a direct one,
    /// and reads the target's answer. With a `target` node id the relay refuses a node at that
    /// address whose certificate is another node's. On refusal the relay answers ``error(code:message:)``.
    case relayOpen(target: WireID?, host: String, port: UInt16)

    /// HELLO contents.
    public struct Hello: Hashable, Sendable {
        /// The protocol version spoken.
        public var version: UInt64
        /// The sender's node id.
        public var nodeID: WireID
        /// The sender's region name.
        public var region: String
        /// Latitude in degrees.
        public var latitude: Double
        /// Longitude in degrees.
        public var longitude: Double
        /// The sender's roles.
        public var roles: NodeRoles
        /// Capability bits (reserved, 0 today).
        public var capabilities: UInt64

        /// Creates a HELLO.
        public init(version: UInt64 = STOQMessage.protocolVersion, nodeID: WireID, region: String, latitude: Double, longitude: Double, roles: NodeRoles, capabilities: UInt64 = 0) {
            self.version = version
            self.nodeID = nodeID
            self.region = region
            self.latitude = latitude
            self.longitude = longitude
            self.roles = roles
            self.capabilities = capabilities
        }
    }

    /// PONG contents.
    public struct Pong: Hashable, Sendable {
        /// The nonce of the ping answered.
        public var nonce: UInt64
        /// The ping's send time, echoed (the prober's clock).
        public var echoSentAtMicros: UInt64
        /// The responder's load in permille (0–1000).
        public var loadPermille: UInt64
        /// The responder's spare upload bandwidth estimate, bytes/s.
        public var bandwidthBytesPerSecond: UInt64
        /// Transfers the responder is serving now.
        public var activeTransfers: UInt64
        /// Creates a PONG.
        public init(nonce: UInt64, echoSentAtMicros: UInt64, loadPermille: UInt64, bandwidthBytesPerSecond: UInt64, activeTransfers: UInt64) {
            self.nonce = nonce
            self.echoSentAtMicros = echoSentAtMicros
            self.loadPermille = loadPermille
            self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
            self.activeTransfers = activeTransfers
        }
    }

    /// The version of this message set.
    public static let protocolVersion: UInt64 = 1
    /// The ALPN of the STOQ protocol.
    public static let alpn = "stoq/1"

    /// Frame types of the core messages.
    public enum Types {
        public static let hello = FrameType(rawValue: 0x01)
        public static let ping = FrameType(rawValue: 0x02)
        public static let pong = FrameType(rawValue: 0x03)
        public static let have = FrameType(rawValue: 0x04)
        public static let want = FrameType(rawValue: 0x05)
        public static let getChunk = FrameType(rawValue: 0x06)
        public static let chunkHeader = FrameType(rawValue: 0x07)
        public static let invalidate = FrameType(rawValue: 0x08)
        public static let error = FrameType(rawValue: 0x09)
        public static let statusRequest = FrameType(rawValue: 0x0A)
        public static let status = FrameType(rawValue: 0x0B)
        public static let chunkPending = FrameType(rawValue: 0x0C)
        public static let nameResolve = FrameType(rawValue: 0x0D)
        public static let nameRecord = FrameType(rawValue: 0x0E)
        public static let namePublish = FrameType(rawValue: 0x0F)
        public static let namePublished = FrameType(rawValue: 0x10)
        public static let routingGossip = FrameType(rawValue: 0x11)
        public static let relayOpen = FrameType(rawValue: 0x12)
    }

    static let maxRegionLength = 64
    static let maxNameLength = 255
    static let maxErrorMessageLength = 1024
    static let maxStatusLength = 256 * 1024
    /// The longest relay target host (a DNS name is at most 253 bytes).
    public static let maxHostLength = 255
    /// The longest signed name record carried (STOQEdge's `NameRecord.maxEncodedSize` is 434).
    public static let maxNameRecordLength = 1024

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .hello(let h):
            type = Types.hello
            w.varint(h.version)
            w.bytes(h.nodeID.bytes)
            w.string(String(h.region.utf8.prefix(Self.maxRegionLength))!)
            w.double(h.latitude)
            w.double(h.longitude)
            w.varint(h.roles.rawValue)
            w.varint(h.capabilities)
        case .ping(let nonce, let sent):
            type = Types.ping
            w.integer(nonce)
            w.varint(sent)
        case .pong(let p):
            type = Types.pong
            w.integer(p.nonce)
            w.varint(p.echoSentAtMicros)
            w.varint(min(p.loadPermille, 1000))
            w.varint(p.bandwidthBytesPerSecond)
            w.varint(p.activeTransfers)
        case .have(let id, let bits, let flags):
            type = Types.have
            w.bytes(id.bytes)
            w.varint(UInt64(bits.count))
            w.bytes(bits.bytes)
            if flags.rawValue != 0 { w.varint(flags.rawValue) }
        case .want(let id, let bits):
            type = Types.want
            w.bytes(id.bytes)
            w.varint(UInt64(bits.count))
            w.bytes(bits.bytes)
        case .getChunk(let id, let offset, let length):
            type = Types.getChunk
            w.bytes(id.bytes)
            w.varint(offset)
            w.varint(length)
        case .chunkHeader(let status, let total, let offset, let length):
            type = Types.chunkHeader
            w.varint(status.rawValue)
            w.varint(total)
            w.varint(offset)
            w.varint(length)
        case .invalidate(let name, let version):
            type = Types.invalidate
            w.string(name)
            w.varint(version)
        case .error(let code, let message):
            type = Types.error
            w.varint(code)
            w.string(String(message.utf8.prefix(Self.maxErrorMessageLength)) ?? "error")
        case .statusRequest:
            type = Types.statusRequest
        case .status(let json):
            type = Types.status
            w.string(String(json.utf8.prefix(Self.maxStatusLength)) ?? "{}")
        case .chunkPending(let waited):
            type = Types.chunkPending
            w.varint(waited)
        case .nameResolve(let name, let subscribe):
            type = Types.nameResolve
            w.string(String(name.utf8.prefix(Self.maxNameLength)) ?? "")
            w.varint(subscribe ? 1 : 0)
        case .nameRecord(let record), .namePublish(let record):
            if case .nameRecord = self { type = Types.nameRecord } else { type = Types.namePublish }
            w.lengthPrefixedBytes(record.prefix(Self.maxNameRecordLength))
        case .namePublished(let version, let notified):
            type = Types.namePublished
            w.varint(version)
            w.varint(notified)
        case .routingGossip(let gossip):
            type = Types.routingGossip
            gossip.encode(into: &w)
        case .relayOpen(let target, let host, let port):
            type = Types.relayOpen
            w.varint(target == nil ? 0 : 1)
            if let target { w.bytes(target.bytes) }
            w.string(String(host.utf8.prefix(Self.maxHostLength)) ?? "")
            w.varint(UInt64(port))
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// Encodes the message as bytes ready to write on a stream.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes a frame.
    /// - Returns: the message, or `nil` for an unknown type the receiver may ignore.
    /// - Throws: ``WireError`` for malformed payloads and unknown required types.
    public static func decode(_ frame: Frame) throws(WireError) -> STOQMessage? {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: STOQMessage
        switch frame.type {
        case Types.hello:
            let version = try r.varint("version")
            guard version == protocolVersion else {
                throw WireError(.unsupportedVersion, "peer speaks STOQ wire version \(version); this node speaks \(protocolVersion)")
            }
            let id = WireID(try r.bytes("nodeID", count: 32))!
            let region = try r.string("region", max: maxRegionLength)
            let lat = try r.double("latitude")
            let lon = try r.double("longitude")
            guard (-90...90).contains(lat), (-180...180).contains(lon) else {
                throw WireError(.malformed, "HELLO coordinates out of range: \(lat), \(lon)")
            }
            let roles = NodeRoles(rawValue: try r.varint("roles"))
            let caps = try r.varint("capabilities")
            message = .hello(Hello(version: version, nodeID: id, region: region, latitude: lat, longitude: lon, roles: roles, capabilities: caps))
        case Types.ping:
            message = .ping(nonce: try r.integer("nonce"), sentAtMicros: try r.varint("sentAt"))
        case Types.pong:
            message = .pong(Pong(
                nonce: try r.integer("nonce"),
                echoSentAtMicros: try r.varint("echoSentAt"),
                loadPermille: try r.varint("load", max: 1000),
                bandwidthBytesPerSecond: try r.varint("bandwidth"),
                activeTransfers: try r.varint("activeTransfers")
            ))
        case Types.have, Types.want:
            let id = WireID(try r.bytes("contentID", count: 32))!
            let count = try r.varint("chunkCount", max: UInt64(ChunkBitfield.maximumCount))
            let bytes = try r.bytes("bitfield", count: (Int(count) + 7) / 8)
            let bits = try ChunkBitfield(count: Int(count), bytes: bytes)
            if frame.type == Types.have {
                // Flags are optional (absent: none); bits this version does not know are kept, not refused.
                let flags = r.remaining > 0 ? HaveFlags(rawValue: try r.varint("flags")) : []
                // One encoding per message: an empty flags field is left out, never written as 0.
                if flags.isEmpty, frame.payload.readableBytes > 32 + VarInt.length(of: count) + bytes.count {
                    throw WireError(.trailingBytes, "HAVE carries an empty flags field; leave it out")
                }
                message = .have(contentID: id, chunks: bits, flags: flags)
            } else {
                message = .want(contentID: id, chunks: bits)
            }
        case Types.getChunk:
            message = .getChunk(chunkID: WireID(try r.bytes("chunkID", count: 32))!, offset: try r.varint("offset"), length: try r.varint("length"))
        case Types.chunkHeader:
            let raw = try r.varint("status")
            guard let status = ChunkStatus(rawValue: raw) else { throw WireError(.malformed, "unknown chunk status \(raw)") }
            message = .chunkHeader(status: status, totalLength: try r.varint("totalLength"), offset: try r.varint("offset"), length: try r.varint("length"))
        case Types.invalidate:
            message = .invalidate(name: try r.string("name", max: maxNameLength), version: try r.varint("version"))
        case Types.error:
            message = .error(code: try r.varint("code"), message: try r.string("message", max: maxErrorMessageLength))
        case Types.statusRequest:
            message = .statusRequest
        case Types.status:
            message = .status(json: try r.string("json", max: maxStatusLength))
        case Types.chunkPending:
            message = .chunkPending(waitedMillis: try r.varint("waitedMillis"))
        case Types.nameResolve:
            let name = try r.string("name", max: maxNameLength)
            message = .nameResolve(name: name, subscribe: try r.varint("subscribe", max: 1) == 1)
        case Types.nameRecord:
            message = .nameRecord(record: try r.lengthPrefixedBytes("record", max: maxNameRecordLength))
        case Types.namePublish:
            message = .namePublish(record: try r.lengthPrefixedBytes("record", max: maxNameRecordLength))
        case Types.namePublished:
            message = .namePublished(version: try r.varint("version"), notified: try r.varint("notified"))
        case Types.routingGossip:
            message = .routingGossip(try RoutingGossipMessage.decode(from: &r))
        case Types.relayOpen:
            let hasTarget = try r.varint("hasTarget", max: 1) == 1
            let target = hasTarget ? WireID(try r.bytes("target", count: 32))! : nil
            let host = try r.string("host", max: maxHostLength)
            guard !host.isEmpty else { throw WireError(.malformed, "RELAY_OPEN names no host") }
            message = .relayOpen(target: target, host: host, port: UInt16(try r.varint("port", max: UInt64(UInt16.max))))
        default:
            if frame.type.isIgnorableWhenUnknown { return nil }
            throw WireError(.unknownType, "unknown STOQ frame type \(frame.type)")
        }
        try r.finish()
        return message
    }

    /// Fuzz entry point: decodes arbitrary bytes as a stream of frames, re-encodes whatever decodes,
    /// and traps only if a decoded message does not survive a round trip (a real bug).
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: 1 << 16)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while true {
            guard let frame = try? decoder.pollFrame() else { return }
            guard let message = try? decode(frame) else { continue }
            let again = try? decode(message.frame())
            precondition(again == message, "round trip changed \(message)")
        }
    }
}

/// How a node holds the chunks its HAVE lists (a trailing varint of the HAVE frame, absent when
/// empty). A receiver ignores bits it does not know (a newer sender's), so new flags can be added
/// without breaking older receivers that know this field.
public struct HaveFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The sender fills misses from upstream (an edge): it can supply every chunk, the listed ones
    /// from its own cache (cheaper, sooner) and the others after fetching them. With a bitfield of
    /// zero chunks it holds none of them locally (it lacks even the manifests).
    public static let fillsFromUpstream = HaveFlags(rawValue: 1 << 0)
    /// The flags this version understands.
    public static let known: HaveFlags = [.fillsFromUpstream]
}

/// Which chunks of a manifest a node holds or wants: one bit per chunk, most significant bit first.
public struct ChunkBitfield: Hashable, Sendable {
    /// The number of chunks described.
    public let count: Int
    /// The packed bits; unused bits of the last byte are zero.
    public private(set) var bytes: [UInt8]

    /// The most chunks one bitfield describes (a 4 TiB file at 1 MiB chunks).
    public static let maximumCount = 1 << 22

    /// An all-clear (or all-set) bitfield.
    ///
    /// - Precondition: `0 ≤ count ≤ maximumCount`. Only local counts reach it: the server checks a
    ///   content's chunk count against `maximumCount` before it builds a HAVE, and decoded bitfields
    ///   go through the throwing initialiser below.
    public init(count: Int, allSet: Bool = false) {
        precondition(count >= 0 && count <= Self.maximumCount)
        self.count = count
        self.bytes = [UInt8](repeating: allSet ? 0xFF : 0, count: (count + 7) / 8)
        if allSet { clearPadding() }
    }

    /// Wraps packed bits, checking the length and that padding bits are zero.
    public init(count: Int, bytes: [UInt8]) throws(WireError) {
        guard count >= 0, count <= Self.maximumCount, bytes.count == (count + 7) / 8 else {
            throw WireError(.malformed, "a bitfield of \(count) chunks needs \((count + 7) / 8) bytes, got \(bytes.count)")
        }
        self.count = count
        self.bytes = bytes
        let padded = self.bytes
        clearPadding()
        guard padded == self.bytes else { throw WireError(.malformed, "bitfield padding bits are not zero") }
    }

    /// Whether chunk `index` is set.
    public subscript(index: Int) -> Bool {
        get { bytes[index >> 3] & (0x80 >> UInt8(index & 7)) != 0 }
        set {
            if newValue { bytes[index >> 3] |= 0x80 >> UInt8(index & 7) } else { bytes[index >> 3] &= ~(0x80 >> UInt8(index & 7)) }
        }
    }

    /// The number of set bits.
    public var setCount: Int { bytes.reduce(0) { $0 + $1.nonzeroBitCount } }

    private mutating func clearPadding() {
        let extra = bytes.count * 8 - count
        if extra > 0 { bytes[bytes.count - 1] &= UInt8(truncatingIfNeeded: 0xFF << extra) }
    }
}
