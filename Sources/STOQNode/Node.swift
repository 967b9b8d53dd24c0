import Foundation
import Logging
import STOQContent
import STOQIdentity
import STOQTransport
import STOQWire

/// A node's settings, read from a JSON file by `stoq node --config FILE` (flags override it).
public struct NodeConfiguration: Codable, Sendable {
    /// The node's name (reports and logs).
    public var name: String
    /// Where to listen (IPv6).
    public var listen: PeerAddress
    /// The node certificate chain (PEM) from `stoq certs issue`.
    public var certificate: String
    /// The node private key (PEM).
    public var key: String
    /// The network CA certificate (PEM): peers must present certificates it issued.
    public var ca: String
    /// The chunk store directory.
    public var store: String
    /// Roles: `origin`, `edge`, `client`.
    public var roles: [String]
    /// Region name.
    public var region: String?
    /// Latitude in degrees.
    public var latitude: Double?
    /// Longitude in degrees.
    public var longitude: Double?
    /// Peers an edge fetches misses from (origin first).
    public var upstream: [PeerAddress]
    /// Per-connection send limit in bytes/s.
    public var rateLimitBytesPerSecond: UInt64?
    /// The most chunk bytes an edge keeps (default 1 GiB); W-TinyLFU decides what stays.
    public var cacheBytes: Int?
    /// Idle timeout in seconds.
    public var idleTimeoutSeconds: Int?

    /// Creates a configuration.
    public init(
        name: String, listen: PeerAddress, certificate: String, key: String, ca: String, store: String,
        roles: [String], region: String? = nil, latitude: Double? = nil, longitude: Double? = nil,
        upstream: [PeerAddress] = [], rateLimitBytesPerSecond: UInt64? = nil, idleTimeoutSeconds: Int? = nil
    ) {
        self.name = name
        self.listen = listen
        self.certificate = certificate
        self.key = key
        self.ca = ca
        self.store = store
        self.roles = roles
        self.region = region
        self.latitude = latitude
        self.longitude = longitude
        self.upstream = upstream
        self.rateLimitBytesPerSecond = rateLimitBytesPerSecond
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }

    /// Loads a JSON configuration file.
    public static func load(path: String) throws -> NodeConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeError(.notFound, "cannot read the node configuration \(path)")
        }
        do {
            return try JSONDecoder().decode(NodeConfiguration.self, from: data)
        } catch {
            throw NodeError(.invalidArgument, "\(path) is not a valid node configuration: \(error)")
        }
    }

    /// Builds the endpoint TLS settings: mutual TLS against the network CA, ALPN `stoq/1`.
    public func tlsConfiguration() throws -> TLSConfiguration {
        TLSConfiguration(
            certificateChainPEM: try PEMFile.read(certificate),
            privateKeyPEM: try PEMFile.read(key),
            trustRootsPEM: try PEMFile.read(ca),
            alpn: [STOQMessage.alpn],
            requireClientCertificate: true,
            verifyPeer: true
        )
    }
}

/// Lets the status closure reach the server built after it.
///
/// `@unchecked Sendable`: written once during ``Node`` initialisation, before any connection exists.
final class ServerBox: @unchecked Sendable {
    var server: ChunkServer?
}

/// A running STOQ node: one endpoint that serves chunks (from its store, or as an edge pulling
/// misses from upstream) and dials peers.
public final class Node: Sendable {
    /// The configuration it runs with.
    public let configuration: NodeConfiguration
    /// The endpoint.
    public let endpoint: Endpoint
    /// The store.
    public let store: DiskChunkStore
    /// Peer connections.
    public let peers: PeerSet
    /// The chunk server.
    public let server: ChunkServer
    /// The edge provider when the node is an edge.
    public let edge: EdgeChunkProvider?
    /// Mutable names: published here (origin) or resolved and cached (edge).
    public let names: NameDirectory
    private let logger: Logger

    /// Binds the endpoint and opens the store.
    /// - Parameters:
    ///   - services: handlers of the layers above (Nexus, HyperMesh) for their own request types.
    public static func start(
        _ configuration: NodeConfiguration, services: [any NodeService] = [], logger: Logger = Logger(label: "stoq.node")
    ) async throws -> Node {
        let store = try DiskChunkStore(directory: configuration.store)
        var endpointConfiguration = EndpointConfiguration()
        if let seconds = configuration.idleTimeoutSeconds { endpointConfiguration.idleTimeout = .seconds(seconds) }
        if let rate = configuration.rateLimitBytesPerSecond { endpointConfiguration.rateLimit = RateLimit(bytesPerSecond: rate) }
        endpointConfiguration.keepAliveInterval = .seconds(5)
        let endpoint = try await Endpoint.bind(
            host: configuration.listen.host, port: configuration.listen.port,
            tls: try configuration.tlsConfiguration(), configuration: endpointConfiguration
        )
        return Node(configuration: configuration, endpoint: endpoint, store: store, services: services, logger: logger)
    }

    private init(configuration: NodeConfiguration, endpoint: Endpoint, store: DiskChunkStore, services: [any NodeService], logger: Logger) {
        self.configuration = configuration
        self.endpoint = endpoint
        self.store = store
        self.logger = logger
        let box = ServerBox()
        let peers = PeerSet(endpoint: endpoint, inbound: { connection in await box.server?.serve(connection: connection) })
        self.peers = peers
        let names = NameDirectory(
            store: store, directory: configuration.store + "/names",
            upstream: configuration.roles.contains("edge") ? configuration.upstream : [], peers: peers)
        self.names = names
        let nodeServices: [any NodeService] = [NameService(directory: names, acceptsPublications: configuration.roles.contains("origin")), InvalidationService(directory: names)] + services
        let started = ContinuousClock.now
        let edge = configuration.roles.contains("edge")
            ? EdgeChunkProvider(store: store, upstream: configuration.upstream, peers: peers, cacheBytes: configuration.cacheBytes ?? (1 << 30)) : nil
        self.edge = edge
        let status: @Sendable () async -> String = {
            let connections = await endpoint.connectionCount
            var doc: [String: Any] = [
                "name": configuration.name,
                "roles": configuration.roles,
                "listen": "[\(endpoint.localAddress.ipAddress ?? "")]:\(endpoint.localAddress.port ?? 0)",
                "region": configuration.region ?? "",
                "uptime_seconds": (ContinuousClock.now - started).seconds,
                "connections": connections,
                "upstream": configuration.upstream.map(\.description),
            ]
            if let stats = try? store.stats() {
                doc["store"] = ["chunks": stats.chunks, "bytes": stats.bytes, "pins": stats.pins]
            }
            if let served = box.server?.served {
                doc["served"] = ["requests": served.requests, "bytes": served.bytes]
            }
            if let edge {
                let c = await edge.counters
                let policy = await edge.cacheStats
                let total = c.hits + c.misses
                doc["cache"] = ["hits": c.hits, "misses": c.misses, "upstream_bytes": c.upstreamBytes,
                                "hit_ratio": total == 0 ? 0 : Double(c.hits) / Double(total),
                                "bytes": policy.bytes, "capacity_bytes": configuration.cacheBytes ?? (1 << 30),
                                "evictions": policy.evictions, "rejections": policy.rejections]
                let ahead = await edge.allCounters
                doc["prefetch"] = ["hits": ahead.prefetchHits, "fetched": ahead.prefetched, "wasted": ahead.prefetchWasted]
            }
            for service in nodeServices {
                if let summary = await service.status() { doc[service.name] = summary }
            }
            let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
        self.server = edge.map { ChunkServer(provider: $0, status: status, services: nodeServices) }
            ?? ChunkServer(store: store, status: status, services: nodeServices)
        box.server = self.server
    }

    /// The bound address.
    public var address: PeerAddress {
        PeerAddress(host: endpoint.localAddress.ipAddress ?? configuration.listen.host, port: endpoint.localAddress.port ?? configuration.listen.port)
    }

    /// Serves incoming connections until the endpoint closes.
    public func run() async {
        await server.run(on: endpoint)
    }

    /// Closes peer connections and the endpoint.
    public func close() async {
        await peers.closeAll()
        await endpoint.close()
    }
}
