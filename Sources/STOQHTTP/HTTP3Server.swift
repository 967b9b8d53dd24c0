import Foundation
import Logging
import NIOCore
import STOQIdentity
import STOQTransport
import Synchronization

/// The HTTP/3 half of a node's public HTTP listener: HTTP/3 (RFC 9114) over QUIC on a UDP port,
/// ALPN `h3`, framed by nghttp3 on STOQ's own QUIC transport.
///
/// No client certificate is asked for: this listener is for browsers and HTTP clients
/// (node-to-node traffic stays mutual TLS on `stoq/1`). Every request goes to the configuration's
/// ``HTTPResponder``; each response body is pulled as the client reads it.
///
/// ```swift
/// let server = HTTP3Server(configuration: HTTPListenerConfiguration(
///     host: "::1", port: 8443, certificatePath: "node.pem", keyPath: "node.key", responder: responder))
/// let port = try await server.start()
/// ```
public final class HTTP3Server: HTTPListener {
    /// Settings beyond the shared listener configuration.
    public struct Options: Sendable {
        /// Limits on what a client sends.
        public var limits = HTTP3Limits()
        /// Most client connections held at once.
        public var maxConnections = 4096
        /// Most connections from one IPv6 address at once.
        public var maxConnectionsPerAddress = 256
        /// A connection without traffic for this long is closed.
        public var idleTimeout: Duration = .seconds(30)
        /// How long ``HTTP3Server/stop()`` lets requests in flight finish.
        public var gracePeriod: Duration = .seconds(2)
        /// Validate client addresses with a QUIC Retry before keeping any state for them.
        public var addressValidation = true
        /// Unacknowledged response bytes the transport holds per stream before the body is no
        /// longer pulled. With ``HTTP3Session/writeQueueLimit`` it bounds what a client that does
        /// not read costs: about 1.3 MiB per request stream, times ``HTTP3Limits/maxConcurrentRequests``.
        public var streamSendBuffer = 1 << 20

        /// Default options.
        public init() {}
    }

    private struct State {
        var endpoint: Endpoint?
        var acceptTask: Task<Void, Never>?
        var sessions: [ObjectIdentifier: HTTP3Session] = [:]
        var stopped = false
    }

    /// The configuration the server was made with.
    public let configuration: HTTPListenerConfiguration
    /// The options the server was made with.
    public let options: Options
    private let logger: Logger
    private let state = Mutex(State())

    /// Creates a server; nothing listens until ``start()``.
    /// - Parameters:
    ///   - configuration: address, certificate and responder.
    ///   - options: limits and timeouts.
    ///   - logger: where connection-level trouble is logged.
    public init(configuration: HTTPListenerConfiguration, options: Options = Options(), logger: Logger = Logger(label: "stoq.http3")) {
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    /// Binds the UDP port and starts serving.
    /// - Returns: the bound port.
    /// - Throws: ``HTTP3Error`` `.cannotListen` when the address is not IPv6, the port is taken,
    ///   or the certificate or key cannot be read.
    public func start() async throws -> Int {
        let c = configuration
        let certificate: String
        let key: String
        do {
            certificate = try String(contentsOfFile: c.certificatePath, encoding: .utf8)
        } catch {
            throw HTTP3Error(.cannotListen, "cannot read the HTTP certificate \(c.certificatePath): \(error.localizedDescription); pass a readable PEM file with --http-cert")
        }
        do {
            // A `pkcs11:` URI is no file: the transport signs in the token (TokenKey).
            key = PKCS11URI.isURI(c.keyPath) ? c.keyPath : try String(contentsOfFile: c.keyPath, encoding: .utf8)
        } catch {
            throw HTTP3Error(.cannotListen, "cannot read the HTTP private key \(c.keyPath): \(error.localizedDescription); pass a readable PEM file with --http-key")
        }
        let tls = TLSConfiguration(
            certificateChainPEM: certificate, privateKeyPEM: key, trustRootsPEM: nil, alpn: ["h3"],
            requireClientCertificate: false, verifyPeer: false)
        var transport = EndpointConfiguration()
        transport.maxIncomingBidirectionalStreams = UInt64(max(1, options.limits.maxConcurrentRequests))
        // The client's control and QPACK streams, plus room for stream types HTTP/3 ignores.
        transport.maxIncomingUnidirectionalStreams = 16
        transport.maxConnections = options.maxConnections
        transport.maxConnectionsPerAddress = options.maxConnectionsPerAddress
        transport.idleTimeout = options.idleTimeout
        transport.addressValidation = options.addressValidation
        transport.streamSendBufferLimit = max(64 * 1024, options.streamSendBuffer)
        let endpoint: Endpoint
        do {
            endpoint = try await Endpoint.bind(host: c.host, port: c.port, tls: tls, configuration: transport)
        } catch let error as STOQError {
            throw HTTP3Error(.cannotListen, "HTTP/3 cannot listen on [\(c.host)]:\(c.port): \(error.reason)")
        } catch {
            throw HTTP3Error(.cannotListen, "HTTP/3 cannot listen on [\(c.host)]:\(c.port) (is the UDP port taken?): \(error)")
        }
        let task = Task { [self] in await acceptLoop(endpoint) }
        let stale: Endpoint? = state.withLock { s in
            if s.stopped { return endpoint }
            s.endpoint = endpoint
            s.acceptTask = task
            return nil
        }
        if let stale {
            task.cancel()
            await stale.close()
            throw HTTP3Error(.cannotListen, "the HTTP/3 server was stopped while it started")
        }
        return endpoint.localAddress.port ?? c.port
    }

    /// Stops accepting requests (GOAWAY to every client), lets exchanges in flight finish for
    /// ``Options/gracePeriod``, then closes every connection and the socket.
    public func stop() async {
        let (endpoint, task, sessions) = state.withLock { s in
            s.stopped = true
            let r = (s.endpoint, s.acceptTask, Array(s.sessions.values))
            s.endpoint = nil
            s.acceptTask = nil
            return r
        }
        for session in sessions { await session.goaway() }
        let deadline = ContinuousClock.now + options.gracePeriod
        while ContinuousClock.now < deadline {
            var active = 0
            for session in sessions { active += await session.activeExchanges }
            if active == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        for session in sessions { await session.connection.close(code: HTTP3ErrorCode.noError, reason: "server stopping") }
        task?.cancel()
        await endpoint?.close()
    }

    private func acceptLoop(_ endpoint: Endpoint) async {
        await withDiscardingTaskGroup { group in
            for await connection in endpoint.incomingConnections {
                guard connection.negotiatedALPN == "h3" else {
                    await connection.close(code: HTTP3ErrorCode.generalProtocolError, reason: "this listener speaks only h3")
                    continue
                }
                let session: HTTP3Session
                do {
                    session = try HTTP3Session(
                        connection: connection, responder: configuration.responder, limits: options.limits, logger: logger)
                } catch {
                    logger.warning("cannot serve an HTTP/3 connection", metadata: ["error": "\(error)"])
                    await connection.close(code: HTTP3ErrorCode.internalError, reason: "server out of resources")
                    continue
                }
                let key = ObjectIdentifier(session)
                state.withLock { $0.sessions[key] = session }
                group.addTask { [self] in
                    await session.run()
                    _ = state.withLock { $0.sessions.removeValue(forKey: key) }
                }
            }
        }
    }
}
