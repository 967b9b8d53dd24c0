import Collections
import NIOCore

/// A sans-IO QUIC connection: feed it datagrams and timeouts with an explicit clock, take
/// out datagrams, timeouts and events. It never touches a socket or reads the time.
///
/// Verbs follow quinn: ``handle(datagram:path:now:)`` and ``handleTimeout(now:)`` feed input;
/// ``pollTransmit(now:)``, ``pollTimeout()`` and ``pollEvent()`` take output. Not thread-safe:
/// one owner (an event loop, or a test) drives it.
final class QUICConnection {
    /// Something the application must know about.
    enum Event {
        /// TLS handshake done (client: confirmed by the server).
        case handshakeCompleted
        /// The peer opened a stream.
        case streamOpened(Int64)
        /// Bytes or FIN arrived on a stream that had none waiting: take them with ``read(_:)``.
        case streamReadable(Int64)
        /// The peer reset its sending side of a stream.
        case streamReset(Int64, code: UInt64)
        /// The peer asked us to stop sending on a stream.
        case stopSending(Int64, code: UInt64)
        /// A stream's send buffer dropped below the limit.
        case streamWritable(Int64)
        /// A stream is fully closed.
        case streamClosed(Int64)
        /// The peer raised our stream limit.
        case streamsAvailable
        /// A new source connection ID routes to this connection.
        case newConnectionID(ConnectionID)
        /// A source connection ID no longer routes to this connection.
        case retiredConnectionID(ConnectionID)
        /// The connection is over.
        case closed(STOQError)
    }

    /// A batch of equally sized datagrams (the last may be shorter) for one path.
    struct Transmit {
        var path: QUICPath
        var buffer: ByteBuffer
        var segmentSize: Int
        var count: Int
    }

    /// Static settings for one connection.
    struct Settings {
        var endpoint: EndpointConfiguration
        var tls: TLSConfiguration
        var credentials: TLSCredentials
        var statelessResetSecret: [UInt8]
        /// Where transmit buffers come from (shared by an endpoint's connections).
        var pool = TransmitBufferPool()
        /// The kernel's path MTU to the peer, measured by the endpoint (nil: unknown). Sets the
        /// datagram size when ``EndpointConfiguration/maxUDPPayloadSize`` is nil.
        var pathMTU: Int? = nil
    }

    private enum State {
        case handshaking
        case established
        /// A CONNECTION_CLOSE must be sent, then we are closed.
        case closing(applicationCode: UInt64?, reason: String, tlsAlert: Bool, libraryError: Int32?, error: STOQError)
        case closed
    }

    private final class StreamState {
        let send: SendBuffer?
        var finQueued = false
        var finSent = false
        var priority: StreamPriority
        var queued = false
        var blocked = false
        var full = false
        /// The block received bytes are written into now.
        var recv: ByteBuffer?
        /// Blocks filled before `recv`, oldest first (a block is never grown: a full one is
        /// set aside and a new one started, so no received byte is copied twice).
        var recvFilled: Deque<ByteBuffer> = []
        /// Bytes in `recvFilled` and `recv`.
        var recvBytes = 0
        var recvFin = false
        var recvFinTaken = false
        init(canSend: Bool, priority: StreamPriority) {
            self.send = canSend ? SendBuffer() : nil
            self.priority = priority
        }
        var hasPending: Bool {
            guard let send else { return false }
            return send.unsent > 0 || (finQueued && !finSent)
        }
    }

    let isServer: Bool
    private let ngtcp2: NGTCP2Connection
    private let settings: EndpointConfiguration
    private var state: State = .handshaking
    private var events: Deque<Event> = []
    private var streams: [Int64: StreamState] = [:]
    /// Closed streams whose received bytes the application has not taken yet.
    private var closedWithData: [Int64: StreamState] = [:]
    private var ready: [Deque<Int64>] = [[], [], []]
    private var bucket: TokenBucket?
    private var rateBlocked = false
    private var pending: Transmit?
    private let pool: TransmitBufferPool
    private let allocator = ByteBufferAllocator()
    private let sendLimit: UInt64

    /// Bytes of UDP payload sent and received, and packets.
    private(set) var bytesSent: UInt64 = 0
    private(set) var bytesReceived: UInt64 = 0
    /// Stream payload bytes handed to QUIC (first transmissions only).
    private(set) var streamBytesSent: UInt64 = 0

    /// Creates a client connection towards `path.remote`.
    init(clientPath path: QUICPath, serverName: String?, settings s: Settings, now: UInt64) throws(STOQError) {
        isServer = false
        pool = s.pool
        settings = s.endpoint
        sendLimit = UInt64(max(1, s.endpoint.streamSendBufferLimit))
        let setup = Self.setup(
            isServer: false, dcid: .random(length: 18), scid: .random(length: 16), path: path, now: now,
            s: s, serverName: serverName)
        ngtcp2 = try NGTCP2Connection(setup)
        ngtcp2.delegate = self
        if let limit = s.endpoint.rateLimit { bucket = TokenBucket(limit, now: now) }
    }

    /// Creates a server connection for a client's Initial.
    init(
        serverPath path: QUICPath, clientSCID: ConnectionID, clientDCID: ConnectionID,
        originalDCID: ConnectionID?, retrySCID: ConnectionID?, token: [UInt8], version: UInt32,
        settings s: Settings, now: UInt64
    ) throws(STOQError) {
        isServer = true
        pool = s.pool
        settings = s.endpoint
        sendLimit = UInt64(max(1, s.endpoint.streamSendBufferLimit))
        var setup = Self.setup(
            isServer: true, dcid: clientSCID, scid: .random(length: 16), path: path, now: now, s: s,
            serverName: nil)
        setup.version = version
        setup.originalDCID = originalDCID ?? clientDCID
        setup.retrySCID = retrySCID
        setup.token = token
        ngtcp2 = try NGTCP2Connection(setup)
        ngtcp2.delegate = self
        if let limit = s.endpoint.rateLimit { bucket = TokenBucket(limit, now: now) }
    }

    private static func setup(
        isServer: Bool, dcid: ConnectionID, scid: ConnectionID, path: QUICPath, now: UInt64, s: Settings,
        serverName: String?
    ) -> NGTCP2ConnectionSetup {
        let e = s.endpoint
        return NGTCP2ConnectionSetup(
            isServer: isServer, dcid: dcid, scid: scid, path: path, now: now,
            streamWindow: e.streamReceiveWindow, connectionWindow: e.connectionReceiveWindow,
            maxStreamWindow: max(e.maxStreamReceiveWindow, e.streamReceiveWindow),
            maxConnectionWindow: max(e.maxConnectionReceiveWindow, e.connectionReceiveWindow),
            maxStreamsBidi: e.maxIncomingBidirectionalStreams, maxStreamsUni: e.maxIncomingUnidirectionalStreams,
            idleTimeoutNanos: e.idleTimeout.nanoseconds, handshakeTimeoutNanos: e.handshakeTimeout.nanoseconds,
            keepAliveNanos: e.keepAliveInterval?.nanoseconds, ackThreshold: max(1, e.immediateAckThreshold),
            maxUDPPayloadSize: e.maxUDPPayloadSize ?? NGTCP2Connection.automaticPayloadSize(pathMTU: s.pathMTU),
            statelessResetSecret: s.statelessResetSecret,
            credentials: s.credentials, priority: s.tls.priorityString, alpn: s.tls.alpn, serverName: serverName,
            verifyPeer: s.tls.verifyPeer, requireClientCertificate: s.tls.requireClientCertificate,
            allowsAnonymousClients: s.tls.allowsAnonymousClients, pinnedCA: s.tls.pinnedCASPKISHA256)
    }

    // MARK: Inspection

    /// Whether the connection is over and everything it had to send was taken.
    var isClosed: Bool {
        if case .closed = state { return pending == nil }
        return false
    }

    var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    /// Source connection IDs that route to this connection now.
    var sourceConnectionIDs: [ConnectionID] { ngtcp2.sourceConnectionIDs }
    var negotiatedALPN: String? { ngtcp2.negotiatedALPN }
    var peerCertificates: [[UInt8]] { ngtcp2.peerCertificates }
    var stat: NGTCP2Connection.Stat { ngtcp2.stat }
    /// The path packets are currently sent on.
    var currentPath: QUICPath { ngtcp2.currentWritePath }
    /// Largest UDP payload the connection writes now.
    var maxPacketSize: Int { ngtcp2.maxPacketSize }

    // MARK: Input

    /// Feeds one received datagram (a single QUIC packet or coalesced packets).
    func handle(datagram: ByteBuffer, path: QUICPath, now: UInt64) {
        switch state {
        case .closed, .closing: return
        default: break
        }
        bytesReceived &+= UInt64(datagram.readableBytes)
        switch ngtcp2.read(datagram, path: path, now: now) {
        case .ok:
            return
        case .draining:
            finish(with: peerCloseError())
        case .drop:
            finish(with: STOQError(.connectionClosed, "connection dropped", initiator: .local))
        case .tlsFailure:
            let alert = ngtcp2.localTLSAlert
            let error: STOQError
            if alert == 120 {
                error = STOQError(.alpnMismatch, "no application protocol in common with the peer (TLS alert no_application_protocol)", initiator: .local)
            } else if let why = ngtcp2.verifyFailure {
                error = STOQError(.handshakeFailed, "peer certificate not trusted: \(why)", initiator: .local)
            } else {
                error = STOQError(.handshakeFailed, "TLS handshake failed: \(NGTCP2Connection.alertName(alert)) (alert \(alert))", initiator: .local)
            }
            state = .closing(applicationCode: nil, reason: "", tlsAlert: true, libraryError: nil, error: error)
        case .failed(let rv):
            let error = STOQError(.connectionClosed, "protocol error: \(ngtcp2ErrorString(rv))", initiator: .local)
            state = .closing(applicationCode: nil, reason: "", tlsAlert: false, libraryError: rv, error: error)
        }
    }

    private func peerCloseError() -> STOQError {
        let info = ngtcp2.peerClose
        if info.isApplication {
            return STOQError(
                .connectionClosed, info.reason.isEmpty ? "closed by peer with code \(info.code)" : info.reason,
                applicationCode: info.code, initiator: .peer)
        }
        if info.isIdle {
            return STOQError(.idleTimeout, "connection idle timeout", initiator: .local)
        }
        if info.code >= 0x100 && info.code < 0x200 {
            let alert = UInt8(info.code - 0x100)
            if alert == 120 {
                return STOQError(.alpnMismatch, "the peer offers no application protocol in common with ours (TLS alert no_application_protocol)", initiator: .peer)
            }
            return STOQError(
                .handshakeFailed,
                "the peer refused the TLS handshake: \(NGTCP2Connection.alertName(alert)) (alert \(alert)); it does not trust our certificate, it expired, or the peer requires one",
                initiator: .peer)
        }
        if info.code == 0x2 {  // CONNECTION_REFUSED
            return STOQError(
                .tooManyConnections, "the peer refused the connection: \(info.reason.isEmpty ? "it is at its connection limit" : info.reason)",
                initiator: .peer)
        }
        if case .handshaking = state {
            return STOQError(.handshakeFailed, "the peer closed the connection during the handshake (transport error \(info.code)) \(info.reason)", initiator: .peer)
        }
        return STOQError(
            .connectionClosed, "closed by peer (transport error \(info.code))\(info.reason.isEmpty ? "" : ": " + info.reason)",
            applicationCode: nil, initiator: .peer)
    }

    private func finish(with error: STOQError) {
        if case .closed = state { return }
        state = .closed
        events.append(.closed(error))
    }

    /// Next deadline (nanoseconds on the caller's clock), nil if none.
    func pollTimeout() -> UInt64? {
        switch state {
        case .closed: return nil
        case .closing: return 0
        default: break
        }
        var t = ngtcp2.expiry
        if rateBlocked { t = min(t, bucketWake) }
        return t == UInt64.max ? nil : t
    }
    private var bucketWake: UInt64 = .max
    private var lastNow: UInt64 = 0

    /// Runs timers due at `now`.
    func handleTimeout(now: UInt64) {
        switch state {
        case .closed, .closing: return
        default: break
        }
        if ngtcp2.expiry <= now {
            switch ngtcp2.handleExpiry(now: now) {
            case .ok: break
            case .idle: finish(with: STOQError(.idleTimeout, "connection closed after its idle timeout", initiator: .local))
            case .handshakeTimeout:
                finish(with: STOQError(.handshakeFailed, "handshake timed out: no answer from the peer", initiator: .local))
            case .failed(let rv):
                let error = STOQError(.connectionClosed, "protocol error: \(ngtcp2ErrorString(rv))", initiator: .local)
                state = .closing(applicationCode: nil, reason: "", tlsAlert: false, libraryError: rv, error: error)
            }
        }
    }

    /// Next event, if any.
    func pollEvent() -> Event? { events.popFirst() }

    // MARK: Output

    /// Writes the next batch of datagrams, or nil when there is nothing to send now.
    func pollTransmit(now: UInt64, maxDatagrams: Int = 32) -> Transmit? {
        if let p = pending {
            pending = nil
            return p
        }
        switch state {
        case .closed:
            return nil
        case .closing(let code, let reason, let alert, let lib, let error):
            var buf = allocator.buffer(capacity: max(ngtcp2.maxPacketSize, 1200))
            let n = ngtcp2.writeConnectionClose(
                into: &buf, applicationCode: code, reason: reason, tlsAlert: alert, libraryError: lib, now: now)
            finish(with: error)
            guard n > 0 else { return nil }
            bytesSent &+= UInt64(n)
            return Transmit(path: ngtcp2.currentWritePath, buffer: buf, segmentSize: n, count: 1)
        default:
            break
        }
        bucket?.refill(now: now)
        rateBlocked = false
        lastNow = now
        let maxSize = ngtcp2.maxPacketSize
        let batch = max(1, maxDatagrams)
        var buf = pool.take(capacity: maxSize * batch)
        var count = 0
        var segment = 0
        var path = ngtcp2.currentWritePath
        outer: while count < batch {
            let start = buf.writerIndex
            var packetLength = 0
            var rounds = 0
            inner: while true {
                rounds += 1
                let sid = rounds > 64 ? -1 : nextStream()
                let stream = sid >= 0 ? streams[sid] : nil
                let r = ngtcp2.writePacket(
                    into: &buf, maxSize: maxSize, streamID: sid, data: stream?.send,
                    fin: stream.map { $0.finQueued && !$0.finSent } ?? false, now: now)
                if let stream, r.consumed >= 0 { accountSent(sid, stream, r.consumed) }
                switch r.status {
                case .ok:
                    packetLength = r.packetLength
                    if let stream, sid >= 0 { rotate(sid, stream) }
                    break inner
                case .writeMore:
                    if let stream, sid >= 0 { rotate(sid, stream) }
                    continue inner
                case .streamBlocked:
                    if let stream { stream.blocked = true; unqueue(sid, stream) }
                    continue inner
                case .streamShut:
                    if let stream { stream.finSent = true; unqueue(sid, stream) }
                    continue inner
                case .failed(let rv):
                    let error = STOQError(.connectionClosed, "protocol error while sending: \(ngtcp2ErrorString(rv))", initiator: .local)
                    state = .closing(applicationCode: nil, reason: "", tlsAlert: false, libraryError: rv, error: error)
                    buf.moveWriterIndex(to: start)
                    break outer
                }
            }
            if packetLength == 0 { break }
            bytesSent &+= UInt64(packetLength)
            if count == 0 {
                segment = packetLength
                path = ngtcp2.currentWritePath
                count = 1
                continue
            }
            if ngtcp2.writePathChanged || packetLength > segment {
                // Does not fit this batch: keep it for the next call.
                let slice = buf.getSlice(at: start, length: packetLength)!
                buf.moveWriterIndex(to: start)
                pending = Transmit(path: ngtcp2.currentWritePath, buffer: slice, segmentSize: packetLength, count: 1)
                break
            }
            count += 1
            if packetLength < segment { break }
        }
        guard count > 0 else {
            if pending == nil { pool.give(buf) }  // nothing written: reuse the memory
            let p = pending
            pending = nil
            return p
        }
        return Transmit(path: path, buffer: buf, segmentSize: segment, count: count)
    }

    private func accountSent(_ sid: Int64, _ stream: StreamState, _ consumed: Int) {
        streamBytesSent &+= UInt64(consumed)
        bucket?.spend(consumed)
        if stream.finQueued, let send = stream.send, send.unsent == 0 {
            // ngtcp2 sets FIN together with the last byte when we passed the flag.
            stream.finSent = true
        }
    }

    // MARK: Scheduler

    private func nextStream() -> Int64 {
        if let b = bucket, !b.hasTokens {
            if ready.contains(where: { !$0.isEmpty }) {
                rateBlocked = true
                bucketWake = b.nextAvailable(now: lastNow)
            }
            return -1
        }
        for cls in 0..<3 {
            while let sid = ready[cls].first {
                if let s = streams[sid], s.hasPending, !s.blocked { return sid }
                ready[cls].removeFirst()
                streams[sid]?.queued = false
            }
        }
        return -1
    }

    private func rotate(_ sid: Int64, _ stream: StreamState) {
        let cls = stream.priority.rawValue
        guard ready[cls].first == sid else { return }
        ready[cls].removeFirst()
        if stream.hasPending && !stream.blocked {
            ready[cls].append(sid)
        } else {
            stream.queued = false
        }
    }

    private func unqueue(_ sid: Int64, _ stream: StreamState) {
        let cls = stream.priority.rawValue
        if let i = ready[cls].firstIndex(of: sid) { ready[cls].remove(at: i) }
        stream.queued = false
    }

    private func enqueue(_ sid: Int64, _ stream: StreamState) {
        guard !stream.queued, stream.hasPending, !stream.blocked else { return }
        stream.queued = true
        ready[stream.priority.rawValue].append(sid)
    }

    // MARK: Streams

    /// Opens a stream; nil when the peer's stream limit is reached (wait for `.streamsAvailable`).
    func openStream(bidirectional: Bool, priority: StreamPriority) throws(STOQError) -> Int64? {
        guard isEstablished else {
            throw STOQError(.connectionClosed, "the connection is not open")
        }
        guard let id = ngtcp2.openStream(bidirectional: bidirectional) else { return nil }
        streams[id] = StreamState(canSend: true, priority: priority)
        return id
    }

    /// Sets or removes this connection's sending rate limit.
    func setRateLimit(_ limit: RateLimit?, now: UInt64) {
        bucket = limit.map { TokenBucket($0, now: now) }
        rateBlocked = false
    }

    /// Changes a stream's scheduling class.
    func setPriority(_ streamID: Int64, _ priority: StreamPriority) {
        guard let s = streams[streamID], s.priority != priority else { return }
        unqueue(streamID, s)
        s.priority = priority
        enqueue(streamID, s)
    }

    /// Queues bytes on a stream. Returns whether the stream may take more now (false:
    /// wait for `.streamWritable`).
    @discardableResult
    func send(_ streamID: Int64, _ data: ByteBuffer) throws(STOQError) -> Bool {
        guard let s = streams[streamID], let send = s.send else {
            throw STOQError(.streamClosed, "stream \(streamID) cannot send (closed, reset, or receive-only)")
        }
        guard !s.finQueued else {
            throw STOQError(.streamClosed, "stream \(streamID) was finished; no more writes")
        }
        send.append(data)
        enqueue(streamID, s)
        let ok = send.buffered < sendLimit
        if !ok { s.full = true }
        return ok
    }

    /// Whether a stream's send buffer has room.
    func isWritable(_ streamID: Int64) -> Bool {
        guard let s = streams[streamID], let send = s.send else { return true }
        return send.buffered < sendLimit
    }

    /// Bytes of a stream the peer acknowledged and bytes queued on it in all (nil once the
    /// stream is gone or cannot send).
    func sendProgress(_ streamID: Int64) -> (acknowledged: UInt64, written: UInt64)? {
        guard let send = streams[streamID]?.send else { return nil }
        return (send.ackedOffset, send.endOffset)
    }

    /// Unacknowledged bytes held for a stream.
    func bufferedBytes(_ streamID: Int64) -> Int {
        Int(streams[streamID]?.send?.buffered ?? 0)
    }

    /// Queues FIN after the data already queued.
    func finish(_ streamID: Int64) {
        guard let s = streams[streamID], s.send != nil, !s.finQueued else { return }
        s.finQueued = true
        enqueue(streamID, s)
    }

    /// Abandons sending on a stream (RESET_STREAM).
    func reset(_ streamID: Int64, code: UInt64) {
        if let s = streams[streamID] { s.finQueued = true; s.finSent = true; unqueue(streamID, s) }
        ngtcp2.shutdownStreamWrite(streamID, code: code)
    }

    /// Asks the peer to stop sending on a stream (STOP_SENDING).
    func stopSending(_ streamID: Int64, code: UInt64) {
        ngtcp2.shutdownStreamRead(streamID, code: code)
    }

    /// Takes everything received on a stream so far; `fin` is true once, with the last bytes.
    /// The caller reports consumption with ``consumed(_:count:)`` when the application
    /// actually read the bytes (that is what opens the flow-control windows).
    func read(_ streamID: Int64) -> (data: ByteBuffer?, fin: Bool) {
        var all: ByteBuffer?
        let fin = readBlocks(streamID) { block in
            if all == nil { all = block } else { var block = block; all!.writeBuffer(&block) }
        }
        return (all, fin)
    }

    /// Takes everything received on a stream so far as the blocks it was received into, oldest
    /// first, without copying (``read(_:)`` joins them into one buffer). Returns whether the
    /// FIN is taken with them (true once).
    func readBlocks(_ streamID: Int64, _ body: (ByteBuffer) -> Void) -> Bool {
        guard let s = streams[streamID] ?? closedWithData[streamID] else { return false }
        while let block = s.recvFilled.popFirst() { body(block) }
        if let block = s.recv, block.readableBytes > 0 { body(block) }
        s.recv = nil
        s.recvBytes = 0
        var fin = false
        if s.recvFin && !s.recvFinTaken {
            s.recvFinTaken = true
            fin = true
        }
        if closedWithData[streamID] != nil { closedWithData[streamID] = nil }
        return fin
    }

    /// The application consumed `count` received bytes of a stream: open the flow-control
    /// windows by as much.
    func consumed(_ streamID: Int64, count: Int) {
        guard count > 0 else { return }
        ngtcp2.extendStreamOffset(streamID, by: UInt64(count))
        ngtcp2.extendConnectionOffset(by: UInt64(count))
    }

    /// Closes the connection with an application error code and reason.
    func close(code: UInt64, reason: String) {
        switch state {
        case .closed, .closing: return
        default: break
        }
        state = .closing(
            applicationCode: code, reason: reason, tlsAlert: false, libraryError: nil,
            error: STOQError(.connectionClosed, reason.isEmpty ? "closed locally with code \(code)" : reason, applicationCode: code, initiator: .local))
    }

    /// Ends the connection at once without a CONNECTION_CLOSE (nothing can be sent to the peer).
    func abandon(_ error: STOQError) {
        pending = nil
        finish(with: error)
    }

    /// Moves a client connection to a new local address (connection migration).
    func migrate(to path: QUICPath, now: UInt64) -> Bool {
        ngtcp2.migrate(to: path, now: now)
    }
}

extension QUICConnection: NGTCP2ConnectionDelegate {
    /// Capacity of the first block a stream's received bytes go into after the reader took the last.
    static let firstReceiveBlock = 16 * 1024
    /// Capacity of the further blocks of the same read cycle.
    static let receiveBlock = 128 * 1024

    func ngtcp2HandshakeCompleted() {
        if isServer {
            state = .established
            events.append(.handshakeCompleted)
        }
    }

    func ngtcp2HandshakeConfirmed() {
        if !isServer {
            state = .established
            events.append(.handshakeCompleted)
        }
    }

    func ngtcp2StreamOpened(_ streamID: Int64) {
        let bidi = streamID & 0x2 == 0
        streams[streamID] = StreamState(canSend: bidi, priority: .interactive)
        events.append(.streamOpened(streamID))
    }

    func ngtcp2StreamData(_ streamID: Int64, _ data: LentBytes, fin: Bool) {
        let s: StreamState
        if let existing = streams[streamID] {
            s = existing
        } else {
            // Data for a stream already closed on our side (e.g. after a local reset):
            // nobody reads it, but its credit must still flow.
            consumed(streamID, count: data.count)
            return
        }
        let wasEmpty = s.recvBytes == 0 && !s.recvFin
        if data.count > 0 {
            if let block = s.recv, block.writableBytes < data.count {
                s.recvFilled.append(block)
                s.recv = nil
            }
            if s.recv == nil {
                // The first block of a read cycle is small (a trickle costs little memory while
                // it waits for the reader); later ones, in a bulk transfer, are larger.
                let size = s.recvFilled.isEmpty ? Self.firstReceiveBlock : Self.receiveBlock
                s.recv = allocator.buffer(capacity: max(data.count, size))
            }
            data.write(to: &s.recv!)
            s.recvBytes += data.count
        }
        if fin { s.recvFin = true }
        if wasEmpty && (s.recvBytes > 0 || s.recvFin) {
            events.append(.streamReadable(streamID))
        }
    }

    func ngtcp2StreamAcked(_ streamID: Int64, offset: UInt64, length: UInt64) {
        guard let s = streams[streamID], let send = s.send else { return }
        send.acknowledged(offset: offset, length: length)
        if s.full && send.buffered < sendLimit {
            s.full = false
            events.append(.streamWritable(streamID))
        }
    }

    func ngtcp2StreamClosed(_ streamID: Int64, applicationCode: UInt64?) {
        if let s = streams.removeValue(forKey: streamID) {
            unqueue(streamID, s)
            if s.recvBytes > 0 || (s.recvFin && !s.recvFinTaken) { closedWithData[streamID] = s }
        }
        let remote = (streamID & 0x1 == 1) != isServer
        if remote { ngtcp2.extendMaxStreams(bidirectional: streamID & 0x2 == 0, by: 1) }
        events.append(.streamClosed(streamID))
    }

    func ngtcp2StreamReset(_ streamID: Int64, applicationCode: UInt64) {
        events.append(.streamReset(streamID, code: applicationCode))
    }

    func ngtcp2StopSending(_ streamID: Int64, applicationCode: UInt64) {
        if let s = streams[streamID] { s.finSent = true; s.finQueued = true; unqueue(streamID, s) }
        events.append(.stopSending(streamID, code: applicationCode))
    }

    func ngtcp2ExtendMaxStreamData(_ streamID: Int64) {
        guard let s = streams[streamID], s.blocked else { return }
        s.blocked = false
        enqueue(streamID, s)
    }

    func ngtcp2ExtendMaxStreams() { events.append(.streamsAvailable) }
    func ngtcp2NewConnectionID(_ id: ConnectionID) { events.append(.newConnectionID(id)) }
    func ngtcp2RemoveConnectionID(_ id: ConnectionID) { events.append(.retiredConnectionID(id)) }
}

/// Reuses the transmit buffer a `pollTransmit` call did not fill, so polling an idle
/// connection allocates nothing and idle connections hold no send buffer of their own.
/// Not thread-safe: shared only by connections of one event loop.
final class TransmitBufferPool {
    private var spare: ByteBuffer?
    private let allocator = ByteBufferAllocator()

    init() {}

    func take(capacity: Int) -> ByteBuffer {
        if var b = spare, b.capacity >= capacity {
            spare = nil
            b.clear()
            return b
        }
        return allocator.buffer(capacity: capacity)
    }

    func give(_ buffer: ByteBuffer) { spare = buffer }
}
