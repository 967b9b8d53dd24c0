import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One UDP socket speaking QUIC over IPv6: it accepts connections and dials them, and
/// demultiplexes packets by connection ID.
///
/// All QUIC work for an endpoint runs on one SwiftNIO event loop; the async methods hop
/// there. IPv4 and IPv4-mapped addresses are refused everywhere (STOQ is IPv6-only).
///
/// ```swift
/// let server = try await Endpoint.bind(host: "::1", port: 0, tls: serverTLS)
/// let client = try await Endpoint.bind(host: "::1", port: 0, tls: clientTLS)
/// let connection = try await client.connect(host: "::1", port: server.localAddress.port!)
/// ```
public final class Endpoint: Sendable {
    let core: EndpointCore
    private let address: NIOLockedValueBox<SocketAddress>
    private let group: EventLoopGroup

    private init(core: EndpointCore, group: EventLoopGroup) {
        self.core = core
        self.group = group
        self.address = NIOLockedValueBox(core.localAddress)
    }

    /// Parses a numeric IPv6 address, refusing IPv4 and IPv4-mapped ones.
    static func ipv6Address(_ host: String, port: Int, role: String) throws(STOQError) -> SocketAddress {
        let h = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let name = h == "localhost" ? "::1" : h
        guard (0...65535).contains(port) else {
            throw STOQError(.invalidArgument, "port \(port) is out of range")
        }
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: name, port: port)
        } catch {
            throw STOQError(.invalidArgument, "\(role) address '\(host)' is not a numeric IPv6 address (e.g. ::1)")
        }
        guard address.isPlainIPv6 else { throw STOQError.ipv6Only("the \(role) address \(host)") }
        return address
    }

    /// Binds a UDP socket (IPV6_V6ONLY) and starts the endpoint.
    /// - Parameters:
    ///   - host: a numeric IPv6 address (`::1`, `::`, an `fd00::/8` address).
    ///   - port: UDP port, 0 for any.
    ///   - tls: identity, trust roots and ALPN.
    ///   - configuration: transport settings.
    ///   - group: the event loop group (one loop is picked for this endpoint).
    /// - Throws: ``STOQError`` `.ipv6Only` for IPv4 addresses, `.invalidArgument` for bad
    ///   certificates or addresses.
    public static func bind(
        host: String = "::1", port: Int = 0, tls: TLSConfiguration, configuration: EndpointConfiguration = .init(),
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Endpoint {
        let address = try ipv6Address(host, port: port, role: "listen")
        try tls.validate()
        let credentials = try TLSCredentials(
            certificateChainPEM: tls.certificateChainPEM, privateKeyPEM: tls.privateKeyPEM, trustRootsPEM: tls.trustRootsPEM)
        let loop = group.next()
        let core = EndpointCore(eventLoop: loop, localAddress: address, tls: tls, credentials: credentials, config: configuration)
        let channel = try await makeChannel(core: core, address: address)
        try await loop.submit {
            core.channel = channel
            core.localAddress = channel.localAddress ?? address
        }.get()
        let endpoint = Endpoint(core: core, group: group)
        endpoint.address.withLockedValue { $0 = core.localAddressUnsafe }
        return endpoint
    }

    static func makeChannel(core: EndpointCore, address: SocketAddress) async throws -> Channel {
        let config = core.config
        var bootstrap = DatagramBootstrap(group: core.eventLoop)
            .channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
            .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(config.socketBufferSize))
            .channelOption(ChannelOptions.socketOption(.so_sndbuf), value: SocketOptionValue(config.socketBufferSize))
            .channelOption(ChannelOptions.maxMessagesPerRead, value: 64)
        let gro = config.useGRO && System.supportsUDPReceiveOffload
        if gro {
            bootstrap = bootstrap
                .channelOption(ChannelOptions.datagramReceiveOffload, value: true)
                .channelOption(ChannelOptions.datagramReceiveSegmentSize, value: true)
                .channelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
        } else {
            bootstrap = bootstrap
                .channelOption(ChannelOptions.datagramVectorReadMessageCount, value: 32)
                .channelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048 * 32))
        }
        bootstrap = bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(EndpointHandler(core: core))
            }
        }
        let channel = try await bootstrap.bind(to: address).get()
        channel.closeFuture.whenComplete { _ in core.socketClosed(channel) }
        // Linux doubles SO_RCVBUF/SO_SNDBUF and caps the request at net.core.rmem_max/wmem_max:
        // say so when the cap bites, since a small receive buffer drops datagrams at high rates.
        let rcv = try? await channel.getOption(ChannelOptions.socketOption(.so_rcvbuf)).get()
        let snd = try? await channel.getOption(ChannelOptions.socketOption(.so_sndbuf)).get()
        if let rcv, let snd, min(Int(rcv), Int(snd)) / 2 < config.socketBufferSize,
            Self.bufferCapNoted.withLockedValue({ noted in defer { noted = true }; return !noted })
        {
            core.logger.notice(
                "UDP socket buffers capped by the kernel: receive \(rcv / 2) and send \(snd / 2) bytes of the \(config.socketBufferSize) asked for; raise net.core.rmem_max and net.core.wmem_max (sysctl) for fast transfers")
        }
        let gso = config.useGSO && System.supportsUDPSegmentationOffload
        try await core.eventLoop.submit { core.gso = gso }.get()
        return channel
    }

    /// Whether the socket buffer cap was logged (once per process: every endpoint meets it).
    private static let bufferCapNoted = NIOLockedValueBox(false)

    /// The bound address (port resolved).
    public var localAddress: SocketAddress { address.withLockedValue { $0 } }

    /// Connections accepted by this endpoint, each after its handshake completed.
    public var incomingConnections: AsyncStream<Connection> { core.incoming }

    /// Errors of incoming handshakes this endpoint refused or lost (untrusted or missing
    /// client certificate, ALPN mismatch, timeouts); the newest 64 are kept.
    public var handshakeFailures: AsyncStream<STOQError> { core.handshakeFailures }

    /// Dials a STOQ node.
    /// - Parameters:
    ///   - host: numeric IPv6 address of the peer.
    ///   - port: its UDP port.
    ///   - serverName: TLS server name (SNI), optional.
    ///   - alpn: protocols to offer instead of the endpoint's.
    /// - Returns: the connection once the handshake is confirmed.
    /// - Throws: ``STOQError`` (`.ipv6Only`, `.handshakeFailed`, `.alpnMismatch`, ...).
    public func connect(host: String, port: Int, serverName: String? = nil, alpn: [String]? = nil) async throws -> Connection {
        let remote = try Self.ipv6Address(host, port: port, role: "peer")
        return try await connect(to: remote, serverName: serverName, alpn: alpn)
    }

    /// Dials a STOQ node at `address` (must be IPv6).
    public func connect(to address: SocketAddress, serverName: String? = nil, alpn: [String]? = nil) async throws -> Connection {
        guard address.isPlainIPv6 else { throw STOQError.ipv6Only("the peer address \(address)") }
        let core = self.core
        let promise = core.eventLoop.makePromise(of: Connection.self)
        core.eventLoop.execute {
            core.connect(remote: address, serverName: serverName, alpn: alpn, promise: promise)
        }
        return try await promise.futureResult.get()
    }

    /// Replaces the certificate, key and trust roots for new handshakes. Existing
    /// connections keep running on the credentials they started with.
    public func updateIdentity(tls: TLSConfiguration) async throws {
        try tls.validate()
        let credentials = try TLSCredentials(
            certificateChainPEM: tls.certificateChainPEM, privateKeyPEM: tls.privateKeyPEM, trustRootsPEM: tls.trustRootsPEM)
        let core = self.core
        let box = UnsafeTransfer(credentials)
        try await core.eventLoop.submit {
            core.tls = tls
            core.credentials = box.value
        }.get()
    }

    /// Moves the endpoint to a new UDP socket (e.g. after an address change). Client
    /// connections migrate to it and continue; the old socket is closed.
    /// - Parameters:
    ///   - host: new local IPv6 address.
    ///   - port: new local port (0 for any).
    public func rebind(host: String = "::1", port: Int = 0) async throws {
        let address = try Self.ipv6Address(host, port: port, role: "listen")
        let core = self.core
        let channel = try await Self.makeChannel(core: core, address: address)
        let newLocal = channel.localAddress ?? address
        let old: Channel? = try await core.eventLoop.submit {
            let old = core.channel
            core.channel = channel
            core.migrateClients(to: newLocal)
            return old
        }.get()
        self.address.withLockedValue { $0 = newLocal }
        try? await old?.close()
    }

    /// Whether the UDP socket is open and serving (false after ``close()``, or when a send error
    /// closed it and it could not be reopened), with the reason when it is not.
    public var socketHealth: (isOpen: Bool, reopenings: Int, failure: String?) {
        get async {
            let core = self.core
            return (try? await core.eventLoop.submit {
                (core.channel != nil && !core.closed, core.socketReopenings, core.socketFailure)
            }.get()) ?? (false, 0, "the endpoint's event loop is gone")
        }
    }

    /// Number of connections held now.
    public var connectionCount: Int {
        get async {
            let core = self.core
            return (try? await core.eventLoop.submit { core.connectionCount }.get()) ?? 0
        }
    }

    /// Closes every connection (application code 0) and the socket.
    public func close() async {
        let core = self.core
        let channel: Channel? = try? await core.eventLoop.submit {
            core.closeAll(code: 0, reason: "endpoint closing")
            let c = core.channel
            core.channel = nil
            return c
        }.get()
        try? await channel?.close()
    }
}

extension EndpointCore {
    var localAddressUnsafe: SocketAddress { localAddress }
}

/// Moves a non-Sendable value to the event loop that will own it from then on.
///
/// `@unchecked Sendable`: the sender hands the value over and never touches it again, so only the
/// event loop uses it (each use site must keep to that).
struct UnsafeTransfer<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
