import NIOCore
import STOQIdentity

/// Transport statistics of a connection.
public struct ConnectionStats: Sendable, Hashable {
    /// Smoothed round-trip time.
    public var smoothedRTT: Duration
    /// Minimum observed round-trip time.
    public var minRTT: Duration
    /// Congestion window in bytes.
    public var congestionWindow: UInt64
    /// Bytes sent but not yet acknowledged or lost.
    public var bytesInFlight: UInt64
    /// UDP payload bytes sent.
    public var bytesSent: UInt64
    /// UDP payload bytes received.
    public var bytesReceived: UInt64
    /// Stream payload bytes sent (first transmissions).
    public var streamBytesSent: UInt64
    /// Largest UDP payload this side sends on the connection (from the path MTU, or
    /// ``EndpointConfiguration/maxUDPPayloadSize``; 0 once the connection is gone).
    public var maxDatagramSize: Int = 0
}

/// An established QUIC connection with a STOQ peer.
///
/// Open streams with ``openBidirectionalStream(priority:)`` /
/// ``openUnidirectionalStream(priority:)``; take the peer's from ``incomingStreams``.
public final class Connection: Sendable {
    let core: ConnectionCore
    /// The peer's UDP address (as first seen).
    public let remoteAddress: SocketAddress
    /// The application protocol both sides agreed on.
    public let negotiatedALPN: String?
    /// The peer's certificate chain, DER, leaf first (empty if it presented none).
    public let peerCertificateChain: [[UInt8]]
    /// SHA-256 of the peer's SubjectPublicKeyInfo, if it presented a certificate.
    public let peerNodeID: NodeID?
    /// Whether this side accepted the connection.
    public let isServer: Bool

    init(core: ConnectionCore) {
        self.core = core
        remoteAddress = core.remote
        negotiatedALPN = core.quic.negotiatedALPN
        peerCertificateChain = core.quic.peerCertificates
        // The handshake has accepted this certificate: the id needs no second full X.509 parse.
        peerNodeID = peerCertificateChain.first.flatMap { try? NodeID(handshakeCertificateDER: $0) }
        isServer = core.quic.isServer
    }

    /// Streams the peer opens.
    public var incomingStreams: AsyncStream<QUICStream> { core.incomingStreams }

    /// Opens a bidirectional stream; waits while the peer's stream limit is reached.
    public func openBidirectionalStream(priority: StreamPriority = .interactive) async throws -> QUICStream {
        try await open(bidirectional: true, priority: priority)
    }

    /// Opens a unidirectional (send-only) stream; waits while the peer's limit is reached.
    public func openUnidirectionalStream(priority: StreamPriority = .interactive) async throws -> QUICStream {
        try await open(bidirectional: false, priority: priority)
    }

    private func open(bidirectional: Bool, priority: StreamPriority) async throws -> QUICStream {
        let core = self.core
        let promise = core.eventLoop.makePromise(of: StreamCore.self)
        core.eventLoop.execute {
            core.openStream(bidirectional: bidirectional, priority: priority, promise: promise)
        }
        return QUICStream(core: try await promise.futureResult.get())
    }

    /// Sets (or with nil removes) this connection's sending rate limit; it replaces the
    /// endpoint's ``EndpointConfiguration/rateLimit`` for this connection.
    public func setRateLimit(_ limit: RateLimit?) async {
        let core = self.core
        try? await core.eventLoop.submit {
            core.quic.setRateLimit(limit, now: clockNow())
            core.kick()
        }.get()
    }

    /// Closes the connection; the peer sees `code` and `reason`.
    public func close(code: UInt64 = 0, reason: String = "") async {
        let core = self.core
        try? await core.eventLoop.submit { core.close(code: code, reason: reason) }.get()
    }

    /// Waits until the connection is closed and returns why.
    public func closed() async -> STOQError {
        let core = self.core
        let promise = core.eventLoop.makePromise(of: STOQError.self)
        core.eventLoop.execute { core.waitClosed(promise) }
        return (try? await promise.futureResult.get()) ?? STOQError(.connectionClosed, "connection closed")
    }

    /// Current transport statistics.
    public func stats() async -> ConnectionStats {
        let core = self.core
        return (try? await core.eventLoop.submit {
            let s = core.quic.stat
            return ConnectionStats(
                smoothedRTT: .nanoseconds(Int64(clamping: s.smoothedRTT)), minRTT: .nanoseconds(Int64(clamping: s.minRTT)),
                congestionWindow: s.cwnd, bytesInFlight: s.bytesInFlight, bytesSent: core.quic.bytesSent,
                bytesReceived: core.quic.bytesReceived, streamBytesSent: core.quic.streamBytesSent,
                maxDatagramSize: core.quic.maxPacketSize)
        }.get()) ?? ConnectionStats(smoothedRTT: .zero, minRTT: .zero, congestionWindow: 0, bytesInFlight: 0, bytesSent: 0, bytesReceived: 0, streamBytesSent: 0)
    }
}
