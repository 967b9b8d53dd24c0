import Foundation
import NIOCore
import STOQAccess
import STOQAudit
import STOQExchange
import STOQTransport
import STOQWire

/// Answers AUDIT_HEAD_REQUEST (frame type 0x2C; docs/PROTOCOL.md, "Audit trail") with the node's
/// audit head signed over every record its log holds (``NodeAudit/currentHead()``), so an
/// operator can check a copy of the log against it: a copy cut short is caught.
///
/// Only to those who may read STATUS: the node itself, operators (`--operator`; every network
/// certificate while none is set), and connections that presented a grant with the status right.
public struct AuditService: NodeService {
    /// The node's audit trail (nil: `--no-audit-log`, answered with ERROR 3).
    public let audit: NodeAudit?
    /// Who may ask.
    public let access: AccessPolicy

    /// Creates the service.
    public init(audit: NodeAudit?, access: AccessPolicy) {
        self.audit = audit
        self.access = access
    }

    public var name: String { "audit" }
    public var frameTypes: ClosedRange<UInt64> { AuditHeadMessage.Types.request.rawValue...AuditHeadMessage.Types.head.rawValue }
    public var maximumRequestLength: Int { 16 }

    /// ERROR code when the node keeps no audit log.
    public static let noLogCode: UInt64 = 3

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let answer: ByteBuffer
        do {
            switch try AuditHeadMessage.decode(request) {
            case .request:
                if case .denied(let why) = await access.check(.status, peer: connection.peerNodeID, connection: ObjectIdentifier(connection)) {
                    answer = STOQMessage.error(code: AccessPolicy.noGrantCode, message: String(why.prefix(1000))).encoded()
                } else if let audit {
                    do {
                        answer = AuditHeadMessage.head(try audit.currentHead().encoded()).encoded()
                    } catch {
                        answer = STOQMessage.error(code: ChunkErrorCode.internalError, message: String("the node could not sign its audit head: \(error.reason)".prefix(1000))).encoded()
                    }
                } else {
                    answer = STOQMessage.error(code: Self.noLogCode, message: "this node keeps no audit log (it runs with --no-audit-log)").encoded()
                }
            case .head:
                answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "unexpected request AUDIT_HEAD: it is an answer").encoded()
            }
        } catch {
            answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: String("malformed \(request.type) request: \(error.reason); AUDIT_HEAD_REQUEST has an empty payload (docs/PROTOCOL.md, \"Audit trail\")".prefix(1000))).encoded()
        }
        do {
            try await stream.write(answer)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }
}

extension PeerClient {
    /// Asks the node for its audit head, signed over every record its log holds now, and checks
    /// the signature (and that the head is the node id's). Needs an operator's certificate or a
    /// grant with the status right presented first.
    /// - Throws: ``NodeError`` `.refused` with the node's reason (ERROR 7, no grant; ERROR 3, no
    ///   audit log); ``AuditError`` `.badHead` when the head does not verify.
    public func auditHead() async throws -> AuditHead {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(AuditHeadMessage.request.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: AuditHeadMessage.maximumPayloadLength)
        decoder.handle(bytes: try await stream.readAll(limit: AuditHeadMessage.maximumPayloadLength + 16))
        guard let frame = try decoder.pollFrame() else { throw NodeError(.protocolViolation, "\(name) closed the stream without answering AUDIT_HEAD_REQUEST") }
        if frame.type == AuditHeadMessage.Types.head, case .head(let bytes) = try AuditHeadMessage.decode(frame) {
            guard let head = AuditHead(decoding: bytes[...]) else {
                throw NodeError(.protocolViolation, "\(name) answered AUDIT_HEAD with bytes that are not a signed audit head")
            }
            try AuditVerifier.verifySignature(head, where: "the head \(name) sent")
            if let peer = authenticatedPeer, peer.bytes != head.nodeID {
                throw AuditError(.badHead, "the head \(name) sent is signed by node \(AuditVerifier.hex(head.nodeID).prefix(16)), not by the node that answered (\(peer.short))")
            }
            return head
        }
        if case .error(_, let text) = try STOQMessage.decode(frame) { throw NodeError(.refused, "\(name) refused: \(text)") }
        throw NodeError(.protocolViolation, "\(name) answered AUDIT_HEAD_REQUEST with \(frame.type)")
    }
}
