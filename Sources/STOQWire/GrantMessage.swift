import NIOCore

/// Access grants and revocation lists over `stoq/1` (docs/PROTOCOL.md, "Access grants"). The grant
/// and list bytes are STOQAccess's encodings; this layer only frames and bounds them.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x22 | GRANT | `grant:bytes (≤ 65536)` |
/// | 0x23 | GRANT_ACCEPTED | `grantID:bytes16` `rights:varint` `notAfter:varint` |
/// | 0x24 | REVOCATIONS | `list:bytes (≤ 74 KiB; empty in an answer: none held)` |
/// | 0x25 | REVOCATIONS_REQUEST | `publisher:bytes32` |
///
/// GRANT is answered by GRANT_ACCEPTED (the effective rights and expiry) or ERROR 7; REVOCATIONS
/// (pushed) and REVOCATIONS_REQUEST are answered by REVOCATIONS with the list the node holds now.
public enum GrantMessage: Hashable, Sendable {
    /// Presents a grant on this connection.
    case grant([UInt8])
    /// The node verified the grant and keeps it for this connection.
    case grantAccepted(grantID: [UInt8], rights: UInt64, notAfter: UInt64)
    /// A publisher's signed revocation list (empty: none).
    case revocations([UInt8])
    /// Asks for the revocation list the node holds for a publisher.
    case revocationsRequest(publisher: WireID)

    /// Frame types.
    public enum Types {
        public static let grant = FrameType(rawValue: 0x22)
        public static let grantAccepted = FrameType(rawValue: 0x23)
        public static let revocations = FrameType(rawValue: 0x24)
        public static let revocationsRequest = FrameType(rawValue: 0x25)
    }

    /// ERROR code of a request that needs a grant ("no grant: the request needs an access grant
    /// with right R for scope S"); also the refusal of a GRANT or REVOCATIONS that does not verify.
    public static let noGrantCode: UInt64 = 7
    /// The longest grant.
    public static let maximumGrantLength = 64 * 1024
    /// The longest revocation list.
    public static let maximumListLength = 76 * 1024
    /// The most bytes a payload holds.
    public static let maximumPayloadLength = maximumListLength + 8

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x22...0x25).contains(type.rawValue) }

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .grant(let bytes):
            type = Types.grant
            w.lengthPrefixedBytes(bytes.prefix(Self.maximumGrantLength))
        case .grantAccepted(let id, let rights, let notAfter):
            type = Types.grantAccepted
            w.bytes((id + [UInt8](repeating: 0, count: 16)).prefix(16))
            w.varint(rights)
            w.varint(notAfter)
        case .revocations(let bytes):
            type = Types.revocations
            w.lengthPrefixedBytes(bytes.prefix(Self.maximumListLength))
        case .revocationsRequest(let publisher):
            type = Types.revocationsRequest
            w.bytes(publisher.bytes)
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes one of these frames, checking every bound.
    /// - Throws: ``WireError`` for a malformed payload, or `.unknownType` for a frame of another type.
    public static func decode(_ frame: Frame) throws(WireError) -> GrantMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: GrantMessage
        switch frame.type {
        case Types.grant:
            let bytes = try r.lengthPrefixedBytes("grant", max: maximumGrantLength)
            guard !bytes.isEmpty else { throw WireError(.malformed, "GRANT holds no grant") }
            message = .grant(bytes)
        case Types.grantAccepted:
            let id = try r.bytes("grantID", count: 16)
            message = .grantAccepted(grantID: id, rights: try r.varint("rights", max: 0xff), notAfter: try r.varint("notAfter"))
        case Types.revocations:
            message = .revocations(try r.lengthPrefixedBytes("list", max: maximumListLength))
        case Types.revocationsRequest:
            message = .revocationsRequest(publisher: WireID(try r.bytes("publisher", count: 32))!)
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not a grant message")
        }
        try r.finish()
        return message
    }

    /// Fuzz entry point: decodes arbitrary bytes as each of these payloads and traps only if a
    /// decoded message does not survive a round trip.
    public static func fuzz(_ bytes: [UInt8]) {
        for type in [Types.grant, Types.grantAccepted, Types.revocations, Types.revocationsRequest] {
            let frame = Frame(type: type, payload: ByteBuffer(bytes: bytes))
            guard let message = try? decode(frame) else { continue }
            precondition((try? decode(message.frame())) == message, "grant message round trip changed \(message)")
        }
    }
}
