/// The seam between the HTTP front door's protocol servers and what they serve.
///
/// `STOQHTTP` owns the public HTTP listener of a node: HTTP/3 over QUIC (nghttp3 on our own
/// transport) and HTTPS over TCP (HTTP/1.1 and HTTP/2 through swift-nio-ssl and swift-nio-http2).
/// Each protocol server turns its wire format into an ``HTTPRequest``, asks one ``HTTPResponder``
/// for an ``HTTPResponse``, and pulls the body from ``HTTPBody`` as fast as its peer reads (a pull,
/// so a slow reader back-pressures the fetch instead of filling memory). The responder knows
/// nothing of the protocol; the servers know nothing of content. This module must not import
/// Nexus or HyperMesh.

/// The HTTP version a request arrived over, as an access log names it.
public enum HTTPWireProtocol: String, Sendable, Hashable {
    case http1 = "h1"
    case http2 = "h2"
    case http3 = "h3"
}

/// A request as every protocol server hands it to the responder.
public struct HTTPRequest: Sendable {
    /// The method token as sent (`GET`, `HEAD`, …).
    public var method: String
    /// The request target as sent: path and query, still percent-encoded (`/stoq/abc?x=1`).
    public var target: String
    /// Header fields, names lowercased, in the order received.
    public var headers: [(name: String, value: String)]
    /// The protocol the request arrived over.
    public var wireProtocol: HTTPWireProtocol
    /// The client's address as an access log prints it (`[::1]:51234`).
    public var client: String

    /// Creates a request.
    public init(method: String, target: String, headers: [(name: String, value: String)], wireProtocol: HTTPWireProtocol, client: String) {
        self.method = method
        self.target = target
        self.headers = headers.map { (name: $0.name.lowercased(), value: $0.value) }
        self.wireProtocol = wireProtocol
        self.client = client
    }

    /// The first value of a header field (case-insensitive name), if present.
    public func header(_ name: String) -> String? {
        let name = name.lowercased()
        return headers.first { $0.name == name }?.value
    }
}

/// A response body, read by pulling.
///
/// The protocol server calls ``next()`` until it returns `nil`; it calls it again only after the
/// bytes it got were handed to the connection, so the body is produced at the reader's pace.
/// A thrown error after the head was sent aborts the response (the stream or connection is reset,
/// so a client never takes a truncated body for a whole one).
public struct HTTPBody: Sendable {
    /// Returns the next piece of the body, or `nil` at its end.
    public let next: @Sendable () async throws -> [UInt8]?

    /// A body produced piece by piece.
    public init(next: @escaping @Sendable () async throws -> [UInt8]?) { self.next = next }

    /// No body.
    public static let empty = HTTPBody { nil }

    /// A body held in memory.
    public static func bytes(_ bytes: [UInt8]) -> HTTPBody {
        let box = OneShot(bytes)
        return HTTPBody { box.take() }
    }
}

/// A response: status, header fields and a body.
public struct HTTPResponse: Sendable {
    /// The status code.
    public var status: Int
    /// Header fields, names lowercased. The servers add `date` and, for HTTPS over TCP, `alt-svc`;
    /// `content-length` is set by the responder whenever the length is known.
    public var headers: [(name: String, value: String)]
    /// The body. For `HEAD` and 304 the servers never read it.
    public var body: HTTPBody
    /// What an access log records beside the status: cache hit or miss, the content id.
    public var logInfo: HTTPLogInfo

    /// Creates a response.
    public init(status: Int, headers: [(name: String, value: String)] = [], body: HTTPBody = .empty, logInfo: HTTPLogInfo = HTTPLogInfo()) {
        self.status = status
        self.headers = headers.map { (name: $0.name.lowercased(), value: $0.value) }
        self.body = body
        self.logInfo = logInfo
    }
}

/// What the responder tells the access log about a response.
public struct HTTPLogInfo: Sendable {
    /// `hit` when every chunk came from the local store, `miss` when any was fetched, nil when
    /// no content was involved (errors, listings of unknown ids).
    public var cache: String?
    /// The content id served, in the form the URL used, if any.
    public var contentID: String?

    /// Read when the exchange is logged, after its body was sent: the cache outcome known only
    /// then (a streamed body learns chunk by chunk whether it hit). Wins over ``cache`` when it
    /// returns a value.
    public var cacheOutcome: (@Sendable () -> String?)?

    /// Creates log info.
    public init(cache: String? = nil, contentID: String? = nil, cacheOutcome: (@Sendable () -> String?)? = nil) {
        self.cache = cache
        self.contentID = contentID
        self.cacheOutcome = cacheOutcome
    }

    /// The cache outcome to log: ``cacheOutcome``'s answer, else ``cache``.
    public var finalCache: String? { cacheOutcome?() ?? cache }
}

/// One finished exchange, as a protocol server reports it to the access log.
public struct HTTPExchangeRecord: Sendable {
    /// The request.
    public var request: HTTPRequest
    /// The status sent.
    public var status: Int
    /// Body bytes sent (0 for HEAD and 304).
    public var bodyBytes: Int
    /// Seconds from the request's arrival to its last byte handed to the connection.
    public var duration: Double
    /// What the responder said about the response.
    public var logInfo: HTTPLogInfo

    /// Creates a record.
    public init(request: HTTPRequest, status: Int, bodyBytes: Int, duration: Double, logInfo: HTTPLogInfo) {
        self.request = request
        self.status = status
        self.bodyBytes = bodyBytes
        self.duration = duration
        self.logInfo = logInfo
    }
}

/// Answers HTTP requests; shared by the HTTP/3 and the HTTPS-over-TCP servers.
public protocol HTTPResponder: Sendable {
    /// Produces the response to `request`. Never throws: failures are HTTP statuses.
    func respond(to request: HTTPRequest) async -> HTTPResponse
    /// Called once per exchange after its last byte was sent, or after it was aborted.
    func finished(_ record: HTTPExchangeRecord)
    /// The messages a WebSocket on `/ws/name/<name>` receives: one JSON text per new version of
    /// the name (`{"name":…,"version":…,"content":…}`), until the stream ends. `nil` when the name
    /// cannot be watched (the server then answers 404).
    func watch(name: String) -> AsyncStream<String>?
}

extension HTTPResponder {
    /// Does nothing.
    public func finished(_ record: HTTPExchangeRecord) {}
    /// No name can be watched.
    public func watch(name: String) -> AsyncStream<String>? { nil }
}

/// Where and how a public HTTP listener serves: shared by the HTTP/3 and HTTPS-over-TCP servers,
/// which a node starts side by side on the same port number (UDP for HTTP/3, TCP for HTTPS).
public struct HTTPListenerConfiguration: Sendable {
    /// The IPv6 address to bind (`::1`, `::`, `fd00::1`); never an IPv4 address.
    public var host: String
    /// The port; 0 picks one (the HTTPS server then announces the HTTP/3 port it is told).
    public var port: Int
    /// PEM certificate chain file (defaults to the node's own certificate).
    public var certificatePath: String
    /// PEM private key file.
    public var keyPath: String
    /// Answers every request.
    public var responder: any HTTPResponder

    /// Creates a configuration.
    public init(host: String, port: Int, certificatePath: String, keyPath: String, responder: any HTTPResponder) {
        self.host = host
        self.port = port
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.responder = responder
    }
}

/// A running public listener (HTTP/3 or HTTPS over TCP).
public protocol HTTPListener: Sendable {
    /// Binds and starts serving; returns the bound port. Throws a readable error when the address
    /// is not IPv6, is taken, or the certificate cannot be loaded.
    func start() async throws -> Int
    /// Stops accepting, lets exchanges in flight finish for a short grace period, then closes.
    func stop() async
}

/// Hands out its value once.
private final class OneShot: Sendable {
    private let state: Mutex<[UInt8]?>
    init(_ value: [UInt8]) { state = Mutex(value) }
    func take() -> [UInt8]? { state.withLock { v in defer { v = nil }; return v } }
}

import Synchronization
