import NIOCore

/// A node's signed audit head over `stoq/1` (docs/PROTOCOL.md, "Audit trail"). The head's bytes
/// are STOQAudit's encoding (`AuditHead`); this layer only frames and bounds them.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x2C | AUDIT_HEAD_REQUEST | empty |
/// | 0x2D | AUDIT_HEAD | `head:bytes (1…8404)` |
///
/// AUDIT_HEAD_REQUEST is answered by AUDIT_HEAD (a head signed over every record the node's log
/// holds when it answers), ERROR 7 (the asker has neither an operator's certificate nor a grant
/// with the status right) or ERROR 3 (the node keeps no audit log).
public enum AuditHeadMessage: Hashable, Sendable {
    /// Asks for the node's signed audit head.
    case request
    /// The signed head's bytes.
    case head([UInt8])

    /// Frame types.
    public enum Types {
        public static let request = FrameType(rawValue: 0x2C)
        public static let head = FrameType(rawValue: 0x2D)
    }

    /// The longest head: 32 + 8 + 32 + 8 + 2 + 8192 (certificate) + 2 + 128 (signature) bytes.
    public static let maximumHeadLength = 8404
    /// The most bytes a payload holds.
    public static let maximumPayloadLength = maximumHeadLength + 8

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x2C...0x2D).contains(type.rawValue) }

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .request:
            type = Types.request
        case .head(let bytes):
            type = Types.head
            w.lengthPrefixedBytes(bytes.prefix(Self.maximumHeadLength))
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
    public static func decode(_ frame: Frame) throws(WireError) -> AuditHeadMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: AuditHeadMessage
        switch frame.type {
        case Types.request:
            message = .request
        case Types.head:
            let bytes = try r.lengthPrefixedBytes("head", max: maximumHeadLength)
            guard !bytes.isEmpty else { throw WireError(.malformed, "AUDIT_HEAD holds no head") }
            message = .head(bytes)
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not an audit head message")
        }
        try r.finish()
        return message
    }

    /// Fuzz entry point: decodes arbitrary bytes as each of these payloads and traps only if a
    /// decoded message does not survive a round trip.
    public static func fuzz(_ bytes: [UInt8]) {
        for type in [Types.request, Types.head] {
            let frame = Frame(type: type, payload: ByteBuffer(bytes: bytes))
            guard let message = try? decode(frame) else { continue }
            precondition((try? decode(message.frame())) == message, "audit head message round trip changed \(message)")
        }
    }
}
