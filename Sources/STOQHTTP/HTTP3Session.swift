import Logging
import NIOCore
import STOQTransport

/// Serves HTTP/3 on one QUIC connection: moves bytes between the connection's streams and an
/// ``HTTP3Connection`` (nghttp3), asks the responder for each request, and pulls each response
/// body at the pace its stream drains.
///
/// Per request stream three tasks run: a reader feeding nghttp3, a writer handing nghttp3's
/// frames to the stream (its queue bounded: nghttp3 is blocked on the stream while more than
/// ``writeQueueLimit`` bytes wait), and a worker that asks the responder and pulls the body one
/// piece at a time when nghttp3 runs dry. All nghttp3 calls happen on this actor.
actor HTTP3Session {
    /// Bytes queued for one stream's writer before nghttp3 is told the stream is blocked.
    static let writeQueueLimit = 256 * 1024

    private enum Outbound: Sendable {
        case bytes(ByteBuffer)
        case fin
    }

    private enum Work: Sendable {
        /// Ask the responder.
        case respond(HTTPRequest)
        /// Send this response (the server's own answer: 400, 431).
        case send(HTTPResponse)
        /// Pull the next body piece.
        case pull
    }

    /// One QUIC stream this session writes to.
    private struct Output {
        let stream: QUICStream
        let continuation: AsyncStream<Outbound>.Continuation
        var queued = 0
        var blocked = false
        /// A body piece was asked for while blocked: pull it once the writer catches up.
        var pullDeferred = false
    }

    /// One request and its response.
    private struct Exchange {
        let started: ContinuousClock.Instant
        var request: HTTPRequest?
        var work: AsyncStream<Work>.Continuation
        var status = 0
        var bodyBytes = 0
        var logInfo = HTTPLogInfo()
        var requestBodyBytes = 0
        var stoppedReading = false
        var finished = false
    }

    let connection: Connection
    private let responder: any HTTPResponder
    private let logger: Logger
    private let limits: HTTP3Limits
    private let client: String
    private let core: HTTP3Connection
    private var outputs: [Int64: Output] = [:]
    private var exchanges: [Int64: Exchange] = [:]
    private var closing = false
    private var goingAway = false

    init(connection: Connection, responder: any HTTPResponder, limits: HTTP3Limits, logger: Logger) throws(HTTP3Error) {
        self.connection = connection
        self.responder = responder
        self.limits = limits
        self.logger = logger
        self.core = try HTTP3Connection(role: .server, limits: limits)
        let address = connection.remoteAddress
        self.client = "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
    }

    /// Requests in flight.
    var activeExchanges: Int { exchanges.values.filter { !$0.finished }.count }

    /// Serves the connection until it closes.
    func run() async {
        let locals: [QUICStream]
        do {
            let control = try await connection.openUnidirectionalStream(priority: .control)
            let encoder = try await connection.openUnidirectionalStream(priority: .control)
            let decoder = try await connection.openUnidirectionalStream(priority: .control)
            try core.bind(control: control.id, qpackEncoder: encoder.id, qpackDecoder: decoder.id)
            locals = [control, encoder, decoder]
        } catch {
            logger.debug("HTTP/3 setup failed", metadata: ["client": "\(client)", "error": "\(error)"])
            await connection.close(code: HTTP3ErrorCode.internalError, reason: "HTTP/3 setup failed")
            return
        }
        await withDiscardingTaskGroup { group in
            for stream in locals {
                let out = makeOutput(stream)
                group.addTask { await self.writeLoop(stream, out) }
            }
            flush()
            for await stream in connection.incomingStreams {
                group.addTask { await self.serve(stream) }
            }
            connectionEnded()
            group.cancelAll()
        }
    }

    /// Sends GOAWAY: the client opens no new requests; those in flight finish.
    func goaway() {
        guard !goingAway else { return }
        goingAway = true
        core.submitShutdownNotice()
        core.shutdown()
        flush()
    }

    // MARK: Streams

    private func makeOutput(_ stream: QUICStream) -> AsyncStream<Outbound> {
        let (out, continuation) = AsyncStream.makeStream(of: Outbound.self)
        outputs[stream.id] = Output(stream: stream, continuation: continuation)
        return out
    }

    private func serve(_ stream: QUICStream) async {
        let id = stream.id
        guard stream.isBidirectional else {
            // The peer's control or QPACK stream (or one of a type nghttp3 ignores).
            await readLoop(stream)
            await stream.done()
            streamDone(id)
            return
        }
        let out = makeOutput(stream)
        let (work, workContinuation) = AsyncStream.makeStream(of: Work.self)
        exchanges[id] = Exchange(started: .now, work: workContinuation)
        await withDiscardingTaskGroup { group in
            group.addTask { await self.readLoop(stream) }
            group.addTask { await self.writeLoop(stream, out) }
            group.addTask { await self.workLoop(id, work) }
            await stream.done()
            streamDone(id)
            group.cancelAll()
        }
    }

    private func readLoop(_ stream: QUICStream) async {
        let id = stream.id
        do {
            for try await buffer in stream {
                received(id, buffer, fin: false)
            }
            received(id, nil, fin: true)
        } catch {
            readFailed(id, error)
        }
    }

    private func writeLoop(_ stream: QUICStream, _ out: AsyncStream<Outbound>) async {
        let id = stream.id
        for await item in out {
            switch item {
            case .bytes(let bytes):
                do {
                    try await stream.write(bytes)
                } catch {
                    writeFailed(id, error)
                    return
                }
                wrote(id, bytes.readableBytes)
            case .fin:
                do {
                    try await stream.finish()
                } catch {
                    writeFailed(id, error)
                    return
                }
                finSent(id)
                return
            }
        }
    }

    private func workLoop(_ id: Int64, _ work: AsyncStream<Work>) async {
        var body: HTTPBody?
        for await item in work {
            switch item {
            case .respond(let request):
                let response = await responder.respond(to: request)
                body = response.body
                submit(id, response)
            case .send(let response):
                body = response.body
                submit(id, response)
            case .pull:
                guard let body else { continue }
                do {
                    let piece = try await body.next()
                    provide(id, piece)
                    if piece == nil { return }
                } catch {
                    bodyFailed(id, error)
                    return
                }
            }
        }
    }

    // MARK: Input

    private func received(_ id: Int64, _ buffer: ByteBuffer?, fin: Bool) {
        guard !closing else { return }
        // A request stream already closed in nghttp3 (the peer stopped it while still sending):
        // its late bytes would look like a new stream starting mid-frame.
        if id & 0x2 == 0 && exchanges[id] == nil { return }
        if let e = exchanges[id], e.stoppedReading { return }
        do {
            try core.handle(streamID: id, buffer: buffer, fin: fin)
        } catch {
            fail(error)
            return
        }
        processEvents()
        flush()
    }

    private func readFailed(_ id: Int64, _ error: any Error) {
        guard !closing else { return }
        core.shutdownRead(id)
        if let stoq = error as? STOQError, stoq.code == .streamReset, stoq.initiator == .peer, let e = exchanges[id], !e.finished {
            // The client cancelled its request: stop its response too.
            abort(id, code: HTTP3ErrorCode.requestCancelled, why: "the client cancelled the request")
        }
        processEvents()
        flush()
    }

    private func processEvents() {
        while let event = core.pollEvent() {
            switch event {
            case .headers(let id, let fields, _):
                startExchange(id, fields)
            case .headersTooLarge(let id):
                respondDirectly(id, status: 431, message: "Request header fields too large\n")
            case .data(let id, let bytes):
                discardRequestBody(id, bytes.count)
            case .needBody(let id):
                // nghttp3 schedules a stream whose body resumed even while it is blocked, so the
                // pace is kept here: no pull while the stream's writer is behind.
                if outputs[id]?.blocked == true {
                    outputs[id]?.pullDeferred = true
                } else {
                    exchanges[id]?.work.yield(.pull)
                }
            case .stopSending(let id, let code):
                if let stream = outputs[id]?.stream {
                    Task { await stream.stopSending(code: code) }
                }
            case .resetStream(let id, let code):
                abort(id, code: code, why: "HTTP/3 refused the stream")
            case .endStream, .streamClosed, .goaway:
                break
            }
        }
    }

    private func startExchange(_ id: Int64, _ fields: [HTTP3Connection.HTTPField]) {
        guard var exchange = exchanges[id], exchange.request == nil else { return }
        var method: String?
        var path: String?
        var authority: String?
        var headers: [(name: String, value: String)] = []
        for field in fields {
            switch field.name {
            case ":method": method = field.value
            case ":path": path = field.value
            case ":authority": authority = field.value
            case ":scheme", ":protocol": break
            default: headers.append((field.name, field.value))
            }
        }
        if let authority, !headers.contains(where: { $0.name == "host" }) {
            headers.insert(("host", authority), at: 0)
        }
        guard let method, let path, !method.isEmpty, path.hasPrefix("/") else {
            respondDirectly(id, status: 400, message: "A request needs :method and a :path starting with /\n")
            return
        }
        let request = HTTPRequest(method: method, target: path, headers: headers, wireProtocol: .http3, client: client)
        exchange.request = request
        exchanges[id] = exchange
        exchange.work.yield(.respond(request))
    }

    private func respondDirectly(_ id: Int64, status: Int, message: String) {
        guard var exchange = exchanges[id], exchange.request == nil else { return }
        let request = HTTPRequest(method: "GET", target: "", headers: [], wireProtocol: .http3, client: client)
        exchange.request = request
        exchanges[id] = exchange
        let bytes = Array(message.utf8)
        exchange.work.yield(
            .send(
                HTTPResponse(
                    status: status, headers: [("content-type", "text/plain; charset=utf-8"), ("content-length", String(bytes.count))],
                    body: .bytes(bytes))))
    }

    private func discardRequestBody(_ id: Int64, _ count: Int) {
        guard var exchange = exchanges[id] else { return }
        exchange.requestBodyBytes += count
        if exchange.requestBodyBytes > limits.maxRequestBody && !exchange.stoppedReading {
            // RFC 9114 §4.1.1: a server that has its answer may ask the client to stop sending.
            exchange.stoppedReading = true
            core.shutdownRead(id)
            if let stream = outputs[id]?.stream {
                Task { await stream.stopSending(code: HTTP3ErrorCode.noError) }
            }
        }
        exchanges[id] = exchange
    }

    // MARK: Output

    private func submit(_ id: Int64, _ response: HTTPResponse) {
        guard !closing, var exchange = exchanges[id], !exchange.finished, let request = exchange.request else { return }
        let method = request.method.uppercased()
        let noBody = method == "HEAD" || response.status == 304 || response.status == 204 || response.status < 200
        exchange.status = response.status
        exchange.logInfo = response.logInfo
        exchanges[id] = exchange
        do {
            try core.submitResponse(id, status: response.status, headers: Self.responseHeaders(response.headers), hasBody: !noBody)
        } catch {
            logger.debug("could not submit a response", metadata: ["client": "\(client)", "error": "\(error)"])
            abort(id, code: HTTP3ErrorCode.internalError, why: error.reason)
            return
        }
        if noBody { exchange.work.finish() }
        flush()
    }

    /// The response's header fields as HTTP/3 allows them: lowercase names, no connection-specific
    /// fields (RFC 9114 §4.2), and a `date`.
    static func responseHeaders(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        let forbidden: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"]
        var out = headers.filter { !forbidden.contains($0.name) && !$0.name.hasPrefix(":") && !$0.name.isEmpty }
        if !out.contains(where: { $0.name == "date" }) { out.append(("date", HTTPDate.now())) }
        return out
    }

    private func provide(_ id: Int64, _ piece: [UInt8]?) {
        guard !closing, var exchange = exchanges[id], !exchange.finished else { return }
        exchange.bodyBytes += piece?.count ?? 0
        exchanges[id] = exchange
        core.provideBody(id, piece)
        if piece == nil { exchange.work.finish() }
        flush()
    }

    private func bodyFailed(_ id: Int64, _ error: any Error) {
        logger.info("response body failed; resetting the stream", metadata: ["client": "\(client)", "stream": "\(id)", "error": "\(error)"])
        abort(id, code: HTTP3ErrorCode.internalError, why: "the response body failed: \(error)")
    }

    /// Abandons an exchange: both directions of its stream are reset, so the client never takes a
    /// truncated body for a whole one.
    private func abort(_ id: Int64, code: UInt64, why: String) {
        core.abandonResponse(id)
        if let output = outputs.removeValue(forKey: id) {
            output.continuation.finish()
            let stream = output.stream
            Task { await stream.abort(code: code) }
        }
        report(id)
    }

    /// Hands everything nghttp3 has to write to the streams' writers.
    private func flush() {
        guard !closing else { return }
        while true {
            let write: HTTP3Connection.Write?
            do {
                write = try core.pollWrite()
            } catch {
                fail(error)
                return
            }
            guard let write else {
                // Writing may have asked for body pieces (needBody).
                processEvents()
                return
            }
            guard var output = outputs[write.streamID] else { continue }
            let count = write.bytes.readableBytes
            if count > 0 {
                output.queued += count
                output.continuation.yield(.bytes(write.bytes))
            }
            if write.fin { output.continuation.yield(.fin) }
            if output.queued > Self.writeQueueLimit && !output.blocked {
                output.blocked = true
                core.block(write.streamID)
            }
            outputs[write.streamID] = output
        }
    }

    private func wrote(_ id: Int64, _ count: Int) {
        guard var output = outputs[id] else { return }
        output.queued -= count
        if output.blocked && output.queued <= Self.writeQueueLimit / 2 {
            output.blocked = false
            let pull = output.pullDeferred
            output.pullDeferred = false
            outputs[id] = output
            if pull { exchanges[id]?.work.yield(.pull) }
            core.unblock(id)
            flush()
        } else {
            outputs[id] = output
        }
    }

    private func finSent(_ id: Int64) {
        outputs[id]?.continuation.finish()
        report(id)
    }

    private func writeFailed(_ id: Int64, _ error: any Error) {
        guard !closing else { return }
        if exchanges[id] != nil {
            abort(id, code: HTTP3ErrorCode.requestCancelled, why: "the client stopped reading: \(error)")
        } else if outputs[id] != nil {
            // One of our own control or QPACK streams cannot be written: HTTP/3 cannot go on.
            fail(HTTP3Error(.protocolViolation, "the client closed a critical HTTP/3 stream", wireCode: 0x104))
        }
    }

    /// Tells the responder an exchange is over, once.
    private func report(_ id: Int64) {
        guard var exchange = exchanges[id], !exchange.finished else { return }
        exchange.finished = true
        exchange.work.finish()
        exchanges[id] = exchange
        guard let request = exchange.request else { return }
        let elapsed = ContinuousClock.now - exchange.started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        responder.finished(
            HTTPExchangeRecord(request: request, status: exchange.status, bodyBytes: exchange.bodyBytes, duration: seconds, logInfo: exchange.logInfo))
    }

    private func streamDone(_ id: Int64) {
        report(id)
        exchanges[id] = nil
        outputs.removeValue(forKey: id)?.continuation.finish()
        guard !closing else { return }
        do {
            try core.closeStream(id, code: HTTP3ErrorCode.noError)
        } catch {
            fail(error)
            return
        }
        processEvents()
        flush()
    }

    /// A connection error: close it with the HTTP/3 code.
    private func fail(_ error: HTTP3Error) {
        guard !closing else { return }
        closing = true
        logger.info("closing an HTTP/3 connection", metadata: ["client": "\(client)", "reason": "\(error.reason)"])
        let connection = self.connection
        Task { await connection.close(code: error.wireCode ?? HTTP3ErrorCode.generalProtocolError, reason: error.reason) }
    }

    private func connectionEnded() {
        closing = true
        for id in Array(exchanges.keys) { report(id) }
        for output in outputs.values { output.continuation.finish() }
        outputs.removeAll()
    }
}

/// The HTTP `date` header's format (RFC 9110 §5.6.7, IMF-fixdate).
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// The current time, e.g. `Mon, 07 Dec 2026 03:19:03 GMT`.
    static func now() -> String {
        format(secondsSince1970: Int64(clamping: Int(Foundation.time(nil))))
    }

    /// Formats a UNIX time.
    static func format(secondsSince1970 t: Int64) -> String {
        let dayNumber = t >= 0 ? t / 86_400 : (t - 86_399) / 86_400
        let secondOfDay = t - dayNumber * 86_400
        // Civil from days (H. Hinnant's algorithm).
        let z = dayNumber + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = Int(((dayNumber % 7) + 11) % 7)  // 1970-01-01 was a Thursday
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[weekday]), \(two(day)) \(months[Int(month - 1)]) \(year) \(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }
}

import Foundation
