import STOQErrors

/// An error from the STOQ transport: a stable ``Code`` plus a human-readable reason that
/// says what went wrong and, where possible, what to do about it.
///
/// Equality compares the code only, so tests and callers can match on `error.code`.
public struct STOQError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure. New codes may be added; switch with a `default`.
    public typealias Code = ErrorCode<STOQError>

    /// Who closed a connection.
    public enum Initiator: Sendable, Hashable {
        /// This side.
        case local
        /// The remote peer.
        case peer
    }

    /// The failure kind.
    public let code: Code
    /// What went wrong, for humans.
    public let reason: String
    /// QUIC application error code (connection close, stream reset, stop sending), if any.
    public let applicationCode: UInt64?
    /// Who initiated a close, if this error reports one.
    public let initiator: Initiator?

    /// Creates an error.
    public init(_ code: Code, _ reason: String, applicationCode: UInt64? = nil, initiator: Initiator? = nil) {
        self.code = code
        self.reason = reason
        self.applicationCode = applicationCode
        self.initiator = initiator
    }

    /// The reason, as people read it (no type name: it reaches users inside other messages;
    /// match on ``code`` instead).
    public var description: String { reason }

    /// Compares codes only.
    public static func == (lhs: STOQError, rhs: STOQError) -> Bool { lhs.code == rhs.code }
    /// Hashes the code only.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    static func ipv6Only(_ what: String) -> STOQError {
        STOQError(.ipv6Only, "STOQ is IPv6-only: \(what) is an IPv4 or IPv4-mapped address; use an IPv6 address such as ::1 or an fd00::/8 address")
    }
}

/// The kinds of failure of ``STOQError``. New codes may be added.
extension ErrorCode where Domain == STOQError {
    /// An IPv4 or IPv4-mapped address was used; STOQ is IPv6-only.
    public static let ipv6Only = Self("ipv6Only")
    /// The TLS handshake failed (certificate not trusted, expired, refused by the peer...).
    public static let handshakeFailed = Self("handshakeFailed")
    /// No application protocol (ALPN) in common with the peer.
    public static let alpnMismatch = Self("alpnMismatch")
    /// The connection was closed, locally or by the peer (see ``STOQError/applicationCode``).
    public static let connectionClosed = Self("connectionClosed")
    /// The connection was idle longer than its idle timeout.
    public static let idleTimeout = Self("idleTimeout")
    /// The peer reset the stream (RESET_STREAM) or it was reset locally.
    public static let streamReset = Self("streamReset")
    /// The peer asked us to stop sending on the stream (STOP_SENDING).
    public static let stopSending = Self("stopSending")
    /// The stream is finished or closed and takes no more writes.
    public static let streamClosed = Self("streamClosed")
    /// A flow-control or stream-count limit was exceeded.
    public static let flowControl = Self("flowControl")
    /// A caller passed an invalid value.
    public static let invalidArgument = Self("invalidArgument")
    /// The endpoint is closed.
    public static let endpointClosed = Self("endpointClosed")
    /// The endpoint already holds its configured maximum of connections.
    public static let tooManyConnections = Self("tooManyConnections")
    /// No datagram can be sent to the address (no route, or the kernel refused the send).
    public static let unreachable = Self("unreachable")
    /// An unexpected failure inside ngtcp2 or GnuTLS.
    public static let internalError = Self("internalError")
}
