import NIOCore

/// Requests about who may read a content and what an edge caches of it (docs/PROTOCOL.md, "Public
/// content and purge"): the read key of a **public** content, and **purge**, which drops a
/// content's cached chunks on an edge and on the edges below it.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x13 | CONTENT_KEY_REQUEST | `contentID:bytes32` |
/// | 0x14 | CONTENT_KEY | `contentID:bytes32` `key:bytes32` |
/// | 0x15 | PURGE | `contentID:bytes32` `purgeID:u64` `depth:varint (≤ 8)` |
/// | 0x16 | PURGED | `localChunks` `localBytes` `belowChunks` `belowBytes` `edges` `unanswered` (varints) |
/// | 0x17 | PURGE_SUBSCRIBE | empty |
public enum ContentAccessMessage: Hashable, Sendable {
    /// Asks for the read key of a public content.
    case contentKeyRequest(content: WireID)
    /// The read key of a public content (the answer to ``contentKeyRequest(content:)``).
    case contentKey(content: WireID, key: [UInt8])
    /// Drops the cached chunks of `content` here and below. `purgeID` is chosen at random by the
    /// purger and kept by every hop (a node that sees it twice does nothing the second time);
    /// `depth` is 0 from the purger and one more at each hop down.
    case purge(content: WireID, purgeID: UInt64, depth: UInt64)
    /// What a purge dropped.
    case purged(PurgeTotals)
    /// An edge tells the upstream it dialled that it caches content from it: purges are passed on
    /// to it over this connection while it stays open. Answered with ``purged(_:)``, all zeros.
    case purgeSubscribe

    /// What a purge dropped, here and below.
    public struct PurgeTotals: Hashable, Sendable {
        /// Chunks the answering node dropped from its cache.
        public var localChunks: UInt64
        /// Their bytes.
        public var localBytes: UInt64
        /// Chunks the edges below dropped (every tier below, summed).
        public var belowChunks: UInt64
        /// Their bytes.
        public var belowBytes: UInt64
        /// Edges below that took the purge (every tier below, summed).
        public var edges: UInt64
        /// Edges below that did not answer in time (every tier below, summed).
        public var unanswered: UInt64

        /// Creates totals (values above 2^62 − 1 are written as 2^62 − 1).
        public init(localChunks: UInt64 = 0, localBytes: UInt64 = 0, belowChunks: UInt64 = 0, belowBytes: UInt64 = 0, edges: UInt64 = 0, unanswered: UInt64 = 0) {
            self.localChunks = localChunks
            self.localBytes = localBytes
            self.belowChunks = belowChunks
            self.belowBytes = belowBytes
            self.edges = edges
            self.unanswered = unanswered
        }

        /// Adds what one edge below answered (its own and its tiers'), saturating at 2^62 − 1.
        public mutating func add(below answer: PurgeTotals) {
            belowChunks = Self.sum(belowChunks, answer.localChunks, answer.belowChunks)
            belowBytes = Self.sum(belowBytes, answer.localBytes, answer.belowBytes)
            edges = Self.sum(edges, 1, answer.edges)
            unanswered = Self.sum(unanswered, answer.unanswered)
        }

        /// Counts one edge below that did not answer.
        public mutating func addUnanswered() { unanswered = Self.sum(unanswered, 1) }

        static func sum(_ values: UInt64...) -> UInt64 {
            var total: UInt64 = 0
            for v in values {
                let (s, overflow) = total.addingReportingOverflow(min(v, VarInt.max))
                total = overflow ? VarInt.max : min(s, VarInt.max)
            }
            return total
        }
    }

    /// Frame types.
    public enum Types {
        public static let contentKeyRequest = FrameType(rawValue: 0x13)
        public static let contentKey = FrameType(rawValue: 0x14)
        public static let purge = FrameType(rawValue: 0x15)
        public static let purged = FrameType(rawValue: 0x16)
        public static let purgeSubscribe = FrameType(rawValue: 0x17)
    }

    /// The deepest tier a purge travels to (depth 0 is the node the purger asked).
    public static let maximumDepth: UInt64 = 8
    /// The most bytes any of these frames' payloads holds.
    public static let maximumPayloadLength = 64

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x13...0x17).contains(type.rawValue) }

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .contentKeyRequest(let content):
            type = Types.contentKeyRequest
            w.bytes(content.bytes)
        case .contentKey(let content, let key):
            type = Types.contentKey
            w.bytes(content.bytes)
            w.bytes(key.prefix(32))
        case .purge(let content, let purgeID, let depth):
            type = Types.purge
            w.bytes(content.bytes)
            w.integer(purgeID)
            w.varint(min(depth, VarInt.max))
        case .purged(let t):
            type = Types.purged
            for v in [t.localChunks, t.localBytes, t.belowChunks, t.belowBytes, t.edges, t.unanswered] { w.varint(min(v, VarInt.max)) }
        case .purgeSubscribe:
            type = Types.purgeSubscribe
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes one of these frames.
    /// - Throws: ``WireError`` for a malformed payload, or `.unknownType` for a frame of another type.
    public static func decode(_ frame: Frame) throws(WireError) -> ContentAccessMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: ContentAccessMessage
        switch frame.type {
        case Types.contentKeyRequest:
            message = .contentKeyRequest(content: WireID(try r.bytes("contentID", count: 32))!)
        case Types.contentKey:
            let content = WireID(try r.bytes("contentID", count: 32))!
            message = .contentKey(content: content, key: try r.bytes("key", count: 32))
        case Types.purge:
            let content = WireID(try r.bytes("contentID", count: 32))!
            let purgeID: UInt64 = try r.integer("purgeID")
            message = .purge(content: content, purgeID: purgeID, depth: try r.varint("depth", max: maximumDepth))
        case Types.purged:
            var values: [UInt64] = []
            for field in ["localChunks", "localBytes", "belowChunks", "belowBytes", "edges", "unanswered"] { values.append(try r.varint(field)) }
            message = .purged(PurgeTotals(localChunks: values[0], localBytes: values[1], belowChunks: values[2], belowBytes: values[3], edges: values[4], unanswered: values[5]))
        case Types.purgeSubscribe:
            message = .purgeSubscribe
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not a content access message")
        }
        try r.finish()
        return message
    }
}
