import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// One UDP socket speaking QUIC over IPv6: it accepts connections and dials them, and
/// demultiplexes packets by connection ID.
///
/// QUIC work runs on SwiftNIO event loops; the async methods hop there. By default an endpoint
/// has one socket and one loop. With ``EndpointConfiguration/eventLoops`` N > 1 it binds N sockets
/// to the same address and port (`SO_REUSEPORT`), one loop each, and each connection lives on one
/// of them (see `EndpointShared`), so a server with many connections uses N cores.
/// IPv4 and IPv4-mapped addresses are refused everywhere (STOQ is IPv6-only).
///
/// ```swift
/// let server = try await Endpoint.bind(host: "::1", port: 0, tls: serverTLS)
/// let client = try await Endpoint.bind(host: "::1", port: 0, tls: clientTLS)
/// let connection = try await client.connect(host: "::1", port: server.localAddress.port!)
/// ```
public final class Endpoint: Sendable {
    /// The first socket's core (the only one unless ``EndpointConfiguration/eventLoops`` > 1).
    let core: EndpointCore
    /// One core per socket and event loop.
    let cores: [EndpointCore]
    private let address: NIOLockedValueBox<SocketAddress>
    private let group: EventLoopGroup

    private init(cores: [EndpointCore], group: EventLoopGroup) {
        self.core = cores[0]
        self.cores = cores
        self.group = group
        self.address = NIOLockedValueBox(cores[0].localAddress)
    }

    /// Most event loops (sockets) one endpoint may use.
    public static let maxEventLoops = 64

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
    ///   - group: the event loop group (one loop is picked for this endpoint; with
    ///     ``EndpointConfiguration/eventLoops`` N, N distinct loops, at most as many as it has).
    /// - Throws: ``STOQError`` `.ipv6Only` for IPv4 addresses, `.invalidArgument` for bad
    ///   certificates or addresses or an event loop count out of 1...64.
    public static func bind(
        host: String = "::1", port: Int = 0, tls: TLSConfiguration, configuration: EndpointConfiguration = .init(),
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Endpoint {
        let address = try ipv6Address(host, port: port, role: "listen")
        try tls.validate()
        guard (1...maxEventLoops).contains(configuration.eventLoops) else {
            throw STOQError(.invalidArgument, "an endpoint runs 1 to \(maxEventLoops) event loops, not \(configuration.eventLoops)")
        }
        let credentials = try TLSCredentials(
            certificateChainPEM: tls.certificateChainPEM, privateKeyPEM: tls.privateKeyPEM, trustRootsPEM: tls.trustRootsPEM)
        var loops: [EventLoop] = []
        if configuration.eventLoops == 1 {
            loops = [group.next()]
        } else {
            for loop in group.makeIterator() where loops.count < configuration.eventLoops { loops.append(loop) }
        }
        let shared = EndpointShared(count: loops.count)
        let cores = loops.enumerated().map { i, loop in
            EndpointCore(
                eventLoop: loop, localAddress: address, tls: tls, credentials: credentials, config: configuration,
                shared: shared, index: i)
        }
        if cores.count > 1, address.port != 0 { try await checkPortFree(address, loop: loops[0]) }
        // The first socket resolves port 0; the others join it on that port.
        var bound = address
        var channels: [Channel] = []
        do {
            for core in cores {
                let channel = try await makeChannel(core: core, address: bound)
                channels.append(channel)
                bound = channel.localAddress ?? bound
            }
        } catch {
            for c in channels { try? await c.close() }
            throw error
        }
        for (core, channel) in zip(cores, channels) {
            try await core.eventLoop.submit {
                core.channel = channel
                core.localAddress = channel.localAddress ?? address
            }.get()
        }
        if cores.count > 1 { shared.setCores(cores) }
        let endpoint = Endpoint(cores: cores, group: group)
        endpoint.address.withLockedValue { $0 = cores[0].localAddressUnsafe }
        return endpoint
    }

    /// Binds `address` once without `SO_REUSEPORT` and lets it go: a port another program holds
    /// fails here with "address in use", as it does with one socket, instead of being shared.
    private static func checkPortFree(_ address: SocketAddress, loop: EventLoop) async throws {
        let probe = try await DatagramBootstrap(group: loop)
            .channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
            .bind(to: address).get()
        try? await probe.close()
    }

    static func makeChannel(core: EndpointCore, address: SocketAddress) async throws -> Channel {
        let config = core.config
        var bootstrap = DatagramBootstrap(group: core.eventLoop)
            .channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
        if core.shared.count > 1 {
            bootstrap = bootstrap.channelOption(
                ChannelOptions.Types.SocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
        }
        bootstrap = bootstrap
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
        let core = cores.count == 1 ? self.core : cores[self.core.shared.leastLoaded()]
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
        let box = UnsafeTransfer(credentials)
        // TLSCredentials is immutable once made (GnuTLS credentials are shared read-only by the
        // sessions of every loop), so all loops take the same one.
        for core in cores {
            try await core.eventLoop.submit {
                core.tls = tls
                core.credentials = box.value
            }.get()
        }
    }

    /// Moves the endpoint to a new UDP socket (e.g. after an address change). Client
    /// connections migrate to it and continue; the old socket is closed.
    /// - Parameters:
    ///   - host: new local IPv6 address.
    ///   - port: new local port (0 for any).
    public func rebind(host: String = "::1", port: Int = 0) async throws {
        let address = try Self.ipv6Address(host, port: port, role: "listen")
        if cores.count > 1, address.port != 0 { try await Self.checkPortFree(address, loop: core.eventLoop) }
        var bound = address
        var channels: [Channel] = []
        do {
            for core in cores {
                let channel = try await Self.makeChannel(core: core, address: bound)
                channels.append(channel)
                bound = channel.localAddress ?? bound
            }
        } catch {
            for c in channels { try? await c.close() }
            throw error
        }
        let newLocal = bound
        var olds: [Channel] = []
        for (core, channel) in zip(cores, channels) {
            let old: Channel? = try await core.eventLoop.submit {
                let old = core.channel
                core.channel = channel
                core.migrateClients(to: newLocal)
                return old
            }.get()
            if let old { olds.append(old) }
        }
        self.address.withLockedValue { $0 = newLocal }
        for old in olds { try? await old.close() }
    }

    /// Whether the UDP socket is open and serving (false after ``close()``, or when a send error
    /// closed it and it could not be reopened), with the reason when it is not.
    /// With several sockets: open while any is, the reopenings of all, the first failure.
    public var socketHealth: (isOpen: Bool, reopenings: Int, failure: String?) {
        get async {
            var result: (isOpen: Bool, reopenings: Int, failure: String?) = (false, 0, nil)
            for core in cores {
                let h = (try? await core.eventLoop.submit {
                    (core.channel != nil && !core.closed, core.socketReopenings, core.socketFailure)
                }.get()) ?? (false, 0, "the endpoint's event loop is gone")
                result = (result.isOpen || h.0, result.reopenings + h.1, result.failure ?? h.2)
            }
            return result
        }
    }

    /// Number of connections held now.
    public var connectionCount: Int {
        get async {
            var n = 0
            for core in cores { n += (try? await core.eventLoop.submit { core.connectionCount }.get()) ?? 0 }
            return n
        }
    }

    /// Number of event loops (and sockets) this endpoint runs.
    public var eventLoopCount: Int { cores.count }

    /// Per event loop: connections held, and datagrams its socket received for another loop's
    /// connections and handed over.
    public var loopStatistics: [(connections: Int, handedOver: Int)] {
        get async {
            var out: [(connections: Int, handedOver: Int)] = []
            for core in cores {
                out.append((try? await core.eventLoop.submit { (core.connectionCount, core.handedOver) }.get()) ?? (0, 0))
            }
            return out
        }
    }

    /// Closes every connection (application code 0) and the sockets.
    public func close() async {
        var channels: [Channel] = []
        for core in cores {
            let channel: Channel? = try? await core.eventLoop.submit {
                core.closeAll(code: 0, reason: "endpoint closing")
                let c = core.channel
                core.channel = nil
                return c
            }.get()
            if let channel { channels.append(channel) }
        }
        for channel in channels { try? await channel.close() }
        core.shared.setCores([])
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
