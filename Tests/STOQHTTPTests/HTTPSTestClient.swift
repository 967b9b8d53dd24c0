import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
@testable import STOQHTTP

/// A response as the test client saw it; `complete` is false when the connection closed or the
/// stream was reset before the end of the body.
struct TestResponse: Sendable {
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var complete = false

    var status: Int { head.map { Int($0.status.code) } ?? 0 }
    func header(_ name: String) -> String? { head?.headers.first(name: name) }
}

/// Collects one response; optionally stops reading after the head (a reader that stalls).
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var response = TestResponse()
    private let promise: EventLoopPromise<TestResponse>
    private let stallAfterHead: Bool
    private var done = false

    init(promise: EventLoopPromise<TestResponse>, stallAfterHead: Bool = false) {
        self.promise = promise
        self.stallAfterHead = stallAfterHead
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            response.head = head
            if stallAfterHead {
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
                context.channel.parent?.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
                finish(complete: false)
            }
        case .body(let buffer):
            response.body += Array(buffer.readableBytesView)
        case .end:
            finish(complete: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(complete: false)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(complete: false)
        context.close(promise: nil)
    }

    private func finish(complete: Bool) {
        guard !done else { return }
        done = true
        response.complete = complete
        promise.succeed(response)
    }
}

/// Closes a connection on any error that reaches the end of its pipeline.
final class CloseOnError: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// An HTTPS client for the tests: HTTP/1.1 or HTTP/2 over TLS, trusting one CA.
struct HTTPSTestClient {
    let port: Int
    let caPath: String

    enum Version { case http1, http2 }

    /// Opens a TLS connection offering one ALPN protocol.
    func connect(alpn: String, extraHandlers: @escaping @Sendable (any Channel) throws -> Void = { _ in }) async throws -> any Channel {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caPath)
        tls.applicationProtocols = [alpn]
        let context = try NIOSSLContext(configuration: tls)
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try extraHandlers(channel)
                }
            }
            .connect(host: "::1", port: port).get()
    }

    /// Sends one request on a fresh connection and waits (bounded) for its response.
    func request(
        _ version: Version, method: HTTPMethod = .GET, path: String, headers: [(String, String)] = [], stallAfterHead: Bool = false
    ) async throws -> (response: TestResponse, channel: any Channel) {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = loop.makePromise(of: TestResponse.self)
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: "localhost:\(port)")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        let channel: any Channel
        switch version {
        case .http1:
            channel = try await connect(alpn: "http/1.1") { channel in
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, stallAfterHead: stallAfterHead))
            }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        case .http2:
            // The HTTP/2 handler goes in with TLS, before the connection is active: the server sends
            // its SETTINGS as soon as its handshake completes, and bytes that arrive before the
            // handler is in the pipeline are dropped at its tail (the client then fails with
            // MissingPreface and its stream waits for a response that never comes).
            channel = try await connect(alpn: "h2") { channel in
                _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                    mode: .client, connectionConfiguration: .init(), streamConfiguration: .init(),
                    inboundStreamInitializer: { $0.eventLoop.makeSucceededVoidFuture() }
                )
                // A connection error (GOAWAY) does not close the streams by itself: close the
                // connection so the response shows as incomplete at once.
                try channel.pipeline.syncOperations.addHandler(CloseOnError())
            }
            let multiplexer = try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
            }.get()
            let stream = try await multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .https))
                    try stream.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, stallAfterHead: stallAfterHead))
                }
            }.get()
            stream.write(HTTPClientRequestPart.head(head), promise: nil)
            try await stream.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        }
        let timeout = loop.scheduleTask(in: .seconds(20)) { promise.fail(ChannelError.connectTimeout(.seconds(20))) }
        let response = try await promise.futureResult.get()
        timeout.cancel()
        return (response, channel)
    }

    /// One request, connection closed afterwards.
    func fetch(_ version: Version, method: HTTPMethod = .GET, path: String, headers: [(String, String)] = []) async throws -> TestResponse {
        let (response, channel) = try await request(version, method: method, path: path, headers: headers)
        try? await channel.close().get()
        return response
    }
}

/// Raw bytes from a TLS connection, for the WebSocket and hostile-client tests.
final class ByteSink: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var closed: Bool { state.withLock { $0.closed } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        state.withLock { $0.bytes += Array(buffer.readableBytesView) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Waits (at most `seconds`) until `condition` holds for the bytes received so far.
    func wait(seconds: Double = 10, until condition: ([UInt8], Bool) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            let (bytes, closed) = state.withLock { ($0.bytes, $0.closed) }
            if condition(bytes, closed) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let (bytes, closed) = state.withLock { ($0.bytes, $0.closed) }
        return condition(bytes, closed)
    }
}
