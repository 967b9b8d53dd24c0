import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import STOQExchange

/// A node's operator endpoint: plain HTTP/1.1 on a TCP port that is bound to loopback by default
/// (`--admin [::1]:9464`).
///
/// `GET /metrics` answers the Prometheus text exposition, `GET /status` the node's status JSON
/// (as `stoq status` shows it), `GET /healthz` `ok`. Everything else is 404 (or 405 for other
/// methods). It is read-only and unauthenticated, which is why it listens on loopback unless an
/// operator names another address.
public final class AdminServer: Sendable {
    /// A route's answer: content type and body.
    public typealias Handler = @Sendable () async -> (contentType: String, body: String)

    private let channel: any Channel
    private let router: AdminRouter
    /// The bound address.
    public let address: PeerAddress

    /// Binds the admin endpoint (IPv6 only: the socket is IPV6_V6ONLY, so `[::]` serves no IPv4).
    /// - Parameters:
    ///   - address: where to listen, e.g. `[::1]:0` for an ephemeral loopback port.
    ///   - routes: path → handler.
    ///   - health: what is wrong with the node (nil: nothing); when given, `GET /healthz` answers
    ///     `200 ok` while it returns nil and `503` with its words otherwise.
    /// - Throws: ``NodeError`` `.invalidArgument` for an address that is not an IPv6 literal (or is
    ///   IPv4-mapped), or the bind error.
    public static func bind(
        _ address: PeerAddress, routes: [String: Handler], health: (@Sendable () async -> String?)? = nil,
        logger: Logger = Logger(label: "stoq.admin")
    ) async throws -> AdminServer {
        try checkAddress(address)
        let router = AdminRouter(routes: routes, health: health, logger: logger)
        // Each connection is served by a plain channel handler, never wrapped in an
        // NIOAsyncChannel: a connection accepted while the endpoint stops would otherwise be
        // dropped unconsumed, and NIO traps on an async writer deinitialised without `finish()`
        // (swift-nio's NIOAsyncWriter precondition; seen as a crash of a stopping node).
        // IPV6_V6ONLY: `[::]` must not accept IPv4 connections (it would on a dual-stack socket).
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    try child.pipeline.syncOperations.addHandler(AdminConnectionHandler(router: router))
                }
            }
            .bind(host: address.host, port: address.port).get()
        let port = channel.localAddress?.port ?? address.port
        return AdminServer(channel: channel, router: router, address: PeerAddress(host: address.host, port: port))
    }

    private init(channel: any Channel, router: AdminRouter, address: PeerAddress) {
        self.channel = channel
        self.router = router
        self.address = address
    }

    /// Serves requests until ``close()`` (or until the calling task is cancelled, which closes it).
    public func run() async {
        let channel = self.channel
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
        router.logger.debug("admin endpoint stopped")
    }

    /// Stops accepting requests.
    public func close() async {
        try? await channel.close()
    }
}

/// What the admin endpoint answers: routes, `/healthz`, 404 and 405.
struct AdminRouter: Sendable {
    let routes: [String: AdminServer.Handler]
    let health: (@Sendable () async -> String?)?
    let logger: Logger

    func answer(_ request: HTTPRequestHead) async -> (HTTPResponseStatus, String, String) {
        let path = String(request.uri.split(separator: "?", maxSplits: 1).first ?? "")
        if path == "/healthz", request.method == .GET, let health {
            if let problem = await health() { return (.serviceUnavailable, "text/plain; charset=utf-8", "not ok: \(problem)\n") }
            return (.ok, "text/plain; charset=utf-8", "ok\n")
        }
        guard let handler = routes[path] else {
            return (.notFound, "text/plain; charset=utf-8", "not found; try " + routes.keys.sorted().joined(separator: ", ") + "\n")
        }
        guard request.method == .GET else {
            return (.methodNotAllowed, "text/plain; charset=utf-8", "only GET\n")
        }
        let (type, body) = await handler()
        return (.ok, type, body)
    }
}

/// One admin connection: a request's answer is produced in a task and written back through the
/// channel; NIO's HTTP server pipeline holds pipelined requests until the previous response ended.
final class AdminConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let router: AdminRouter
    private var head: HTTPRequestHead?

    init(router: AdminRouter) { self.router = router }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let channel = context.channel
            let router = self.router
            Task {
                let (status, type, body) = await router.answer(request)
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: type)
                headers.add(name: "Content-Length", value: "\(body.utf8.count)")
                let keepAlive = request.isKeepAlive
                headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: request.version, status: status, headers: headers)), promise: nil)
                channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil)
                let ended = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: ended)
                if !keepAlive { ended.futureResult.whenComplete { _ in channel.close(promise: nil) } }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        router.logger.debug("admin connection failed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension AdminConnectionHandler: Sendable {}

extension AdminServer {
    /// Refuses an admin address that is not an IPv6 literal, or is an IPv4-mapped one
    /// (`::ffff:a.b.c.d`): STOQ is IPv6-only, and the admin listener is IPv6-only too.
    package static func checkAddress(_ address: PeerAddress) throws {
        guard let bytes = PeerAddress.ipv6Bytes(address.host) else {
            throw NodeError(.invalidArgument, "the admin address \(address) is not an IPv6 address; use e.g. [::1]:9464 (STOQ is IPv6-only)")
        }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            throw NodeError(.invalidArgument, "the admin address \(address) is an IPv4-mapped address, which would serve over IPv4; use an IPv6 address such as [::1]:9464 (STOQ is IPv6-only)")
        }
    }
}

extension PeerAddress {
    /// The 16 bytes of an IPv6 literal (no brackets, no zone), or nil for anything else.
    static func ipv6Bytes(_ host: String) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 16)
        let ok = bytes.withUnsafeMutableBytes { inet_pton(AF_INET6, host, $0.baseAddress) }
        return ok == 1 ? bytes : nil
    }
}
