import NIOCore
import NIOHTTP1
import NIOWebSocket

/// What one HTTPS connection is doing, shared by its handlers on its event loop: how many
/// exchanges are in flight (an idle connection may be closed, a busy one not), how many requests it
/// has carried, and whether it became a WebSocket.
final class HTTPSConnectionActivity {
    /// Exchanges started and not yet finished.
    var inFlight = 0
    /// Requests (HTTP/1.1) or streams (HTTP/2) the connection has carried.
    var requests = 0
    /// The connection was upgraded to a WebSocket (the idle timeout no longer applies).
    var webSocket = false
    /// The server is stopping: close the connection as soon as nothing is in flight.
    var stopping = false
}

@available(*, unavailable)
extension HTTPSConnectionActivity: Sendable {}

/// What every exchange handler of one server shares: the responder, the bounds and the
/// `Alt-Svc` value (known only once the listener is bound).
final class HTTPSServerShared: Sendable {
    let responder: any HTTPResponder
    let limits: HTTPSServer.Limits
    private let altSvcPort: Mutex<Int>

    init(responder: any HTTPResponder, limits: HTTPSServer.Limits) {
        self.responder = responder
        self.limits = limits
        self.altSvcPort = Mutex(0)
    }

    /// Sets the port `Alt-Svc` announces for HTTP/3.
    func setAltSvcPort(_ port: Int) { altSvcPort.withLock { $0 = port } }

    /// The `Alt-Svc` header value: HTTP/3 on the announced UDP port, remembered for a day.
    var altSvc: String { "h3=\":\(altSvcPort.withLock { $0 })\"; ma=86400" }
}

/// The state of one exchange handler: one HTTP/1.1 connection (requests one after the other;
/// NIO's pipelining helper holds back the next until the response ended) or one HTTP/2 stream.
struct HTTPSExchangeStateMachine {
    enum State {
        /// Waiting for a request head.
        case idle
        /// Reading a request: its head and how many body bytes arrived so far.
        case receiving(HTTPRequestHead, bodyBytes: Int)
        /// A response is being produced and sent.
        case responding
        /// The channel is going away; nothing more happens.
        case closed
    }

    /// What the handler does after an event.
    enum Action: Equatable {
        case none
        /// Answer the request now.
        case respond
        /// Answer with an error status of the server's own and close afterwards.
        case reject(status: Int, message: String)
    }

    private(set) var state: State = .idle
    let maxHeaderBytes: Int
    let maxBodyBytes: Int

    mutating func receivedHead(_ head: HTTPRequestHead) -> Action {
        if case .closed = state { return .none }
        guard case .idle = state else {
            // HTTP/1.1 pipelining is serialised by NIO's helper and an HTTP/2 stream carries one
            // request, so a second head here is a broken client.
            state = .closed
            return .reject(status: 400, message: "A second request arrived before the first was answered.\n")
        }
        var size = head.uri.utf8.count
        for field in head.headers { size += field.name.utf8.count + field.value.utf8.count + 4 }
        guard size <= maxHeaderBytes else {
            state = .closed
            return .reject(status: 431, message: "The request's header fields are larger than this server takes (\(maxHeaderBytes) bytes).\n")
        }
        state = .receiving(head, bodyBytes: 0)
        return .none
    }

    mutating func receivedBody(_ count: Int) -> Action {
        guard case .receiving(let head, let soFar) = state else { return .none }
        let total = soFar + count
        guard total <= maxBodyBytes else {
            state = .closed
            return .reject(status: 413, message: "This server takes GET and HEAD requests; the request body is larger than \(maxBodyBytes) bytes.\n")
        }
        state = .receiving(head, bodyBytes: total)
        return .none
    }

    /// The request ended: returns its head if it should be answered now.
    mutating func receivedEnd() -> HTTPRequestHead? {
        guard case .receiving(let head, _) = state else { return nil }
        state = .responding
        return head
    }

    /// The response ended and the connection stays open.
    mutating func responseEnded() {
        if case .responding = state { state = .idle }
    }

    mutating func closed() { state = .closed }
}

/// Turns the request parts of one HTTP/1.1 connection or one HTTP/2 stream (through
/// `HTTP2FramePayloadToHTTP1ServerCodec`) into ``HTTPRequest``s, asks the responder, and writes the
/// response, pulling its body only while the channel is writable.
///
/// A thin class around ``HTTPSExchangeStateMachine``; the response itself is produced by a task
/// that writes through the (thread-safe) `Channel` and reports back on the event loop.
final class HTTPSExchangeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// The name this handler has in an HTTP/1.1 pipeline (removed on a WebSocket upgrade).
    static let name = "stoq-https-exchange"

    private var machine: HTTPSExchangeStateMachine
    private let shared: HTTPSServerShared
    private let activity: HTTPSConnectionActivity
    private let wire: HTTPWireProtocol
    private let client: String
    private var task: Task<Void, Never>?

    init(shared: HTTPSServerShared, activity: HTTPSConnectionActivity, wire: HTTPWireProtocol, client: String) {
        self.shared = shared
        self.activity = activity
        self.wire = wire
        self.client = client
        self.machine = HTTPSExchangeStateMachine(maxHeaderBytes: shared.limits.maxHeaderBytes, maxBodyBytes: shared.limits.maxRequestBodyBytes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let action: HTTPSExchangeStateMachine.Action
        switch unwrapInboundIn(data) {
        case .head(let head):
            action = machine.receivedHead(head)
        case .body(let buffer):
            action = machine.receivedBody(buffer.readableBytes)
        case .end:
            guard let head = machine.receivedEnd() else { return }
            startExchange(context: context, head: head)
            return
        }
        if case .reject(let status, let message) = action {
            reject(context: context, status: status, message: message)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        machine.closed()
        task?.cancel()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A WebSocket upgrade the server declined (an unknown name): the request itself follows
        // and is answered 404, so the connection stays.
        if error is NIOWebSocketUpgradeError { return }
        // Protocol errors (a malformed request) were answered by NIO's error handler; TLS and
        // socket errors leave nothing to answer. Either way this connection or stream is done.
        machine.closed()
        context.close(promise: nil)
    }

    /// Answers with a short error of the server's own and closes (HTTP/1.1) or ends the stream.
    private func reject(context: ChannelHandlerContext, status: Int, message: String) {
        var head = HTTPResponseHead(version: responseVersion, status: HTTPResponseStatus(statusCode: status))
        head.headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        head.headers.add(name: "content-length", value: String(message.utf8.count))
        head.headers.add(name: "date", value: HTTPSDate.string())
        head.headers.add(name: "alt-svc", value: shared.altSvc)
        if wire == .http1 { head.headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: message)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private var responseVersion: HTTPVersion { wire == .http2 ? .http2 : .http1_1 }

    private func startExchange(context: ChannelHandlerContext, head: HTTPRequestHead) {
        if wire == .http1 { activity.requests += 1 }  // HTTP/2 streams are counted as they open
        activity.inFlight += 1
        let closeAfter = wire == .http1 && (!head.isKeepAlive || activity.requests >= shared.limits.maxRequestsPerConnection || activity.stopping)
        let request = HTTPRequest(
            method: head.method.rawValue, target: head.uri, headers: head.headers.map { (name: $0.name, value: $0.value) },
            wireProtocol: wire, client: client
        )
        let exchange = HTTPSExchange(
            channel: context.channel, shared: shared, request: request, version: wire == .http2 ? .http2 : head.version,
            closeAfter: closeAfter, isUpgradeRequest: head.headers.contains(name: "upgrade")
        )
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        task = Task {
            let outcome = await exchange.run()
            loop.execute {
                bound.value.exchangeEnded(exchange, outcome)
            }
        }
    }

    /// Back on the event loop: the body was written (or failed). The state moves on before the
    /// end of the response is written, so the pipelining helper may hand over the next request
    /// the moment it sees that end.
    private func exchangeEnded(_ exchange: HTTPSExchange, _ outcome: HTTPSExchange.Outcome) {
        activity.inFlight -= 1
        task = nil
        if activity.stopping, activity.inFlight == 0, let parent = exchange.channel.parent {
            // HTTP/2 during shutdown: the last stream is done, the connection may go.
            exchange.channel.closeFuture.whenComplete { _ in parent.close(promise: nil) }
        }
        guard outcome.bodyComplete else {
            machine.closed()
            exchange.report(outcome)
            return
        }
        let closeNow = exchange.closeAfter || (activity.stopping && wire == .http1)
        if closeNow { machine.closed() } else { machine.responseEnded() }
        guard !outcome.endWritten else {
            exchange.report(outcome)
            return
        }
        exchange.channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { result in
            var outcome = outcome
            if case .failure = result { outcome.bodyComplete = false }
            exchange.report(outcome)
            if closeNow || !outcome.bodyComplete { exchange.channel.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension HTTPSExchangeHandler: Sendable {}

/// One request's response: produced by the responder, written through the channel.
struct HTTPSExchange: Sendable {
    let channel: any Channel
    let shared: HTTPSServerShared
    let request: HTTPRequest
    let version: HTTPVersion
    let closeAfter: Bool
    let isUpgradeRequest: Bool

    /// Header fields the server sets itself, or that HTTP/2 forbids (RFC 9113 §8.2.2).
    private static let reserved: Set<String> = ["date", "alt-svc", "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]

    /// How far a response got before its end.
    struct Outcome: Sendable {
        var status: Int
        var logInfo: HTTPLogInfo
        var bodyBytes: Int
        /// Head and every byte of the body were handed to the connection.
        var bodyComplete: Bool
        /// The end was written too (HTTP/2: right behind the last bytes, so the stream ends with
        /// them; a client that has all the bytes it was promised would otherwise reset a stream
        /// that looks unfinished, and NIO counts every such reset against the connection).
        var endWritten = false
        let started: ContinuousClock.Instant
    }

    /// Produces the response and sends its head and body; the handler writes its end.
    func run() async -> Outcome {
        let started = ContinuousClock.now
        var response: HTTPResponse
        if let early = webSocketPathResponse() {
            response = early
        } else {
            response = await shared.responder.respond(to: request)
            if !(100...999).contains(response.status) {
                // A status HTTP cannot carry (a responder bug): never let it trap the node.
                response = Self.plain(500, "The server produced an invalid status (\(response.status)).\n")
            }
        }
        var head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status))
        for field in response.headers where !Self.reserved.contains(field.name) {
            head.headers.add(name: field.name, value: field.value)
        }
        head.headers.add(name: "date", value: HTTPSDate.string())
        head.headers.add(name: "alt-svc", value: shared.altSvc)
        if closeAfter { head.headers.add(name: "connection", value: "close") }
        let bodyless = request.method == "HEAD" || response.status == 304 || response.status == 204 || (100..<200).contains(response.status)

        var outcome = Outcome(status: response.status, logInfo: response.logInfo, bodyBytes: 0, bodyComplete: false, started: started)
        do {
            // The head leaves at once (a client sees the status while the first chunk is still
            // being fetched); a failed write shows in the next write or in the end's.
            let endsHere = version == .http2
            let declaredLength = response.headers.first { $0.name == "content-length" }.flatMap { Int($0.value) }
            if bodyless && endsHere {
                channel.write(HTTPServerResponsePart.head(head), promise: nil)
                try await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
                outcome.endWritten = true
            } else {
                channel.writeAndFlush(HTTPServerResponsePart.head(head), promise: nil)
            }
            if !bodyless {
                // Without a content-length NIO frames an HTTP/1.1 body chunked.
                while let piece = try await response.body.next() {
                    try Task.checkCancellation()
                    guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
                    if piece.isEmpty { continue }
                    outcome.bodyBytes += piece.count
                    let buffer = channel.allocator.buffer(bytes: piece)
                    if endsHere, let declaredLength, outcome.bodyBytes >= declaredLength {
                        // The last bytes: end the stream in the same flush.
                        channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
                        try await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
                        outcome.endWritten = true
                        break
                    }
                    let written = channel.eventLoop.makePromise(of: Void.self)
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: written)
                    // Back-pressure: pull the next piece only once the connection can take it.
                    if !channel.isWritable { try await waitForReader(written.futureResult) }
                }
            }
            outcome.bodyComplete = true
        } catch {
            // The body failed or the client went away mid-response: close the connection
            // (HTTP/1.1) or reset the stream (HTTP/2: NIO sends RST_STREAM for a stream channel
            // closed before its end) so a truncated body never looks whole.
            channel.close(promise: nil)
        }
        return outcome
    }

    /// Waits until a write went out; a reader that takes nothing for the idle timeout is a
    /// stalled (or hostile) client, and its connection or stream is closed.
    private func waitForReader(_ written: EventLoopFuture<Void>) async throws {
        let stall = shared.limits.idleTimeout
        let wroteInTime = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask { try await written.get(); return true }
            group.addTask { try await Task.sleep(for: stall); return false }
            let first = try await group.next() ?? false
            if !first { channel.close(promise: nil) }  // fails the pending write, ending its waiter
            group.cancelAll()
            return first
        }
        if !wroteInTime { throw ChannelError.outputClosed }
    }

    /// Tells the responder the exchange is over (once per exchange).
    func report(_ outcome: Outcome) {
        let seconds = Self.seconds(ContinuousClock.now - outcome.started)
        shared.responder.finished(HTTPExchangeRecord(
            request: request, status: outcome.status, bodyBytes: outcome.bodyBytes, duration: seconds, logInfo: outcome.logInfo
        ))
    }

    /// `/ws/…` is the WebSocket namespace: a request that reaches here was not upgraded.
    private func webSocketPathResponse() -> HTTPResponse? {
        guard request.target.hasPrefix("/ws/") else { return nil }
        if isUpgradeRequest || HTTPSWebSocket.watchedName(target: request.target) == nil {
            return Self.plain(404, "Nothing to watch here: WebSocket pushes live at /ws/name/<published-name> for names this node serves.\n")
        }
        return HTTPResponse(
            status: 426,
            headers: [("upgrade", "websocket"), ("content-type", "text/plain; charset=utf-8"), ("content-length", "\(Self.upgradeText.utf8.count)")],
            body: .bytes(Array(Self.upgradeText.utf8))
        )
    }

    private static let upgradeText = "This address is a WebSocket: connect with wss:// over HTTP/1.1 to receive the name's new versions.\n"

    static func plain(_ status: Int, _ text: String) -> HTTPResponse {
        HTTPResponse(
            status: status, headers: [("content-type", "text/plain; charset=utf-8"), ("content-length", "\(text.utf8.count)")],
            body: .bytes(Array(text.utf8))
        )
    }

    static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) / 1e18
    }
}

import Synchronization
