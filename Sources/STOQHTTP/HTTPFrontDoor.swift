import Logging

/// Makes one protocol server (HTTP/3 over UDP, HTTPS over TCP) for a listener configuration.
public typealias HTTPListenerFactory = @Sendable (HTTPListenerConfiguration) -> any HTTPListener

/// A node's public HTTP listener: every protocol server it is given, on one port number (UDP for
/// HTTP/3, TCP for HTTPS), answering with one responder.
///
/// The servers start in the order given; with port 0 the first one picks the port and the others
/// bind the same number (the HTTP/3 server comes first, so the HTTPS server can announce it in
/// `Alt-Svc`). If a later one cannot bind the port the first picked, all stop and a new port is
/// tried, a few times.
public actor HTTPFrontDoor {
    /// The protocol servers `stoq node --http` starts, in order: HTTP/3 first, then HTTPS.
    public static let standardServers: [HTTPListenerFactory] = [
        { HTTP3Server(configuration: $0) },
        { HTTPSServer(configuration: $0) },
    ]

    /// Where and how to listen (the port may be 0).
    public let configuration: HTTPListenerConfiguration
    private let factories: [HTTPListenerFactory]
    private var running: [any HTTPListener] = []
    private let logger: Logger

    /// Creates a front door; nothing is bound until ``start()``.
    public init(configuration: HTTPListenerConfiguration, servers: [HTTPListenerFactory] = HTTPFrontDoor.standardServers,
                logger: Logger = Logger(label: "stoq.http")) {
        self.configuration = configuration
        self.factories = servers
        self.logger = logger
    }

    /// Starts every server; returns the port they share.
    /// - Throws: ``HTTPFrontDoorError`` when there is no server to start, or the first server's error.
    public func start() async throws -> Int {
        guard !factories.isEmpty else {
            throw HTTPFrontDoorError("this build of stoq has no HTTP protocol servers (HTTP/3, HTTPS) to start for --http")
        }
        let attempts = configuration.port == 0 ? 4 : 1
        var lastError: (any Error)?
        for _ in 0..<attempts {
            var port = configuration.port
            do {
                for factory in factories {
                    var c = configuration
                    c.port = port
                    let listener = factory(c)
                    let bound = try await listener.start()
                    running.append(listener)
                    port = bound
                }
                return port
            } catch {
                lastError = error
                await stop()
            }
        }
        throw lastError ?? HTTPFrontDoorError("the HTTP listener did not start")
    }

    /// Stops every server started (each lets exchanges in flight finish for a short while).
    public func stop() async {
        let listeners = running
        running = []
        for listener in listeners { await listener.stop() }
    }

    /// Parses `--http`: `[IPV6]:PORT` (IPv6 only; an IPv4 address is refused with a message).
    /// - Returns: the host without brackets and the port.
    public static func parseAddress(_ text: String) throws -> (host: String, port: Int) {
        let t = text.trimmingSpaces
        if t.hasPrefix("["), let close = t.firstIndex(of: "]") {
            let host = String(t[t.index(after: t.startIndex)..<close])
            let rest = t[t.index(after: close)...]
            if host.contains(":"), !host.contains("."), rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) {
                return (host, port)
            }
            if host.contains(".") {
                throw HTTPFrontDoorError("--http '\(text)': IPv4 (also IPv4-mapped) addresses are not served; STOQ is IPv6-only: give '[::1]:8443' or '[::]:443'")
            }
        } else if t.split(separator: ".").count == 4 || (t.contains(".") && t.contains(":")) {
            throw HTTPFrontDoorError("--http '\(text)': IPv4 addresses are not served; STOQ is IPv6-only: give '[::1]:8443' or '[::]:443'")
        }
        throw HTTPFrontDoorError("--http '\(text)' is not an address like '[::1]:8443' (an IPv6 address in brackets, a port 0...65535)")
    }
}

/// A front door that cannot be set up as asked (address, access log, no servers): the message
/// says what and what to do.
public struct HTTPFrontDoorError: Error, Sendable, CustomStringConvertible {
    /// What went wrong and what to do next.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
