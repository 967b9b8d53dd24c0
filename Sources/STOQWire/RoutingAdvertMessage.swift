import NIOCore

/// ROUTING_ADVERTS (frame type `0x26`): signed routing gossip (docs/PROTOCOL.md, "Signed routing
/// adverts").
///
/// Each node signs its own advert (``Body``: node id, sequence number, expiry, placement, Vivaldi
/// coordinate, load, bandwidth and the links it measured) with its certificate key; gossip carries
/// adverts **unchanged**, so a receiver checks every advert against its signer's certificate, not
/// against the peer that forwarded it. The request carries the asker's adverts, the answer on the
/// same stream the receiver's.
///
/// Layout: `certCount: varint (≤ 256)`, `certCount` × `certificate: bytes(1…8192)` (DER leaf
/// certificates of the signers), `advertCount: varint (≤ 256)`, then per advert `hops: u8`,
/// `ageMilliseconds: varint (≤ 2^32−1)`, `certificate: bytes32` (SHA-256 of the signer's DER
/// certificate: one in this message's table, or one the receiver already holds), `body: bytes(≤
/// 1024)` (the signed ``Body``), `signature: bytes(1…80)` (ECDSA P-256 SHA-256, DER, over
/// ``signingLabel`` followed by `body`). Only `hops` and `ageMilliseconds` change on the way; they are
/// not signed.
public struct RoutingAdvertMessage: Hashable, Sendable {
    /// Signers' DER certificates (each at most once).
    public var certificates: [[UInt8]]
    /// The adverts.
    public var adverts: [Advert]

    /// Frame type `0x26`.
    public static let type = FrameType(rawValue: 0x26)
    /// The most certificates in one message.
    public static let maxCertificates = 256
    /// The longest certificate.
    public static let maxCertificateLength = 8192
    /// The most adverts in one message.
    public static let maxAdverts = 256
    /// The longest advert body.
    public static let maxBodyLength = 1024
    /// The longest signature (a DER P-256 ECDSA signature is at most 72 bytes).
    public static let maxSignatureLength = 80
    /// The largest payload a node accepts (and writes): 256 KiB. A sender stops adding adverts
    /// and certificates before it would exceed it.
    public static let maxPayloadLength = 256 * 1024
    /// What a signature covers before the body: the ASCII label and a zero byte.
    public static let signingLabel: [UInt8] = Array("STOQ routing advert v1".utf8) + [0]

    /// One advert as carried: the signed body and signature, plus the two hop-by-hop fields.
    public struct Advert: Hashable, Sendable {
        /// Gossip hops between the sender and the node (0: the sender's own advert). Not signed.
        public var hops: UInt8
        /// How long ago the sender last heard fresh news of the node, ms. Not signed.
        public var ageMilliseconds: UInt32
        /// SHA-256 of the signer's DER certificate.
        public var certificateDigest: [UInt8]
        /// The signed ``Body``, byte for byte as the signer wrote it.
        public var body: [UInt8]
        /// The signer's signature over ``RoutingAdvertMessage/signingLabel`` + `body`.
        public var signature: [UInt8]

        /// Creates an advert.
        public init(hops: UInt8, ageMilliseconds: UInt32, certificateDigest: [UInt8], body: [UInt8], signature: [UInt8]) {
            self.hops = hops
            self.ageMilliseconds = ageMilliseconds
            self.certificateDigest = certificateDigest
            self.body = body
            self.signature = signature
        }

        /// Bytes it takes on the wire.
        public var encodedLength: Int {
            1 + VarInt.length(of: UInt64(ageMilliseconds)) + 32 + VarInt.length(of: UInt64(body.count)) + body.count
                + VarInt.length(of: UInt64(signature.count)) + signature.count
        }
    }

    /// What a node signs about itself.
    ///
    /// Layout: `nodeID: bytes32`, `sequence: varint (1 … 2^62−1)`, `expiresAtMillis: varint` (Unix
    /// time, ms), `region: u16`, `latitude: f32 (−90…90)`, `longitude: f32 (−180…180)`,
    /// `coordinate: 4 × f32`, `height: f32`, `error: f32 (0…1)`, `load: f32 (≥ 0)`,
    /// `bandwidthBitsPerSecond: f32 (≥ 0)`, `linkCount: varint (≤ 32)`, then per link `to: u64`
    /// (routing id), `rttMilliseconds: f32 (> 0)`, `bandwidthBitsPerSecond: f32 (≥ 0)`. Coordinates,
    /// heights and RTTs are within ±1,000,000 ms as in ROUTING_GOSSIP.
    public struct Body: Hashable, Sendable {
        /// The signer's full node id (SHA-256 of its certificate's SubjectPublicKeyInfo).
        public var nodeID: [UInt8]
        /// Sequence number, monotonic per node (a node uses its wall clock in nanoseconds).
        public var sequence: UInt64
        /// When the advert expires, ms since 1970.
        public var expiresAtMillis: UInt64
        /// Region number.
        public var region: UInt16
        /// Latitude in degrees.
        public var latitude: Float
        /// Longitude in degrees.
        public var longitude: Float
        /// Vivaldi coordinate (ms).
        public var coordinate: SIMD4<Float>
        /// Vivaldi height (ms).
        public var height: Float
        /// Vivaldi error, 0 … 1.
        public var error: Float
        /// Load, ≥ 0.
        public var load: Float
        /// Access bandwidth, bits per second.
        public var bandwidthBitsPerSecond: Float
        /// The links the node measured.
        public var links: [Link]

        /// The most links in one advert.
        public static let maxLinks = 32

        /// A link the signer measured.
        public struct Link: Hashable, Sendable {
            /// The measured peer (routing id).
            public var to: UInt64
            /// Smoothed RTT, ms (> 0).
            public var rttMilliseconds: Float
            /// Measured throughput, bits per second.
            public var bandwidthBitsPerSecond: Float

            /// Creates a link.
            public init(to: UInt64, rttMilliseconds: Float, bandwidthBitsPerSecond: Float) {
                self.to = to
                self.rttMilliseconds = rttMilliseconds
                self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
            }
        }

        /// Creates a body.
        public init(
            nodeID: [UInt8], sequence: UInt64, expiresAtMillis: UInt64, region: UInt16, latitude: Float, longitude: Float,
            coordinate: SIMD4<Float>, height: Float, error: Float, load: Float, bandwidthBitsPerSecond: Float, links: [Link]
        ) {
            self.nodeID = nodeID
            self.sequence = sequence
            self.expiresAtMillis = expiresAtMillis
            self.region = region
            self.latitude = latitude
            self.longitude = longitude
            self.coordinate = coordinate
            self.height = height
            self.error = error
            self.load = load
            self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
            self.links = links
        }

        /// The routing id of the signer (the first 8 bytes of its node id).
        public var routingID: UInt64 {
            nodeID.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }

        /// The encoding the signer signs. Numbers are clamped as in ROUTING_GOSSIP so that
        /// whatever is written decodes; links beyond ``maxLinks`` are cut.
        public func encoded() -> [UInt8] {
            var w = WireWriter()
            w.bytes(nodeID.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - nodeID.count)))
            w.varint(min(max(sequence, 1), VarInt.max))
            w.varint(min(expiresAtMillis, VarInt.max))
            RoutingNodeState(
                region: region, latitude: latitude, longitude: longitude, coordinate: coordinate, height: height, error: error,
                load: load, bandwidthBitsPerSecond: bandwidthBitsPerSecond
            ).encode(into: &w)
            let links = self.links.prefix(Self.maxLinks)
            w.varint(UInt64(links.count))
            for l in links {
                w.integer(l.to)
                RoutingLinkMeasure(rttMilliseconds: l.rttMilliseconds, bandwidthBitsPerSecond: l.bandwidthBitsPerSecond).encode(into: &w)
            }
            return Array(w.buffer.readableBytesView)
        }

        /// Decodes a body, checking every bound.
        public static func decode(_ bytes: [UInt8]) throws(WireError) -> Body {
            guard bytes.count <= RoutingAdvertMessage.maxBodyLength else {
                throw WireError(.tooLong, "a routing advert body has \(bytes.count) bytes; the limit is \(RoutingAdvertMessage.maxBodyLength)")
            }
            var r = WireReader(ByteBuffer(bytes: bytes), context: "routing advert")
            let node = try r.bytes("nodeID", count: 32)
            let sequence = try r.varint("sequence")
            guard sequence > 0 else { throw WireError(.malformed, "routing advert: sequence 0") }
            let expires = try r.varint("expiresAtMillis")
            let state = try RoutingNodeState.decode(from: &r)
            let count = Int(try r.varint("linkCount", max: UInt64(maxLinks)))
            guard count * (8 + RoutingLinkMeasure.encodedLength) <= r.remaining else {
                throw WireError(.truncated, "routing advert declares \(count) links but holds \(r.remaining) bytes")
            }
            let own = node.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            var links: [Link] = []
            for _ in 0 ..< count {
                let to = try r.integer("to", as: UInt64.self)
                guard to != own else { throw WireError(.malformed, "routing advert has a link from node \(own) to itself") }
                let measure = try RoutingLinkMeasure.decode(from: &r)
                links.append(Link(to: to, rttMilliseconds: measure.rttMilliseconds, bandwidthBitsPerSecond: measure.bandwidthBitsPerSecond))
            }
            try r.finish()
            return Body(
                nodeID: node, sequence: sequence, expiresAtMillis: expires, region: state.region, latitude: state.latitude,
                longitude: state.longitude, coordinate: state.coordinate, height: state.height, error: state.error, load: state.load,
                bandwidthBitsPerSecond: state.bandwidthBitsPerSecond, links: links)
        }
    }

    /// Creates a message.
    public init(certificates: [[UInt8]], adverts: [Advert]) {
        self.certificates = certificates
        self.adverts = adverts
    }

    /// The frame. Certificates and adverts beyond the bounds are cut, and so is whatever would
    /// take the payload past ``maxPayloadLength`` (adverts first: the first ones are kept).
    public func frame() -> Frame {
        var w = WireWriter()
        let certs = certificates.prefix(Self.maxCertificates).filter { !$0.isEmpty && $0.count <= Self.maxCertificateLength }
        let adverts = self.adverts.prefix(Self.maxAdverts).filter {
            $0.certificateDigest.count == 32 && $0.body.count <= Self.maxBodyLength && !$0.signature.isEmpty
                && $0.signature.count <= Self.maxSignatureLength
        }
        var budget = Self.maxPayloadLength - VarInt.length(of: UInt64(certs.count)) - VarInt.length(of: UInt64(adverts.count))
        var keptCerts: [[UInt8]] = []
        for c in certs {
            let length = VarInt.length(of: UInt64(c.count)) + c.count
            guard length <= budget else { break }
            keptCerts.append(c)
            budget -= length
        }
        var keptAdverts: [Advert] = []
        for a in adverts {
            guard a.encodedLength <= budget else { break }
            keptAdverts.append(a)
            budget -= a.encodedLength
        }
        w.varint(UInt64(keptCerts.count))
        for c in keptCerts { w.lengthPrefixedBytes(c) }
        w.varint(UInt64(keptAdverts.count))
        for a in keptAdverts {
            w.integer(a.hops)
            w.varint(UInt64(a.ageMilliseconds))
            w.bytes(a.certificateDigest)
            w.lengthPrefixedBytes(a.body)
            w.lengthPrefixedBytes(a.signature)
        }
        return Frame(type: Self.type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes a ROUTING_ADVERTS frame, checking every bound (bodies are decoded one by one later,
    /// with ``Body/decode(_:)``, so that one bad advert costs only itself).
    /// - Throws: ``WireError`` for a malformed payload, `.unknownType` for another frame type.
    public static func decode(_ frame: Frame) throws(WireError) -> RoutingAdvertMessage {
        guard frame.type == type else { throw WireError(.unknownType, "frame \(frame.type) is not ROUTING_ADVERTS") }
        guard frame.payload.readableBytes <= maxPayloadLength else {
            throw WireError(.tooLong, "ROUTING_ADVERTS has \(frame.payload.readableBytes) bytes; the limit is \(maxPayloadLength)")
        }
        var r = WireReader(frame.payload, context: "ROUTING_ADVERTS")
        let certCount = Int(try r.varint("certCount", max: UInt64(maxCertificates)))
        guard certCount * 2 <= r.remaining else {
            throw WireError(.truncated, "ROUTING_ADVERTS declares \(certCount) certificates but holds \(r.remaining) bytes")
        }
        var certificates: [[UInt8]] = []
        for _ in 0 ..< certCount {
            let der = try r.lengthPrefixedBytes("certificate", max: maxCertificateLength)
            guard !der.isEmpty else { throw WireError(.malformed, "ROUTING_ADVERTS holds an empty certificate") }
            certificates.append(der)
        }
        let count = Int(try r.varint("advertCount", max: UInt64(maxAdverts)))
        guard count * 36 <= r.remaining else {
            throw WireError(.truncated, "ROUTING_ADVERTS declares \(count) adverts but holds \(r.remaining) bytes")
        }
        var adverts: [Advert] = []
        for _ in 0 ..< count {
            let hops = try r.integer("hops", as: UInt8.self)
            let age = UInt32(try r.varint("age", max: UInt64(UInt32.max)))
            let digest = try r.bytes("certificate", count: 32)
            let body = try r.lengthPrefixedBytes("body", max: maxBodyLength)
            let signature = try r.lengthPrefixedBytes("signature", max: maxSignatureLength)
            guard !signature.isEmpty else { throw WireError(.malformed, "ROUTING_ADVERTS holds an unsigned advert") }
            adverts.append(Advert(hops: hops, ageMilliseconds: age, certificateDigest: digest, body: body, signature: signature))
        }
        try r.finish()
        return RoutingAdvertMessage(certificates: certificates, adverts: adverts)
    }

    /// Fuzz entry point: decodes arbitrary bytes as a ROUTING_ADVERTS payload and as an advert
    /// body, and traps only if a decoded value does not survive a round trip (a real bug).
    public static func fuzz(_ bytes: [UInt8]) {
        if let message = try? decode(Frame(type: type, payload: ByteBuffer(bytes: bytes))) {
            precondition((try? decode(message.frame())) == message, "routing adverts round trip changed \(message)")
        }
        if let body = try? Body.decode(bytes) {
            precondition((try? Body.decode(body.encoded())) == body, "routing advert body round trip changed \(body)")
        }
    }
}
