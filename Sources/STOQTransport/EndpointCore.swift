import Collections
import Logging
import NIOCore
import NIOPosix

/// Reads the endpoint clock: nanoseconds of NIO's monotonic uptime (the same clock timers use).
@inline(__always) func clockNow() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

/// The endpoint's state: routing table, connections, socket. Every method runs on
/// `eventLoop`.
// @unchecked Sendable: all mutable state is confined to `eventLoop`; public types hop there.
final class EndpointCore: @unchecked Sendable {
    let eventLoop: EventLoop
    var channel: Channel?
    var localAddress: SocketAddress
    var tls: TLSConfiguration
    var credentials: TLSCredentials
    let config: EndpointConfiguration
    let retrySecret = NGTCP2Packet.randomBytes(32)
    let resetSecret = NGTCP2Packet.randomBytes(32)
    private(set) var routes: [ConnectionID: ConnectionCore] = [:]
    private(set) var connections: [ObjectIdentifier: ConnectionCore] = [:]
    private var dirty: [ConnectionCore] = []
    private var needsFlush = false
    let pool = TransmitBufferPool()
    var gso = false
    var closed = false
    let incoming: AsyncStream<Connection>
    let incomingContinuation: AsyncStream<Connection>.Continuation
    let logger = Logger(label: "stoq.transport")
    let handshakeFailures: AsyncStream<STOQError>
    let handshakeFailureContinuation: AsyncStream<STOQError>.Continuation
    /// Datagrams dropped because they could not be parsed or routed (for tests and stats).
    private(set) var droppedDatagrams = 0

    init(eventLoop: EventLoop, localAddress: SocketAddress, tls: TLSConfiguration, credentials: TLSCredentials, config: EndpointConfiguration) {
        self.eventLoop = eventLoop
        self.localAddress = localAddress
        self.tls = tls
        self.credentials = credentials
        self.config = config
        (incoming, incomingContinuation) = AsyncStream.makeStream(of: Connection.self)
        (handshakeFailures, handshakeFailureContinuation) = AsyncStream.makeStream(
            of: STOQError.self, bufferingPolicy: .bufferingNewest(64))
    }

    var connectionCount: Int { connections.count }

    func settings(alpn: [String]? = nil) -> QUICConnection.Settings {
        var t = tls
        if let alpn { t.alpn = alpn }
        return QUICConnection.Settings(
            endpoint: config, tls: t, credentials: credentials, statelessResetSecret: resetSecret, pool: pool)
    }

    // MARK: Receive

    func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        let remote = envelope.remoteAddress
        guard remote.isPlainIPv6 else {
            droppedDatagrams += 1
            return
        }
        let now = clockNow()
        if let seg = envelope.metadata?.segmentSize, seg > 0, envelope.data.readableBytes > seg {
            var data = envelope.data
            while data.readableBytes > 0, let d = data.readSlice(length: min(seg, data.readableBytes)) {
                receiveOne(d, remote: remote, now: now)
            }
        } else {
            receiveOne(envelope.data, remote: remote, now: now)
        }
    }

    private func receiveOne(_ data: ByteBuffer, remote: SocketAddress, now: UInt64) {
        guard let header = NGTCP2Packet.decode(data) else {
            droppedDatagrams += 1
            return
        }
        if header.needsVersionNegotiation {
            // Only for datagrams big enough to be a client's first flight (no amplification).
            if !closed, data.readableBytes >= 1200,
                let vn = NGTCP2Packet.versionNegotiation(for: header, allocator: channel?.allocator ?? ByteBufferAllocator())
            {
                write(AddressedEnvelope(remoteAddress: remote, data: vn))
            }
            return
        }
        let path = QUICPath(local: localAddress, remote: remote)
        if let conn = routes[header.dcid] {
            conn.quic.handle(datagram: data, path: path, now: now)
            markDirty(conn)
            return
        }
        guard header.isLong, !closed else {
            droppedDatagrams += 1
            return
        }
        accept(data, remote: remote, path: path, now: now)
    }

    private func accept(_ data: ByteBuffer, remote: SocketAddress, path: QUICPath, now: UInt64) {
        guard let initial = NGTCP2Packet.accept(data) else {
            droppedDatagrams += 1
            return
        }
        if let max = config.maxConnections, connections.count >= max {
            logger.debug("refusing a connection: \(max) connections already held")
            if let refusal = NGTCP2Packet.refuse(
                initial, reason: "server busy: it holds its maximum of \(max) connections",
                allocator: channel?.allocator ?? ByteBufferAllocator())
            {
                write(AddressedEnvelope(remoteAddress: remote, data: refusal))
            }
            return
        }
        var odcid: ConnectionID? = nil
        var retrySCID: ConnectionID? = nil
        if config.addressValidation {
            if initial.token.isEmpty || !NGTCP2Packet.isRetryToken(initial.token) {
                if let retry = NGTCP2Packet.retry(
                    for: initial, remote: remote, secret: retrySecret, now: now, allocator: channel?.allocator ?? ByteBufferAllocator())
                {
                    write(AddressedEnvelope(remoteAddress: remote, data: retry))
                }
                return
            }
            guard
                let o = NGTCP2Packet.verifyRetry(
                    initial, remote: remote, secret: retrySecret, timeoutNanos: 10_000_000_000, now: now)
            else {
                droppedDatagrams += 1
                return
            }
            odcid = o
            retrySCID = initial.dcid
        }
        let quic: QUICConnection
        do {
            quic = try QUICConnection(
                serverPath: path, clientSCID: initial.scid, clientDCID: initial.dcid, originalDCID: odcid,
                retrySCID: retrySCID, token: initial.token, version: initial.version, settings: settings(), now: now)
        } catch {
            logger.warning("could not create a server connection: \(error)")
            return
        }
        let conn = ConnectionCore(endpoint: self, quic: quic, remote: remote, connectPromise: nil)
        connections[ObjectIdentifier(conn)] = conn
        routes[initial.dcid] = conn
        conn.extraRoutes.append(initial.dcid)
        for cid in quic.sourceConnectionIDs { routes[cid] = conn }
        quic.handle(datagram: data, path: path, now: now)
        markDirty(conn)
    }

    func markDirty(_ conn: ConnectionCore) {
        if !conn.dirty {
            conn.dirty = true
            dirty.append(conn)
        }
    }

    /// Processes every connection touched since the last call, then flushes once.
    func processDirty() {
        while !dirty.isEmpty {
            let list = dirty
            dirty.removeAll(keepingCapacity: true)
            for conn in list {
                conn.dirty = false
                conn.process()
            }
        }
        flushIfNeeded()
    }

    // MARK: Send

    func write(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let channel else { return }
        channel.write(envelope, promise: nil)
        needsFlush = true
    }

    func send(_ t: QUICConnection.Transmit) {
        guard t.path.remote.isPlainIPv6 else { return }
        if t.count > 1 {
            if gso {
                write(AddressedEnvelope(
                    remoteAddress: t.path.remote, data: t.buffer,
                    metadata: .init(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: t.segmentSize)))
            } else {
                var b = t.buffer
                while b.readableBytes > 0, let d = b.readSlice(length: min(t.segmentSize, b.readableBytes)) {
                    write(AddressedEnvelope(remoteAddress: t.path.remote, data: d))
                }
            }
        } else {
            write(AddressedEnvelope(remoteAddress: t.path.remote, data: t.buffer))
        }
    }

    func flushIfNeeded() {
        if needsFlush {
            needsFlush = false
            channel?.flush()
        }
    }

    // MARK: Routing

    func addRoute(_ cid: ConnectionID, _ conn: ConnectionCore) { routes[cid] = conn }
    func removeRoute(_ cid: ConnectionID, _ conn: ConnectionCore) {
        if routes[cid] === conn { routes[cid] = nil }
    }

    func remove(_ conn: ConnectionCore) {
        connections[ObjectIdentifier(conn)] = nil
        for cid in conn.quic.sourceConnectionIDs { removeRoute(cid, conn) }
        for cid in conn.extraRoutes { removeRoute(cid, conn) }
        // Sweep anything else still pointing at it.
        if routes.values.contains(where: { $0 === conn }) {
            routes = routes.filter { $0.value !== conn }
        }
    }

    // MARK: Client

    func connect(remote: SocketAddress, serverName: String?, alpn: [String]?, promise: EventLoopPromise<Connection>) {
        guard !closed, channel != nil else {
            promise.fail(STOQError(.endpointClosed, "the endpoint is closed"))
            return
        }
        if let max = config.maxConnections, connections.count >= max {
            promise.fail(STOQError(.tooManyConnections, "this endpoint already holds its maximum of \(max) connections; raise EndpointConfiguration.maxConnections or close some"))
            return
        }
        let now = clockNow()
        let quic: QUICConnection
        do {
            quic = try QUICConnection(
                clientPath: QUICPath(local: localAddress, remote: remote), serverName: serverName,
                settings: settings(alpn: alpn), now: now)
        } catch {
            promise.fail(error)
            return
        }
        let conn = ConnectionCore(endpoint: self, quic: quic, remote: remote, connectPromise: promise)
        connections[ObjectIdentifier(conn)] = conn
        for cid in quic.sourceConnectionIDs { routes[cid] = conn }
        conn.process()
        flushIfNeeded()
    }

    // MARK: Lifecycle

    func closeAll(code: UInt64, reason: String) {
        closed = true
        for conn in connections.values { conn.quic.close(code: code, reason: reason); markDirty(conn) }
        processDirty()
        incomingContinuation.finish()
        handshakeFailureContinuation.finish()
    }

    func migrateClients(to newLocal: SocketAddress) {
        localAddress = newLocal
        let now = clockNow()
        for conn in connections.values where !conn.quic.isServer {
            _ = conn.quic.migrate(to: QUICPath(local: newLocal, remote: conn.remote), now: now)
            markDirty(conn)
        }
        processDirty()
    }
}

/// Bridges the UDP channel to the endpoint core.
final class EndpointHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let core: EndpointCore

    init(core: EndpointCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        core.receive(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        core.processDirty()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // UDP errors (e.g. ICMP unreachable) are not fatal to the endpoint.
        core.logger.debug("UDP error: \(error)")
    }
}
