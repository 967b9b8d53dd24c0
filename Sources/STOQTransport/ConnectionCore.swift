import Collections
import NIOCore

/// Event-loop side of one connection: drives its ``QUICConnection``, its timer, and the
/// continuations of the async API.
// @unchecked Sendable: all mutable state is confined to the endpoint's event loop.
final class ConnectionCore: @unchecked Sendable {
    let endpoint: EndpointCore
    let quic: QUICConnection
    let remote: SocketAddress
    var dirty = false
    var extraRoutes: [ConnectionID] = []
    private var connectPromise: EventLoopPromise<Connection>?
    private(set) var streams: [Int64: StreamCore] = [:]
    let incomingStreams: AsyncStream<QUICStream>
    private let incomingContinuation: AsyncStream<QUICStream>.Continuation
    private(set) var closeError: STOQError?
    private var closeWaiters: [EventLoopPromise<STOQError>] = []
    private var openWaiters: Deque<(bidi: Bool, priority: StreamPriority, promise: EventLoopPromise<StreamCore>)> = []
    private var timer: Scheduled<Void>?
    private var timerDeadline: UInt64 = .max
    private var removed = false
    private var handshakeDone = false

    init(endpoint: EndpointCore, quic: QUICConnection, remote: SocketAddress, connectPromise: EventLoopPromise<Connection>?) {
        self.endpoint = endpoint
        self.quic = quic
        self.remote = remote
        self.connectPromise = connectPromise
        (incomingStreams, incomingContinuation) = AsyncStream.makeStream(of: QUICStream.self)
    }

    var eventLoop: EventLoop { endpoint.eventLoop }

    /// Marks the connection for processing and processes everything dirty now.
    func kick() {
        endpoint.markDirty(self)
        endpoint.processDirty()
    }

    /// Runs events, writes everything sendable, re-arms the timer.
    func process() {
        guard !removed else { return }
        let now = clockNow()
        drainEvents()
        // A GSO send carries at most 64 KiB: cap the batch by the current packet size.
        let batch = max(1, min(endpoint.config.maxBatchPackets, 65_000 / max(1200, quic.maxPacketSize)))
        while let t = quic.pollTransmit(now: now, maxDatagrams: batch) {
            endpoint.send(t)
        }
        drainEvents()
        if quic.isClosed {
            teardown()
        } else {
            armTimer()
        }
    }

    private func armTimer() {
        guard let t = quic.pollTimeout() else {
            timer?.cancel()
            timer = nil
            timerDeadline = .max
            return
        }
        // A timer already set to fire no later than needed stays: firing early is harmless
        // (nothing is due yet and it re-arms), and it saves rescheduling on every ACK.
        if timer != nil && timerDeadline <= t { return }
        timer?.cancel()
        timerDeadline = t
        timer = eventLoop.scheduleTask(deadline: .uptimeNanoseconds(t)) { [self] in
            timer = nil
            timerDeadline = .max
            quic.handleTimeout(now: clockNow())
            kick()
        }
    }

    private func teardown() {
        guard !removed else { return }
        removed = true
        timer?.cancel()
        timer = nil
        endpoint.remove(self)
    }

    private func drainEvents() {
        while let event = quic.pollEvent() {
            switch event {
            case .handshakeCompleted:
                handshakeDone = true
                let c = Connection(core: self)
                if let p = connectPromise {
                    connectPromise = nil
                    p.succeed(c)
                } else {
                    endpoint.incomingContinuation.yield(c)
                }
            case .streamOpened(let id):
                let s = StreamCore(id: id, connection: self, local: false)
                streams[id] = s
                incomingContinuation.yield(QUICStream(core: s))
            case .streamReadable(let id):
                let stream = streams[id]
                let fin = quic.readBlocks(id) { stream?.deliver($0, fin: false) }
                stream?.deliver(nil, fin: fin)
            case .streamReset(let id, let code):
                streams[id]?.failRead(STOQError(.streamReset, "the peer reset stream \(id) with code \(code)", applicationCode: code, initiator: .peer))
            case .stopSending(let id, let code):
                streams[id]?.failWrite(STOQError(.stopSending, "the peer stopped reading stream \(id) with code \(code)", applicationCode: code, initiator: .peer))
            case .streamWritable(let id):
                streams[id]?.resumeWriter()
            case .streamClosed(let id):
                if let s = streams.removeValue(forKey: id) { s.closedByTransport() }
            case .streamsAvailable:
                retryOpens()
            case .newConnectionID(let cid):
                endpoint.addRoute(cid, self)
            case .retiredConnectionID(let cid):
                endpoint.removeRoute(cid, self)
            case .closed(let error):
                closeError = error
                if quic.isServer && !handshakeDone {
                    endpoint.logger.info("refused a handshake from \(remote): \(error.reason)")
                    endpoint.handshakeFailureContinuation.yield(error)
                }
                connectPromise?.fail(error)
                connectPromise = nil
                for s in streams.values { s.connectionClosed(error) }
                streams.removeAll()
                incomingContinuation.finish()
                for w in openWaiters { w.promise.fail(error) }
                openWaiters.removeAll()
                for w in closeWaiters { w.succeed(error) }
                closeWaiters.removeAll()
            }
        }
    }

    // MARK: API (on the event loop)

    func openStream(bidirectional: Bool, priority: StreamPriority, promise: EventLoopPromise<StreamCore>) {
        if let e = closeError {
            promise.fail(e)
            return
        }
        if openWaiters.isEmpty, let s = tryOpen(bidirectional, priority) {
            promise.succeed(s)
            return
        }
        openWaiters.append((bidirectional, priority, promise))
    }

    private func tryOpen(_ bidi: Bool, _ priority: StreamPriority) -> StreamCore? {
        guard let id = try? quic.openStream(bidirectional: bidi, priority: priority) else { return nil }
        let s = StreamCore(id: id, connection: self, local: true)
        streams[id] = s
        return s
    }

    private func retryOpens() {
        while let w = openWaiters.first, let s = tryOpen(w.bidi, w.priority) {
            openWaiters.removeFirst()
            w.promise.succeed(s)
        }
    }

    func waitClosed(_ promise: EventLoopPromise<STOQError>) {
        if let e = closeError { promise.succeed(e) } else { closeWaiters.append(promise) }
    }

    func close(code: UInt64, reason: String) {
        quic.close(code: code, reason: reason)
        kick()
    }

    /// Ends the connection without sending anything (its peer cannot be sent to).
    func abandon(_ error: STOQError) {
        quic.abandon(error)
        kick()
    }
}

/// Event-loop side of one stream.
// @unchecked Sendable: all mutable state is confined to the endpoint's event loop.
final class StreamCore: @unchecked Sendable {
    let id: Int64
    let connection: ConnectionCore
    let isLocal: Bool
    private var received: Deque<ByteBuffer> = []
    private var finReceived = false
    private var readError: STOQError?
    private var writeError: STOQError?
    private var reader: CheckedContinuation<ByteBuffer?, Error>?
    private var writer: CheckedContinuation<Void, Error>?
    private var transportClosed = false
    /// Set once the stream can carry nothing more from this side: fully closed, reset or aborted
    /// locally, stopped by the peer, or its connection closed.
    private var done = false
    private var doneWaiters: [CheckedContinuation<Void, Never>] = []

    init(id: Int64, connection: ConnectionCore, local: Bool) {
        self.id = id
        self.connection = connection
        self.isLocal = local
    }

    var quic: QUICConnection { connection.quic }

    // Transport -> stream

    func deliver(_ data: ByteBuffer?, fin: Bool) {
        if let data {
            if let r = reader {
                reader = nil
                quic.consumed(id, count: data.readableBytes)
                connection.endpoint.markDirty(connection)
                r.resume(returning: data)
            } else {
                received.append(data)
            }
        }
        if fin {
            finReceived = true
            if received.isEmpty, let r = reader {
                reader = nil
                r.resume(returning: nil)
            }
        }
    }

    func failRead(_ e: STOQError) {
        readError = e
        if let r = reader {
            reader = nil
            r.resume(throwing: e)
        }
    }

    func failWrite(_ e: STOQError) {
        writeError = e
        if let w = writer {
            writer = nil
            w.resume(throwing: e)
        }
        markDone()
    }

    private func markDone() {
        guard !done else { return }
        done = true
        let waiters = doneWaiters
        doneWaiters = []
        for w in waiters { w.resume() }
    }

    func waitDone(_ cont: CheckedContinuation<Void, Never>) {
        if done { cont.resume() } else { doneWaiters.append(cont) }
    }

    func resumeWriter() {
        if let w = writer, quic.isWritable(id) {
            writer = nil
            w.resume()
        }
    }

    func closedByTransport() {
        transportClosed = true
        if writeError == nil { writeError = STOQError(.streamClosed, "stream \(id) is closed") }
        if let w = writer {
            writer = nil
            w.resume()
        }
        if let r = reader, received.isEmpty {
            reader = nil
            if let e = readError { r.resume(throwing: e) } else { r.resume(returning: nil) }
        }
        markDone()
    }

    func connectionClosed(_ e: STOQError) {
        if !finReceived && readError == nil { failRead(e) }
        failWrite(e)
    }

    // Application -> stream

    func read(_ cont: CheckedContinuation<ByteBuffer?, Error>) {
        if let data = received.popFirst() {
            quic.consumed(id, count: data.readableBytes)
            cont.resume(returning: data)
            connection.kick()
            return
        }
        if finReceived { return cont.resume(returning: nil) }
        if let e = readError { return cont.resume(throwing: e) }
        if transportClosed { return cont.resume(returning: nil) }
        if let e = connection.closeError { return cont.resume(throwing: e) }
        // The task that owns a stream (one request handler) is its only reader; a peer cannot start a
        // second one, only more streams.
        precondition(reader == nil, "only one task may read a stream at a time")
        reader = cont
    }

    func write(_ data: ByteBuffer, _ cont: CheckedContinuation<Void, Error>) {
        if let e = writeError ?? connection.closeError { return cont.resume(throwing: e) }
        do {
            let ok = try quic.send(id, data)
            if ok {
                cont.resume()
            } else {
                precondition(writer == nil, "only one task may write a stream at a time")
                writer = cont
            }
        } catch {
            cont.resume(throwing: error)
        }
        connection.kick()
    }

    func finish() {
        quic.finish(id)
        connection.kick()
    }

    func reset(code: UInt64) {
        quic.reset(id, code: code)
        failWrite(STOQError(.streamReset, "stream \(id) was reset locally with code \(code)", applicationCode: code, initiator: .local))
        connection.kick()
    }

    func stopSending(code: UInt64) {
        quic.stopSending(id, code: code)
        connection.kick()
    }

    /// Resets the sending side, asks the peer to stop sending, and ends a pending local read
    /// or write with an error. Bytes received but not read are counted as consumed, so they
    /// give their flow-control credit back to the connection.
    func abort(code: UInt64) {
        var unread = received.reduce(0) { $0 + $1.readableBytes }
        received.removeAll()
        _ = quic.readBlocks(id) { unread += $0.readableBytes }
        quic.consumed(id, count: unread)
        quic.reset(id, code: code)
        quic.stopSending(id, code: code)
        let e = STOQError(.streamReset, "stream \(id) was aborted locally with code \(code)", applicationCode: code, initiator: .local)
        if readError == nil && !finReceived { failRead(e) }
        failWrite(e)
        connection.kick()
    }

    /// Bytes of this stream the peer has acknowledged, and bytes written to it.
    var sendProgress: (acknowledged: UInt64, written: UInt64)? { quic.sendProgress(id) }
}
