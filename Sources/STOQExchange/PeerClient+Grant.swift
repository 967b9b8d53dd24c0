import NIOCore
import STOQAccess
import STOQIdentity
import STOQWire

/// The client side of access grants (docs/PROTOCOL.md, "Access grants").
extension PeerClient {
    /// What a node answered to a grant it accepted.
    public struct GrantAcceptance: Sendable {
        /// The grant id.
        public let grantID: [UInt8]
        /// The effective rights.
        public let rights: AccessRights
        /// The effective expiry (unix seconds).
        public let notAfter: UInt64
    }

    /// Presents a grant on this connection (sent sealed: without its narrowing key). The node
    /// keeps it for the connection's later requests.
    /// - Throws: ``NodeError`` `.refused` with the node's reason (ERROR 7) when it is refused.
    public func presentGrant(_ grant: AccessGrant) async throws -> GrantAcceptance {
        switch try await grantRequest(.grant(grant.sealed.encoded())) {
        case .grantAccepted(let id, let rights, let notAfter): return GrantAcceptance(grantID: id, rights: AccessRights(rawValue: rights), notAfter: notAfter)
        default: throw NodeError(.protocolViolation, "\(name) answered GRANT with another message")
        }
    }

    /// Pushes a revocation list; returns the list the node holds afterwards (its newest).
    public func pushRevocations(_ list: RevocationList) async throws -> RevocationList? {
        guard case .revocations(let bytes) = try await grantRequest(.revocations(list.encoded())) else {
            throw NodeError(.protocolViolation, "\(name) answered REVOCATIONS with another message")
        }
        return bytes.isEmpty ? nil : try RevocationList(encoded: bytes)
    }

    /// Asks for the revocation list the node holds for `publisher` (nil: none). Not verified here:
    /// callers verify it (``AccessPolicy/accept(_:)`` does).
    public func revocations(of publisher: NodeID) async throws -> RevocationList? {
        guard case .revocations(let bytes) = try await grantRequest(.revocationsRequest(publisher: WireID(publisher.bytes)!)) else {
            throw NodeError(.protocolViolation, "\(name) answered REVOCATIONS_REQUEST with another message")
        }
        return bytes.isEmpty ? nil : try RevocationList(encoded: bytes)
    }

    private func grantRequest(_ message: GrantMessage) async throws -> GrantMessage {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(message.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: GrantMessage.maximumPayloadLength)
        decoder.handle(bytes: try await stream.readAll(limit: GrantMessage.maximumPayloadLength + 16))
        guard let frame = try decoder.pollFrame() else { throw NodeError(.protocolViolation, "\(name) closed the stream without answering \(message.frame().type)") }
        if GrantMessage.handles(frame.type) { return try GrantMessage.decode(frame) }
        if case .error(_, let text) = try STOQMessage.decode(frame) { throw NodeError(.refused, "\(name) refused: \(text)") }
        throw NodeError(.protocolViolation, "\(name) answered \(message.frame().type) with \(frame.type)")
    }
}
