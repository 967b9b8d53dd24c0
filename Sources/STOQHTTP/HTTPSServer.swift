import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOWebSocket
import STOQIdentity
import STOQTransport
import Synchronization

/// The HTTPS-over-TCP listener of the front door: HTTP/1.1 and HTTP/2 over TLS (ALPN `h2`,
/// `http/1.1`), and the WebSocket push on `/ws/name/<name>` over HTTP/1.1.
///
/// Every response carries `Date` and `Alt-Svc: h3=":PORT"` so browsers move to the HTTP/3
/// server listening on the same port number over UDP. No client certificate is asked for. The
/// listener binds IPv6 only. Bodies are pulled from ``HTTPBody`` only as the connection can take
/// them, and a body that fails mid-way closes the connection (HTTP/1.1) or resets the stream
/// (HTTP/2), so no client mistakes a truncated body for a whole one.
///
/// ```swift
/// let server = HTTPSServer(configuration: HTTPListenerConfiguration(
///     host: "::1", port: 8443, certificatePath: "node.pem", keyPath: "node.key", responder: responder))
/// let port = try await server.start()
/// ```
public final class HTTPSServer: HTTPListener {
    /// Bounds that keep a hostile or broken client from exhausting the node.
    public struct Limits: Sendable {
        /// Open connections at once; further connections are closed as soon as they are accepted.
        public var maxConnections = 1024
        /// Requests carried by one HTTP/1.1 connection (the last is answered with
        /// `Connection: close`), or streams opened on one HTTP/2 connection (later ones are reset).
        public var maxRequestsPerConnection = 10_000
        /// Bytes of request line/pseudo-headers and header fields together (431 beyond).
        public var maxHeaderBytes = 16 * 1024
        /// Bytes of request body tolerated (the listener serves GET and HEAD; 413 beyond).
        public var maxRequestBodyBytes = 64 * 1024
        /// Concurrent HTTP/2 streams per connection, announced in SETTINGS.
        public var maxConcurrentStreams = 100
        /// A connection with nothing in flight and no bytes either way for this long is closed
        /// (this also bounds a TLS handshake that never completes). WebSockets are exempt.
        public var idleTimeout: Duration = .seconds(30)
        /// How long ``HTTPSServer/stop()`` lets exchanges in flight finish.
        public var shutdownGrace: Duration = .seconds(2)

        /// The defaults.
        public init() {}
    }

    /// Where and what the listener serves.
    public let configuration: HTTPListenerConfiguration
    /// The bounds in force.
    public let limits: Limits
    private let announcedHTTP3Port: Int?
    private let group: any EventLoopGroup
    private let shared: HTTPSServerShared
    private let state = Mutex(State())

    private struct State {
        var serverChannel: (any Channel)?
        var started = false
        var connections: [ObjectIdentifier: any Channel] = [:]
    }

    /// Creates a listener; nothing is bound until ``start()``.
    /// - Parameters:
    ///   - configuration: address, certificate, key and responder.
    ///   - http3Port: the UDP port `Alt-Svc` announces; the bound TCP port when nil (the HTTP/3
    ///     server listens on the same number).
    ///   - limits: bounds on connections, requests, headers and idle time.
    ///   - group: the event loops to run on.
    public init(
        configuration: HTTPListenerConfiguration, http3Port: Int? = nil, limits: Limits = Limits(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.limits = limits
        self.announcedHTTP3Port = http3Port
        self.group = group
        self.shared = HTTPSServerShared(responder: configuration.responder, limits: limits)
    }

    /// Loads the certificate and key, binds, and starts serving; returns the bound TCP port.
    public func start() async throws -> Int {
        guard state.withLock({ s in defer { s.started = true }; return !s.started }) else {
            throw HTTPSServerError(.alreadyStarted, "This HTTPS listener was already started; create a new one to listen again.")
        }
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: configuration.host, port: configuration.port)
        } catch {
            throw HTTPSServerError(.notIPv6, "'\(configuration.host)' is not an IPv6 address. STOQ listens on IPv6 only: use ::1, :: or an fd00::/8 address.")
        }
        guard case .v6 = address else {
            throw HTTPSServerError(.notIPv6, "'\(configuration.host)' is an IPv4 address. STOQ listens on IPv6 only: use ::1, :: or an fd00::/8 address.")
        }
        let sslContext = try Self.makeSSLContext(certificatePath: configuration.certificatePath, keyPath: configuration.keyPath)

        let shared = self.shared
        let limits = self.limits
        let registry = HTTPSConnectionRegistry(server: self)
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { child in
                    guard registry.admit(child) else { return child.close() }
                    return Self.initializeConnection(child, sslContext: sslContext, shared: shared, limits: limits)
                }
                .bind(to: address).get()
        } catch {
            throw HTTPSServerError(.bind, "Could not listen for HTTPS on [\(configuration.host)]:\(configuration.port): \(error). Is the port taken, or the address not on this host?")
        }
        let port = channel.localAddress?.port ?? configuration.port
        shared.setAltSvcPort(announcedHTTP3Port ?? port)
        state.withLock { $0.serverChannel = channel }
        return port
    }

    /// Stops accepting, lets exchanges in flight finish for ``Limits/shutdownGrace``, then closes
    /// every connection.
    public func stop() async {
        let server = state.withLock { s in defer { s.serverChannel = nil }; return s.serverChannel }
        try? await server?.close().get()
        // Idle connections close now; busy ones after their exchange (HTTP/1.1) or the grace.
        for connection in state.withLock({ Array($0.connections.values) }) {
            connection.pipeline.fireUserInboundEventTriggered(HTTPSServerStopping())
        }
        let deadline = ContinuousClock.now + limits.shutdownGrace
        while ContinuousClock.now < deadline, !state.withLock({ $0.connections.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let rest = state.withLock { Array($0.connections.values) }
        for connection in rest { try? await connection.close().get() }
    }

    /// Open connections right now (for tests and metrics).
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    fileprivate func admit(_ channel: any Channel) -> Bool {
        state.withLock { s in
            guard s.connections.count < limits.maxConnections else { return false }
            s.connections[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    fileprivate func forget(_ channel: any Channel) {
        _ = state.withLock { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Loads a PEM certificate chain and key into a TLS server context offering `h2` and `http/1.1`.
    static func makeSSLContext(certificatePath: String, keyPath: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw HTTPSServerError(.certificate, "Could not read the HTTPS certificate '\(certificatePath)' (\(error)). Pass a PEM certificate chain with --http-cert, or let the node use its own.")
        }
        guard !chain.isEmpty else {
            throw HTTPSServerError(.certificate, "'\(certificatePath)' holds no PEM certificate. Pass a PEM certificate chain with --http-cert.")
        }
        let key: NIOSSLPrivateKey
        do {
            if PKCS11URI.isURI(keyPath) {
                // The key is in a token: it signs the handshakes there (TokenTLSKey).
                let token = try TokenKey(uri: keyPath)
                guard (try? chain[0].extractPublicKey().toSPKIBytes()) == token.publicKeyDER else {
                    throw HTTPSServerError(.certificate, "the certificate and the given key do not match: \(PKCS11URI.redacted(keyPath)) is not the key of '\(certificatePath)'")
                }
                key = NIOSSLPrivateKey(customPrivateKey: TokenTLSKey(token: token))
            } else {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            }
        } catch let error as HTTPSServerError {
            throw error
        } catch let error as STOQError {
            throw HTTPSServerError(.certificate, "Could not use the HTTPS key in the token (\(error.reason)).")
        } catch {
            throw HTTPSServerError(.certificate, "Could not read the HTTPS private key '\(keyPath)' (\(error)). Pass the PEM key of the certificate with --http-key.")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.applicationProtocols = ["h2", "http/1.1"]
        tls.certificateVerification = .none
        tls.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw HTTPSServerError(.certificate, "The HTTPS certificate '\(certificatePath)' and key '\(keyPath)' do not make a TLS context (\(error)). Check that the key belongs to the certificate.")
        }
    }

    /// TLS, the idle timeout, then HTTP/2 or HTTP/1.1 by ALPN.
    private static func initializeConnection(
        _ channel: any Channel, sslContext: NIOSSLContext, shared: HTTPSServerShared, limits: Limits
    ) -> EventLoopFuture<Void> {
        let client = channel.remoteAddress.map(Self.describe) ?? "unknown"
        let activity = NIOLoopBound(HTTPSConnectionActivity(), eventLoop: channel.eventLoop)
        let idle = TimeAmount.nanoseconds(Int64(HTTPSExchange.seconds(limits.idleTimeout) * 1e9))
        return channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(NIOSSLServerHandler(context: sslContext))
            try sync.addHandler(IdleStateHandler(allTimeout: idle))
            try sync.addHandler(HTTPSIdleCloser(activity: activity.value))
        }.flatMap {
            channel.configureHTTP2SecureUpgrade(
                h2ChannelConfigurator: { channel in
                    configureHTTP2(channel, shared: shared, limits: limits, activity: activity, client: client)
                },
                http1ChannelConfigurator: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
                        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
                        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
                        decoderLimits.maxHeaderFieldCount = 256
                        let upgrader = HTTPSWebSocket.upgrader(shared: shared, activity: activity)
                        let sync = channel.pipeline.syncOperations
                        try sync.configureHTTPServerPipeline(
                            position: .last, withPipeliningAssistance: true,
                            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
                            withErrorHandling: true, withOutboundHeaderValidation: true,
                            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits
                        )
                        try sync.addHandler(
                            HTTPSExchangeHandler(shared: shared, activity: activity.value, wire: .http1, client: client),
                            name: HTTPSExchangeHandler.name
                        )
                    }
                }
            )
        }
    }

    private static func configureHTTP2(
        _ channel: any Channel, shared: HTTPSServerShared, limits: Limits, activity: NIOLoopBound<HTTPSConnectionActivity>, client: String
    ) -> EventLoopFuture<Void> {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: limits.maxHeaderBytes),
        ]
        // NIO's DoS heuristics allow 200 control frames, 200 RST_STREAMs and 200 stream errors per
        // 30 s on a connection, then send GOAWAY (ENHANCE_YOUR_CALM). curl 7.88 resets each of
        // its streams as it finishes with it, so a client fetching more than 200 objects on one
        // connection was cut off. Allow 100 a second of each: still far below a rapid-reset
        // flood, and every stream is bounded by the concurrent-stream limit anyway.
        connection.controlFrameRateLimit.maximumCount = 1000
        connection.controlFrameRateLimit.windowLength = .seconds(10)
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.streamResetFrameRateLimit.maximumCount = 1000
        stream.streamResetFrameRateLimit.windowLength = .seconds(10)
        stream.streamErrorRateLimit.maximumCount = 1000
        stream.streamErrorRateLimit.windowLength = .seconds(10)
        // A stream is writable while less than this is queued (NIO's default, 8 KiB, is half a
        // piece of body: every piece then waited for the previous one to leave).
        stream.outboundBufferSizeHighWatermark = 256 * 1024
        stream.outboundBufferSizeLowWatermark = 128 * 1024
        return channel.configureHTTP2Pipeline(mode: .server, connectionConfiguration: connection, streamConfiguration: stream) { streamChannel in
            streamChannel.eventLoop.makeCompletedFuture {
                activity.value.requests += 1
                guard activity.value.requests <= limits.maxRequestsPerConnection else {
                    // Refuse the stream (RST_STREAM): the client opens a new connection.
                    throw ChannelError.inappropriateOperationForState
                }
                let sync = streamChannel.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try sync.addHandler(HTTPSExchangeHandler(shared: shared, activity: activity.value, wire: .http2, client: client))
            }
        }.map { _ in () }
    }

    /// `[::1]:51234`, as an access log prints a client.
    static func describe(_ address: SocketAddress) -> String {
        let ip = address.ipAddress ?? "?"
        let port = address.port.map(String.init) ?? "?"
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}

/// Admits connections up to the bound and forgets them when they close.
private struct HTTPSConnectionRegistry: Sendable {
    let server: HTTPSServer

    func admit(_ channel: any Channel) -> Bool {
        guard server.admit(channel) else { return false }
        let server = self.server
        channel.closeFuture.whenComplete { _ in server.forget(channel) }
        return true
    }
}

/// Tells a connection the server is stopping.
struct HTTPSServerStopping: Sendable {}

/// Closes a connection on the idle timeout when nothing is in flight and it is no WebSocket.
final class HTTPSIdleCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let activity: HTTPSConnectionActivity

    init(activity: HTTPSConnectionActivity) { self.activity = activity }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTPSServerStopping {
            activity.stopping = true
            if activity.inFlight == 0 { context.close(promise: nil) }
            return
        }
        if event is IdleStateHandler.IdleStateEvent {
            if activity.inFlight == 0, !activity.webSocket { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HTTPSIdleCloser: Sendable {}

