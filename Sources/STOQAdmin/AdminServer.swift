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

    private let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let routes: [String: Handler]
    private let health: (@Sendable () async -> String?)?
    private let logger: Logger
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
        // IPV6_V6ONLY: `[::]` must not accept IPv4 connections (it would on a dual-stack socket).
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
            .bind(host: address.host, port: address.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: child)
                }
            }
        let port = channel.channel.localAddress?.port ?? address.port
        return AdminServer(channel: channel, routes: routes, health: health, address: PeerAddress(host: address.host, port: port), logger: logger)
    }

    private init(
        channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
        routes: [String: Handler], health: (@Sendable () async -> String?)?, address: PeerAddress, logger: Logger
    ) {
        self.channel = channel
        self.routes = routes
        self.health = health
        self.address = address
        self.logger = logger
    }

    /// Serves requests until ``close()``.
    public func run() async {
        do {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } catch {
            logger.debug("admin endpoint stopped", metadata: ["error": "\(error)"])
        }
    }

    /// Stops accepting requests.
    public func close() async {
        try? await channel.channel.close()
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        head = h
                    case .body:
                        continue
                    case .end:
                        guard let request = head else { return }
                        head = nil
                        let (status, type, body) = await answer(request)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: type)
                        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
                        let keepAlive = request.isKeepAlive
                        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                        try await outbound.write(.head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(string: body))))
                        try await outbound.write(.end(nil))
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("admin connection failed", metadata: ["error": "\(error)"])
        }
    }

    private func answer(_ request: HTTPRequestHead) async -> (HTTPResponseStatus, String, String) {
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
