import Collections
import Logging
import NIOCore
import NIOPosix
import Foundation

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
    /// What this endpoint's sockets share (one per event loop); this core is socket `index`.
    let shared: EndpointShared
    let index: Int
    var retrySecret: [UInt8] { shared.retrySecret }
    var resetSecret: [UInt8] { shared.resetSecret }
    private(set) var routes: [ConnectionID: ConnectionCore] = [:]
    private(set) var connections: [ObjectIdentifier: ConnectionCore] = [:]
    private var dirty: [ConnectionCore] = []
    /// Datagrams that reached this socket for connections of another loop, per loop, handed over
    /// in one batch at the end of the read cycle.
    private var handOver: [[(ByteBuffer, SocketAddress)]]
    /// Datagrams handed to another loop (for tests and stats).
    private(set) var handedOver = 0
    private var needsFlush = false
    let pool = TransmitBufferPool()
    var gso = false
    var closed = false
    var incoming: AsyncStream<Connection> { shared.incoming }
    var incomingContinuation: AsyncStream<Connection>.Continuation { shared.incomingContinuation }
    let logger = Logger(label: "stoq.transport")
    var handshakeFailures: AsyncStream<STOQError> { shared.handshakeFailures }
    var handshakeFailureContinuation: AsyncStream<STOQError>.Continuation { shared.handshakeFailureContinuation }
    /// Datagrams dropped because they could not be parsed or routed (for tests and stats).
    private(set) var droppedDatagrams = 0
    /// Times the UDP socket was closed under the endpoint (by a send error) and reopened.
    private(set) var socketReopenings = 0
    /// Why the socket could not be reopened (the endpoint is dead), if that happened.
    private(set) var socketFailure: String?
    /// The destination and error of the send that made NIO close the socket, noted by the first
    /// write it failed (NIO fails pending writes in order, the failing one first).
    private var sendFailure: (remote: SocketAddress, error: String)?
    /// Sends NIO refused without closing the socket (no route to host, message too large).
    private(set) var refusedSends = 0

    init(
        eventLoop: EventLoop, localAddress: SocketAddress, tls: TLSConfiguration, credentials: TLSCredentials,
        config: EndpointConfiguration, shared: EndpointShared = EndpointShared(count: 1), index: Int = 0
    ) {
        self.eventLoop = eventLoop
        self.localAddress = localAddress
        self.tls = tls
        self.credentials = credentials
        var config = config
        // STOQ_MAX_UDP_PAYLOAD fixes the datagram size of every endpoint in the process that
        // leaves it automatic (docs/CONFIG.md): for benchmarks, and for paths whose MTU the
        // kernel reports wrongly (a tunnel inside a large-MTU link).
        if config.maxUDPPayloadSize == nil, let v = ProcessInfo.processInfo.environment["STOQ_MAX_UDP_PAYLOAD"] {
            if let n = Int(v), (1200...NGTCP2Connection.maxUDPPayload).contains(n) {
                config.maxUDPPayloadSize = n
            } else {
                Logger(label: "stoq.transport").warning("STOQ_MAX_UDP_PAYLOAD=\(v) ignored: give a number of bytes from 1200 to \(NGTCP2Connection.maxUDPPayload)")
            }
        }
        self.config = config
        self.shared = shared
        self.index = index
        handOver = Array(repeating: [], count: shared.count)
    }

    var connectionCount: Int { connections.count }

    func settings(alpn: [String]? = nil, path: QUICPath? = nil) -> QUICConnection.Settings {
        var t = tls
        if let alpn { t.alpn = alpn }
        // The datagram size follows the kernel's path MTU unless configured (one socket per
        // new connection; 65536 on loopback gives 65488-byte datagrams).
        let mtu = config.maxUDPPayloadSize == nil ? path.flatMap(NGTCP2Connection.pathMTU) : nil
        return QUICConnection.Settings(
            endpoint: config, tls: t, credentials: credentials, statelessResetSecret: resetSecret, pool: pool,
            pathMTU: mtu)
    }

    // MARK: Receive

    func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        let remote = envelope.remoteAddress
        // A source no reply can go to (port 0, multicast, IPv4-mapped...) is spoofed: answering it
        // would be a send the kernel refuses.
        guard remote.unsendableReason == nil else {
            droppedDatagrams += 1
            return
        }
        let now = clockNow()
        let path = QUICPath(local: localAddress, remote: remote)  // once per GRO batch
        if let seg = envelope.metadata?.segmentSize, seg > 0, envelope.data.readableBytes > seg {
            var data = envelope.data
            while data.readableBytes > 0, let d = data.readSlice(length: min(seg, data.readableBytes)) {
                receiveOne(d, remote: remote, path: path, now: now)
            }
        } else {
            receiveOne(envelope.data, remote: remote, path: path, now: now)
        }
    }

    /// Datagrams another loop's socket received for connections of this loop.
    func receiveHandedOver(_ batch: [(ByteBuffer, SocketAddress)]) {
        let now = clockNow()
        for (data, remote) in batch {
            receiveOne(data, remote: remote, path: QUICPath(local: localAddress, remote: remote), now: now, handedOver: true)
        }
        processDirty()
    }

    /// The connection the last short-header packet was routed to, by its connection ID: the
    /// packets of one GRO batch (and of one busy connection) skip the table lookup. Cleared
    /// whenever a route changes.
    private var lastRoute: (cid: ConnectionID, conn: ConnectionCore)?

    private func receiveOne(_ data: ByteBuffer, remote: SocketAddress, path: QUICPath, now: UInt64, handedOver: Bool = false) {
        // Fast path: a short-header packet carries one of our connection IDs (always 16 bytes)
        // right after its first byte, so a known connection needs no header decoding here;
        // ngtcp2 parses the packet once, when it reads it.
        if let cid = NGTCP2Packet.shortHeaderDCID(data) {
            let conn: ConnectionCore
            if let last = lastRoute, last.cid == cid {
                conn = last.conn
            } else if let found = routes[cid] {
                conn = found
                lastRoute = (cid, found)
            } else {
                // Another loop's connection (the client's address changed): hand it over, once.
                if shared.count > 1, !handedOver, let owner = shared.owner(of: cid), owner != index {
                    self.handedOver += 1
                    handOver[owner].append((data, remote))
                    return
                }
                droppedDatagrams += 1  // short headers never open connections
                return
            }
            conn.quic.handle(datagram: data, path: path, now: now)
            markDirty(conn)
            return
        }
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
        if let conn = routes[header.dcid] {
            conn.quic.handle(datagram: data, path: path, now: now)
            markDirty(conn)
            return
        }
        // Another loop's connection (the client's address changed, or the connection was placed
        // there): hand the datagram over. One hand-over at most, so a stale entry cannot bounce.
        if shared.count > 1, !handedOver, let owner = shared.owner(of: header.dcid), owner != index {
            self.handedOver += 1
            handOver[owner].append((data, remote))
            return
        }
        guard header.isLong, !closed, !handedOver else {
            droppedDatagrams += 1
            return
        }
        accept(data, remote: remote, path: path, now: now)
    }

    /// Sends the datagrams collected for other loops, one task per loop.
    private func flushHandOver() {
        for i in handOver.indices where !handOver[i].isEmpty {
            let batch = handOver[i]
            handOver[i].removeAll(keepingCapacity: true)
            guard let target = shared.core(i) else { continue }
            let box = UnsafeTransfer(batch)
            target.eventLoop.execute { target.receiveHandedOver(box.value) }
        }
    }

    private func accept(_ data: ByteBuffer, remote: SocketAddress, path: QUICPath, now: UInt64) {
        guard let initial = NGTCP2Packet.accept(data) else {
            droppedDatagrams += 1
            return
        }
        if let max = config.maxConnections, shared.totalConnections >= max {
            logger.debug("refusing a connection: \(max) connections already held")
            if let refusal = NGTCP2Packet.refuse(
                initial, reason: "server busy: it holds its maximum of \(max) connections",
                allocator: channel?.allocator ?? ByteBufferAllocator())
            {
                write(AddressedEnvelope(remoteAddress: remote, data: refusal))
            }
            return
        }
        if let max = config.maxConnectionsPerAddress, shared.accepted(from: IPv6Key(remote)) >= max {
            logger.debug("refusing a connection from \(remote): \(max) connections from that address already")
            if let refusal = NGTCP2Packet.refuse(
                initial, reason: "server busy: it holds its maximum of \(max) connections from your address",
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
        let target = shared.assign(arrived: index, dcid: initial.dcid)
        if target == index {
            create(initial, data, remote: remote, originalDCID: odcid, retrySCID: retrySCID, now: now)
        } else if let core = shared.core(target) {
            let box = UnsafeTransfer((initial, data, remote, odcid, retrySCID))
            core.eventLoop.execute {
                let (initial, data, remote, odcid, retrySCID) = box.value
                core.create(initial, data, remote: remote, originalDCID: odcid, retrySCID: retrySCID, now: clockNow())
                core.processDirty()
            }
        } else {
            shared.removed(target, remote: nil)
        }
    }

    /// Creates the server connection an Initial (validated by the loop it reached) starts; the
    /// loop was charged for it by `EndpointShared.assign`.
    private func create(
        _ initial: NGTCP2Packet.Initial, _ data: ByteBuffer, remote: SocketAddress, originalDCID odcid: ConnectionID?,
        retrySCID: ConnectionID?, now: UInt64
    ) {
        let path = QUICPath(local: localAddress, remote: remote)
        let quic: QUICConnection
        do {
            guard !closed else { throw STOQError(.endpointClosed, "the endpoint is closed") }
            quic = try QUICConnection(
                serverPath: path, clientSCID: initial.scid, clientDCID: initial.dcid, originalDCID: odcid,
                retrySCID: retrySCID, token: initial.token, version: initial.version, settings: settings(path: path), now: now)
        } catch {
            logger.warning("could not create a server connection: \(error)")
            shared.removed(index, remote: nil)
            shared.clearOwner(initial.dcid, index)
            return
        }
        let conn = ConnectionCore(endpoint: self, quic: quic, remote: remote, connectPromise: nil)
        connections[ObjectIdentifier(conn)] = conn
        shared.added(index, remote: IPv6Key(remote), counted: true)
        addRoute(initial.dcid, conn)
        conn.extraRoutes.append(initial.dcid)
        for cid in quic.sourceConnectionIDs { addRoute(cid, conn) }
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
        if shared.count > 1 { flushHandOver() }
    }

    // MARK: Send

    func write(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let channel else { return }
        // NIO closes a datagram channel on any send error but EMSGSIZE and EHOSTUNREACH (an
        // EINVAL for a bad destination, an ENETUNREACH after a route went away, an EPERM from a
        // firewall), which would end every connection of the endpoint. The promise tells us which
        // destination it was, so `socketClosed` can drop that peer alone and reopen the socket.
        let promise = eventLoop.makePromise(of: Void.self)
        let remote = envelope.remoteAddress
        promise.futureResult.whenFailure { [self] error in writeFailed(error, to: remote, on: channel) }
        channel.write(envelope, promise: promise)
        needsFlush = true
    }

    private func writeFailed(_ error: any Error, to remote: SocketAddress, on failed: any Channel) {
        if let e = error as? IOError {
            if sendFailure == nil, failed === channel { sendFailure = (remote, "\(e)") }
        } else if let e = error as? ChannelError, e != .ioOnClosedChannel, e != .alreadyClosed {
            refusedSends += 1
            logger.debug("a datagram to \(remote) was not sent: \(e)")
        }
    }

    /// The UDP channel closed. When that was not asked for (`close`, `rebind`), a send error
    /// closed it: drop the connections to the destination that caused it and reopen the socket
    /// on the same address and port, so every other connection continues.
    func socketClosed(_ closedChannel: any Channel) {
        guard !closed, let current = channel, current === closedChannel else { return }
        channel = nil
        needsFlush = false
        let cause = sendFailure
        sendFailure = nil
        if let cause {
            let error = STOQError(
                .unreachable, "cannot send to \(cause.remote): the kernel refused (\(cause.error)); check the address and the routes to it")
            let victims = connections.values.filter { $0.remote == cause.remote || $0.quic.currentPath.remote == cause.remote }
            logger.warning("a send to \(cause.remote) failed (\(cause.error)) and closed the UDP socket; closing \(victims.count) connection(s) to it and reopening the socket")
            for conn in victims { conn.abandon(error) }
        } else {
            logger.warning("the UDP socket closed unexpectedly; reopening it on \(localAddress)")
        }
        reopenSocket(attempt: 1)
    }

    private func reopenSocket(attempt: Int) {
        let address = localAddress
        Task { [self] in
            do {
                let fresh = try await Endpoint.makeChannel(core: self, address: address)
                eventLoop.execute { [self] in
                    guard !closed, channel == nil else {
                        fresh.close(promise: nil)
                        return
                    }
                    channel = fresh
                    socketReopenings += 1
                    logger.notice("reopened the UDP socket on \(address)")
                    for conn in connections.values { markDirty(conn) }
                    processDirty()
                }
            } catch {
                eventLoop.execute { [self] in
                    guard !closed, channel == nil else { return }
                    if attempt < 5 {
                        _ = eventLoop.scheduleTask(in: .milliseconds(Int64(50 << attempt))) { [self] in reopenSocket(attempt: attempt + 1) }
                        return
                    }
                    socketFailure = "the UDP socket on \(address) was closed by a send error and could not be reopened: \(error)"
                    logger.error("\(socketFailure ?? "")")
                    let dead = STOQError(.endpointClosed, socketFailure ?? "the endpoint's socket is closed")
                    for conn in Array(connections.values) { conn.abandon(dead) }
                    closed = true
                    // The endpoint's other sockets, if any, keep serving; this one takes no more.
                    if shared.count > 1 {
                        shared.retire(index)
                    } else {
                        incomingContinuation.finish()
                        handshakeFailureContinuation.finish()
                    }
                }
            }
        }
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

    func addRoute(_ cid: ConnectionID, _ conn: ConnectionCore) {
        routes[cid] = conn
        shared.setOwner(cid, index)
        lastRoute = nil
    }
    func removeRoute(_ cid: ConnectionID, _ conn: ConnectionCore) {
        if routes[cid] === conn {
            routes[cid] = nil
            shared.clearOwner(cid, index)
        }
        lastRoute = nil
    }

    func remove(_ conn: ConnectionCore) {
        lastRoute = nil
        if connections.removeValue(forKey: ObjectIdentifier(conn)) != nil {
            shared.removed(index, remote: conn.quic.isServer ? IPv6Key(conn.remote) : nil)
        }
        for cid in conn.quic.sourceConnectionIDs { removeRoute(cid, conn) }
        for cid in conn.extraRoutes { removeRoute(cid, conn) }
        // Sweep anything else still pointing at it.
        if routes.values.contains(where: { $0 === conn }) {
            for (cid, c) in routes where c === conn { shared.clearOwner(cid, index) }
            routes = routes.filter { $0.value !== conn }
        }
    }

    // MARK: Client

    func connect(remote: SocketAddress, serverName: String?, alpn: [String]?, promise: EventLoopPromise<Connection>) {
        guard !closed, channel != nil else {
            promise.fail(STOQError(.endpointClosed, "the endpoint is closed"))
            return
        }
        if let why = remote.unsendableReason {
            promise.fail(STOQError(.invalidArgument, "cannot dial \(remote): \(why)"))
            return
        }
        // Ask the kernel for a route first, from a throwaway socket on our address: a dial to
        // where no datagram can go fails here, alone, instead of as a send error on the socket
        // every connection shares.
        let localIP = localAddress.ipv6Kind == .linkLocal ? "::" : (localAddress.ipAddress ?? "::")
        let local = (try? SocketAddress(ipAddress: localIP, port: 0)) ?? localAddress
        DatagramBootstrap(group: eventLoop)
            .channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
            .bind(to: local)
            .flatMap { probe in probe.connect(to: remote).always { _ in probe.close(promise: nil) } }
            .hop(to: eventLoop)
            .whenComplete { [self] result in
                switch result {
                case .success:
                    connectRouted(remote: remote, serverName: serverName, alpn: alpn, promise: promise)
                case .failure(let error):
                    promise.fail(STOQError(.unreachable, "cannot dial \(remote): no route from \(localAddress.ipAddress ?? "here") (\(error)); check the address and this host's routes"))
                }
            }
    }

    func connectRouted(remote: SocketAddress, serverName: String?, alpn: [String]?, promise: EventLoopPromise<Connection>) {
        guard !closed, channel != nil else {
            promise.fail(STOQError(.endpointClosed, "the endpoint is closed"))
            return
        }
        if let max = config.maxConnections, shared.totalConnections >= max {
            promise.fail(STOQError(.tooManyConnections, "this endpoint already holds its maximum of \(max) connections; raise EndpointConfiguration.maxConnections or close some"))
            return
        }
        let now = clockNow()
        let quic: QUICConnection
        let path = QUICPath(local: localAddress, remote: remote)
        do {
            quic = try QUICConnection(
                clientPath: path, serverName: serverName, settings: settings(alpn: alpn, path: path), now: now)
        } catch {
            promise.fail(error)
            return
        }
        let conn = ConnectionCore(endpoint: self, quic: quic, remote: remote, connectPromise: promise)
        connections[ObjectIdentifier(conn)] = conn
        shared.added(index, remote: nil, counted: false)
        for cid in quic.sourceConnectionIDs { addRoute(cid, conn) }
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

/// An IPv6 address without its port, as a dictionary key.
struct IPv6Key: Hashable {
    let high: UInt64
    let low: UInt64
    let scope: UInt32

    init(_ address: SocketAddress) {
        guard case .v6(let a) = address else {
            high = 0
            low = 0
            scope = 0
            return
        }
        let words = withUnsafeBytes(of: a.address.sin6_addr) { b in
            (b.loadUnaligned(fromByteOffset: 0, as: UInt64.self), b.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        high = words.0
        low = words.1
        scope = a.address.sin6_scope_id
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
