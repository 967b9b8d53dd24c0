import Foundation
import Logging
import ServiceLifecycle
import STOQAudit
import STOQAccess
import STOQAdmin
import STOQContent
import STOQEdge
import STOQEdgeNode
import STOQExchange
import STOQIdentity
import STOQPeering
import STOQRouting
import STOQSwarm
import STOQTransport
import STOQWire

/// A node's settings, read from a JSON file by `stoq node --config FILE` (flags override it).
/// The file's keys are not these property names but the flags' (docs/CONFIG.md,
/// ``NodeConfigurationFile``); the synthesized `Codable` form is for programs, not people.
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
    /// How new chunks are kept, `packs` or `files` (`--store-format`, config key `storeFormat`); nil
    /// keeps the store's own format (see ``DiskChunkStore/init(directory:format:packTarget:)``).
    public var storeFormat: String?
    /// Seconds a stored pack record's last hash check stands before a read hashes it again
    /// (config key `storeVerifySeconds`; default 7 days; 0: every read). See ``DiskChunkStore/verifyInterval``.
    public var storeVerifySeconds: Int?
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
    /// Other known peers (beside ``upstream``) whose health the node probes.
    public var peers: [PeerAddress]?
    /// Health probing (defaults: every 1 s, 100 ms timeout, 3 misses → down).
    public var health: HealthSettings?
    /// Upload sharing among clients (default: unthrottled).
    public var throttle: ServeThrottleSettings?
    /// The admin HTTP endpoint (`/metrics`, `/status`); nil: none. Bind it to loopback
    /// (`[::1]:9464`) unless something else must scrape it.
    public var admin: PeerAddress?
    /// Log level: trace, debug, info, notice, warning, error, critical (default info).
    public var logLevel: String?
    /// The log format on stderr, `text` (default) or `json` (`--log-format`).
    public var logFormat: String?
    /// The routing matrix: fed by health probes and gossip, it ranks fetch sources (default on,
    /// gossip every 2 s).
    public var routing: RoutingSettings?
    /// Most connections the node holds at once, accepted and dialled (default
    /// ``defaultMaxConnections``); more are refused with CONNECTION_CLOSE and a reason.
    public var maxConnections: Int?
    /// Most connections accepted from one IPv6 address (default ``defaultMaxConnectionsPerAddress``).
    public var maxConnectionsPerAddress: Int?
    /// UDP sockets and event loops serving the node's QUIC connections (1...64, default
    /// ``defaultEventLoops``): N sockets on the listen address with `SO_REUSEPORT`, one loop each
    /// (``EndpointConfiguration/eventLoops``).
    public var eventLoops: Int?
    /// What each peer connection may hold of the node's streams (default ``PeerLimits/init()``).
    public var limits: PeerLimits?
    /// A relay's streams carried at once (default 512).
    public var maxRelayStreams: Int?
    /// A relay's streams carried at once for one requesting connection (default 64).
    public var maxRelayStreamsPerConnection: Int?
    /// The node's location, `LAT,LON` in degrees (`--location`): routing's geographic factor and
    /// the edge registry's nearness. Sets ``latitude`` and ``longitude``.
    public var location: String?
    /// The issuer that renews this node's certificate (`--issuer`): the node renews at two thirds
    /// of its certificate's lifetime and swaps the new one in without dropping connections.
    public var issuer: PeerAddress?
    /// The CA directory (`ca.pem`, `ca.key`) of a node with the `issuer` role (`--ca-dir`).
    public var caDir: String?
    /// The CA's key in a PKCS#11 token (`--ca-key 'pkcs11:…'`), for a node with the `issuer` role
    /// whose `caDir` holds `ca.pem` but no `ca.key`: renewals are signed in the token.
    public var caKey: String?
    /// The longest certificate lifetime an issuer grants, e.g. `90s`, `10m`, `24h` (default 24h).
    public var maxLifetime: String?
    /// A CT log directory an issuer appends every certificate it issues to (`--ct-log`).
    public var ctLog: String?
    /// Accept anonymous readers (`--public-read`): a client without a certificate may PING,
    /// WANT/HAVE, GET_CHUNK, NAME_RESOLVE and CONTENT_KEY_REQUEST, nothing else (ERROR 5
    /// "forbidden"); the node also sends its CA certificate with its own so such a client can pin
    /// the CA by its fingerprint (a share ticket). Default false: every client needs a certificate.
    public var publicRead: Bool?
    /// Node ids (64 hex characters, from `stoq certs show`) allowed to upload content into this
    /// origin over `stoq/1` (`stoq put --node`); nil or empty: nobody may upload.
    public var publishers: [String]?
    /// Node ids (64 hex characters) of this node's operators (`--operator`): they may read STATUS
    /// and purge, relay, and issue access grants for status, purge and relay. Nil or empty: only
    /// the node itself and grants it issued (docs/SECURITY.md; `stoq node` defaults it to the
    /// `client` certificate beside the CA file).
    public var operators: [String]?
    /// Node ids (64 hex characters) a relay carries streams for (`--relay-for`), besides its
    /// operators and publishers.
    public var relayFor: [String]?
    /// Whether every certificate of the network may relay through this node (`--relay-open`).
    public var relayOpen: Bool?
    /// Enforce the `read` right (`--private-reads`): manifests and chunks of content that is not
    /// public are served only to the node itself, its operators, publishers and ``privateReaders``,
    /// and to connections that presented a read grant covering the content (ERROR 7 otherwise;
    /// docs/PROTOCOL.md, "Private reads"). Default false: every peer reads every chunk.
    public var privateReads: Bool?
    /// Node ids (64 hex characters) that read everything on a node run with ``privateReads``
    /// (`--private-reader`): its edges and the peers that fetch for others.
    public var privateReaders: [String]?
    /// Run the Nexus DHT (`--dht`); `stoq node` reads it, the node itself does not.
    public var dht: Bool?
    /// DHT bootstrap nodes (`--bootstrap`, implies ``dht``).
    public var bootstrap: [PeerAddress]?
    /// A CT log directory: refuse peers whose certificate is not in it (`--require-ct`, implies ``dht``).
    public var requireCt: String?
    /// An enrolment table (`--require-enrolment`): peers must also prove the per-node enrolment
    /// secret the issuer gave them (the second factor; implies ``dht``).
    public var requireEnrolment: String?
    /// This node's enrolment secret file (`--enrolment-secret`, NAME.enrol from `stoq certs issue --enrol`).
    public var enrolmentSecret: String?
    /// The HyperMesh shard directory (`--shards`, implies the storage role; default `STORE/shards`).
    public var shards: String?
    /// The HTTP front door's address (`--http`); nil: none. `stoq node` reads it and the five below.
    public var http: String?
    /// The HTTP listener's certificate chain (`--http-cert`; default: ``certificate``).
    public var httpCert: String?
    /// The HTTP listener's private key (`--http-key`; default: ``key``).
    public var httpKey: String?
    /// The HTTP access log, a file or `-` for stderr (`--access-log`).
    public var accessLog: String?
    /// The access log format, `combined` (default) or `json` (`--access-log-format`).
    public var accessLogFormat: String?
    /// The publisher key file the HTTP listener decrypts with (`--publisher-key`; default `STORE/publisher.key`).
    public var publisherKey: String?
    /// Keep no audit trail of transfers (`--no-audit-log`; default false: `STORE/audit/` records
    /// every finished transfer, docs/OPERATIONS.md "Audit trail").
    public var noAuditLog: Bool?
    /// Most seconds between signed audit heads while transfers are recorded (`--audit-sign-seconds`, default 60).
    public var auditSignSeconds: Int?
    /// A CT log directory every signed audit head is appended to (`--audit-ct-log`).
    public var auditCtLog: String?
    /// Bytes after which an audit segment is closed (default 16 MiB).
    public var auditSegmentBytes: Int?
    /// Audit segments kept; older ones are deleted (default 64).
    public var auditSegments: Int?

    /// The default of ``maxConnections``.
    public static let defaultMaxConnections = 1024
    /// The default of ``maxConnectionsPerAddress``.
    public static let defaultMaxConnectionsPerAddress = 64
    /// The default of ``eventLoops``: 1 (see docs/CONFIG.md for when more pay).
    public static let defaultEventLoops = 1

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

    /// Loads a JSON configuration file (docs/CONFIG.md): keys are the `stoq node` flags in
    /// camelCase, relative paths resolve against the file's directory, unset keys take their
    /// defaults. Old keys are read too; ``NodeConfigurationFile/read(path:)`` returns the warnings.
    /// - Throws: ``NodeError`` `.invalidArgument` naming the key for an unknown key or a wrong type.
    public static func load(path: String) throws -> NodeConfiguration {
        do {
            return try NodeConfigurationFile.configuration(NodeConfigurationFile.read(path: path).values)
        } catch {
            throw NodeError(.invalidArgument, error.reason)
        }
    }

    /// Builds the endpoint TLS settings: mutual TLS against the network CA, ALPN `stoq/1`.
    public func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration(
            certificateChainPEM: try PEMFile.read(certificate),
            privateKeyPEM: try PEMFile.read(key),
            trustRootsPEM: try PEMFile.read(ca),
            alpn: [STOQMessage.alpn],
            requireClientCertificate: true,
            verifyPeer: true
        )
        if publicRead == true { tls = try tls.servingAnonymousReaders() }
        return tls
    }
}

/// Lets the status closure reach the parts built after it.
///
/// `@unchecked Sendable`: written once during ``Node`` initialisation, before any connection exists.
final class ServerBox: @unchecked Sendable {
    weak var node: Node?
}

/// A running STOQ node: one endpoint that serves chunks (from its store, or as an edge pulling
/// misses from upstream) and dials peers, probes its peers' health, and (optionally) exports
/// metrics on an admin HTTP endpoint.
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
    /// Roles and access grants (issue 15): who may read STATUS, purge and publish here.
    public let access: AccessPolicy
    /// The edge provider when the node is an edge.
    public let edge: EdgeChunkProvider?
    /// Mutable names: published here (origin) or resolved and cached (edge).
    public let names: NameDirectory
    /// The node's metrics.
    public let metrics: NodeMetrics
    /// Health probing of upstream and known peers (nil when switched off).
    public let health: PeerHealthService?
    /// The admin HTTP endpoint, when configured.
    public let admin: AdminServer?
    /// The node's id (SHA-256 of its certificate's public key).
    public let nodeID: NodeID
    /// The routing matrix owner (nil when routing is switched off).
    public let router: NodeRouter?
    /// Read keys of public contents: the lookup an HTTP responder uses ("read key for this content
    /// id, or nil"); nil for private content, even on its origin.
    public let publicKeys: PublicKeyDirectory
    /// Purges of cached content (this node and the edges below).
    public let purges: PurgeCoordinator
    /// The registry of the edges below (origins and edges; `STORE/edges.json`).
    public let edgeDirectory: EdgeDirectory?
    /// Registers this edge with its upstream (edges).
    public let registrar: EdgeRegistrar?
    /// Keeps the node's certificate fresh (renewal with its issuer, SIGHUP reloads, expiry).
    public let renewer: CertificateRenewer
    /// Live transfers per peer and content (served, and an edge's fills): `stoq status`, the info log.
    public let tracker: TransferTracker
    /// Peers' names (certificate common name and short node id) for status and logs.
    public let peerNames: PeerNames
    /// The totals saved in `STORE/counters.json` when the node started (what it counts while
    /// running is added to them).
    public let savedCounters: PersistentCounters
    let uploadCoordinator: UploadCoordinator?
    /// The audit trail of transfers (nil with `noAuditLog`).
    public let audit: NodeAudit?
    /// The node's certificate key, opened once: it signs the node's routing adverts, audit heads
    /// and (under Nexus) DHT node records, in memory for a key file or in the token for a
    /// `pkcs11:` key. Nil when the key file holds no P-256 key (then those go unsigned).
    public let signer: (any CertificateSigner)?
    let stopping = StopFlag()
    let logger: Logger

    /// Binds the endpoint (and the admin endpoint) and opens the store.
    /// - Parameters:
    ///   - services: handlers of the layers above (Nexus, HyperMesh) for their own request types.
    ///   - metrics: where the node's metrics go (default: a registry of its own).
    public static func start(
        _ configuration: NodeConfiguration, services: [any NodeService] = [], metrics: NodeMetrics = NodeMetrics(),
        logger: Logger = Logger(label: "stoq.node")
    ) async throws -> Node {
        // Refuse a bad cache size, admin address or certificate before anything is bound.
        try await configuration.validate()
        // Location from `location`, region from the certificate when not configured.
        let configuration = try configuration.withPlacement()
        var healthConfiguration: HealthMonitor<PeerAddress>.Configuration?
        if configuration.health?.enabled ?? true {
            healthConfiguration = try (configuration.health ?? HealthSettings()).monitorConfiguration()
        }
        let routing = configuration.routing ?? RoutingSettings()
        let gossipInterval = try routing.gossipInterval()
        guard let leaf = try PEMFile.certificateDERs(in: PEMFile.read(configuration.certificate)).first else {
            throw NodeError(.invalidArgument, "\(configuration.certificate) holds no certificate; give the chain `stoq certs issue` wrote")
        }
        let nodeID = try NodeID(certificateDER: leaf)
        let signer = try Self.openSigner(configuration, leaf: leaf, logger: logger)
        let router = routing.isEnabled ? NodeRouter(
            node: nodeID, region: configuration.region, latitude: configuration.latitude, longitude: configuration.longitude,
            bandwidthBytesPerSecond: configuration.rateLimitBytesPerSecond, gossipInterval: gossipInterval, metrics: metrics,
            security: try RoutingAdvertSecurity.forNode(configuration, signer: signer, logger: logger)) : nil
        let store = try DiskChunkStore(directory: configuration.store, format: try configuration.storeFormat.map { name in
            guard let f = StoreFormat(rawValue: name) else {
                throw NodeError(.invalidArgument, "the store format must be packs or files, not '\(name)' (--store-format / config key storeFormat)")
            }
            return f
        })
        store.verifyInterval = configuration.storeVerifySeconds.map(Int64.init) ?? DiskChunkStore.defaultVerifyInterval
        if let rebuilt = store.rebuilt { logger.warning("store \(configuration.store): \(rebuilt)") }
        if store.droppedTornBytes > 0 { logger.notice("store \(configuration.store): cut \(store.droppedTornBytes) bytes of torn or uncommitted records from the end of its packs") }
        let saved = PersistentCounters.load(path: configuration.store + "/" + PersistentCounters.fileName, logger: logger)
        let ownName = CertificateInfo(derEncoded: leaf)?.commonName
        var endpointConfiguration = EndpointConfiguration()
        if let seconds = configuration.idleTimeoutSeconds { endpointConfiguration.idleTimeout = .seconds(seconds) }
        if let rate = configuration.rateLimitBytesPerSecond { endpointConfiguration.rateLimit = RateLimit(bytesPerSecond: rate) }
        endpointConfiguration.keepAliveInterval = .seconds(5)
        let maxConnections = configuration.maxConnections ?? NodeConfiguration.defaultMaxConnections
        let perAddress = configuration.maxConnectionsPerAddress ?? NodeConfiguration.defaultMaxConnectionsPerAddress
        guard (1...1_000_000).contains(maxConnections) else {
            throw NodeError(.invalidArgument, "max connections must be 1 to 1000000, not \(maxConnections)")
        }
        guard (1...1_000_000).contains(perAddress) else {
            throw NodeError(.invalidArgument, "max connections per address must be 1 to 1000000, not \(perAddress)")
        }
        try (configuration.limits ?? PeerLimits()).validate()
        endpointConfiguration.maxConnections = maxConnections
        endpointConfiguration.maxConnectionsPerAddress = perAddress
        let loops = configuration.eventLoops ?? NodeConfiguration.defaultEventLoops
        guard (1...Endpoint.maxEventLoops).contains(loops) else {
            throw NodeError(.invalidArgument, "event loops must be 1 to \(Endpoint.maxEventLoops), not \(loops) (--event-loops / config key eventLoops)")
        }
        endpointConfiguration.eventLoops = loops
        let renewal = try IssuerService.renewalSetup(configuration, services: services, logger: logger)
        let audit = configuration.noAuditLog == true ? nil : try NodeAudit(configuration: configuration, signer: signer, logger: logger)
        let endpoint = try await Endpoint.bind(
            host: configuration.listen.host, port: configuration.listen.port,
            tls: try configuration.tlsConfiguration(), configuration: endpointConfiguration
        )
        let renewer = CertificateRenewer(
            configuration: configuration, endpoint: endpoint, credentials: renewal.credentials,
            renew: renewal.renew(endpoint), source: renewal.source, logger: logger)
        // Signed routing adverts follow certificate renewals and reloads.
        router?.security?.follow { await renewer.current }
        let box = ServerBox()
        let admin: AdminServer?
        if let address = configuration.admin {
            do {
                admin = try await AdminServer.bind(address, routes: [
                    "/metrics": { ("text/plain; version=0.0.4; charset=utf-8", await box.node?.scrape() ?? "") },
                    "/status": { ("application/json", await box.node?.statusJSON() ?? "{}") },
                    "/healthz": { ("text/plain; charset=utf-8", "ok\n") },
                ], health: {
                    guard let node = box.node else { return "the node is not running" }
                    return await node.healthProblem()
                }, logger: logger)
            } catch {
                await endpoint.close()
                throw NodeError(.invalidArgument, "cannot listen for the admin endpoint on \(address): \(error); choose a free port (e.g. --admin [::1]:0)")
            }
        } else {
            admin = nil
        }
        let node = Node(
            configuration: configuration, endpoint: endpoint, store: store, services: services + renewal.services, metrics: metrics,
            healthConfiguration: healthConfiguration, admin: admin, nodeID: nodeID, router: router, box: box, renewer: renewer,
            savedCounters: saved, audit: audit, signer: signer, logger: logger)
        node.peerNames.remember(.init(name: ownName, nodeID: nodeID))
        // Prometheus counters continue from the saved totals.
        if saved.servedBytes > 0 { metrics.servedBytes.increment(by: saved.servedBytes) }
        metrics.syncCache(hits: saved.cacheHits, misses: saved.cacheMisses)
        box.node = node
        if let edges = node.edgeDirectory {
            // Holders an origin kept across a restart are dialled where they registered last.
            await node.names.setEdgeLocator { id in await edges.address(of: id) }
        }
        return node
    }

    /// The node's key as a signer, opened once per start. A key in a token that cannot be opened
    /// (a wrong PIN, no such object) or is not the certificate's stops the start with the reason,
    /// before the transport tries it again (so a wrong PIN is offered once); a key file that holds
    /// no P-256 key leaves the node without one (the transport checks the file).
    static func openSigner(_ configuration: NodeConfiguration, leaf: [UInt8], logger: Logger) throws -> (any CertificateSigner)? {
        let certificate = CertificateInfo(derEncoded: leaf)?.certificate
        if PKCS11URI.isURI(configuration.key) {
            do { return try KeySigner.open(configuration.key, certificate: certificate) } catch {
                throw NodeError(.invalidArgument, error.reason)
            }
        }
        return try? KeySigner.open(configuration.key, certificate: certificate)
    }

    private init(
        configuration: NodeConfiguration, endpoint: Endpoint, store: DiskChunkStore, services: [any NodeService], metrics: NodeMetrics,
        healthConfiguration: HealthMonitor<PeerAddress>.Configuration?, admin: AdminServer?, nodeID: NodeID, router: NodeRouter?,
        box: ServerBox, renewer: CertificateRenewer, savedCounters: PersistentCounters, audit: NodeAudit?,
        signer: (any CertificateSigner)?, logger: Logger
    ) {
        self.signer = signer
        self.savedCounters = savedCounters
        self.audit = audit
        let tracker = TransferTracker()
        let peerNames = PeerNames()
        self.tracker = tracker
        self.peerNames = peerNames
        self.renewer = renewer
        self.nodeID = nodeID
        self.router = router
        self.configuration = configuration
        self.endpoint = endpoint
        self.store = store
        self.metrics = metrics
        self.admin = admin
        self.logger = logger
        // Connections this node dials are served too: an origin pushes name invalidations over them.
        let peers = PeerSet(endpoint: endpoint, metrics: metrics, inbound: { connection in
            await box.node?.dialled(connection)
            await box.node?.server.serve(connection: connection)
        })
        self.peers = peers
        self.health = healthConfiguration.map { PeerHealthService(peers: peers, configuration: $0, metrics: metrics, observer: router) }
        let names = NameDirectory(
            store: store, directory: configuration.store + "/names",
            upstream: configuration.roles.contains("edge") ? configuration.upstream : [], peers: peers)
        self.names = names
        let edge = configuration.roles.contains("edge")
            ? EdgeChunkProvider(store: store, upstream: configuration.upstream, peers: peers, cacheBytes: configuration.cacheBytes ?? (1 << 30),
                                tracker: tracker, peerNames: peerNames) : nil
        self.edge = edge
        // Public contents' read keys and purges (PublicContent.swift).
        let edgeUpstream: [PeerAddress] = edge == nil ? [] : configuration.upstream
        var loadChunk: (@Sendable (ChunkID) async throws -> [UInt8]?)?
        if let edge { loadChunk = { id in try await edge.chunk(id) } }
        self.publicKeys = PublicKeyDirectory.forStore(
            directory: configuration.store, store: store, upstream: edgeUpstream, peers: peers, load: loadChunk)
        self.purges = PurgeCoordinator(edge: edge, store: store, upstream: edgeUpstream, peers: peers)
        // Access grants and roles (issue 15, GrantService.swift): STATUS, PURGE and uploads are checked against them.
        let access = Self.accessPolicy(configuration, nodeID: nodeID)
        self.access = access
        // Issue 15: names are closed by default, like STATUS and PURGE. An origin takes NAME_PUBLISH
        // from itself, its operators (`stoq node` defaults them to the client.pem beside the CA), its
        // publishers, or a connection that presented a grant with the publish right whose scope
        // covers the name. Any other certificate of the network is refused with ERROR 7; the first
        // owner key of a name that passes this check binds it (docs/SECURITY.md).
        let authorizeName: @Sendable (String, Connection) async -> String? = { name, connection in
            let peer = connection.peerNodeID
            if let peer, access.roles.operators.contains(peer) { return nil }
            let id = ObjectIdentifier(connection)
            guard case .denied(let why) = await access.check(.publish, item: .name(name), peer: peer, connection: id) else { return nil }
            var message = "publishing the name '\(name)' needs the right publish for scope \(AccessItem.name(name)). This origin takes names "
                + "only from itself, its operators (--operator), its publishers (--publisher), and connections that presented a grant "
                + "with that right whose name: scope covers the name; the certificate presented (node \(peer?.short ?? "none")) is none of these. "
                + "Publish with an operator's or a publisher's certificate, or present a grant (stoq name publish --grant FILE, from "
                + "`stoq grant create --rights publish --scope name:PREFIX` by a publisher of this node)"
            // A grant was presented but does not do: say why (expired, revoked, another scope).
            if await access.hasGrants(id) { message += ". The grants presented: \(why)" }
            return message
        }
        var builtIn: [any NodeService] = [NameService(directory: names, acceptsPublications: configuration.roles.contains("origin"), authorize: authorizeName), InvalidationService(directory: names),
                                          ContentAccessService(keys: publicKeys, purges: purges, access: access, audit: audit), GrantService(access: access, purges: purges)]
        // The edge registry (docs/PROTOCOL.md, "Edge registry"): origins and edges keep the edges below.
        let servesEdges = configuration.roles.contains("origin") || configuration.roles.contains("edge")
        self.edgeDirectory = servesEdges ? EdgeDirectory(path: configuration.store + "/edges.json") : nil
        if let edgeDirectory { builtIn.append(EdgeRegistryService(directory: edgeDirectory)) }
        builtIn.append(AuditService(audit: audit, access: access))
        let listen = configuration.listen
        self.registrar = edge == nil ? nil : EdgeRegistrar(
            address: { PeerAddress(host: endpoint.localAddress.ipAddress ?? listen.host, port: endpoint.localAddress.port ?? listen.port) },
            region: configuration.region ?? "", latitude: configuration.latitude, longitude: configuration.longitude)
        if configuration.roles.contains("origin") {
            let uploads = UploadCoordinator(store: store, directory: configuration.store, publishers: configuration.publishers ?? [])
            self.uploadCoordinator = uploads
            builtIn.append(UploadService(coordinator: uploads, access: access, audit: audit))
        } else {
            self.uploadCoordinator = nil
        }
        if configuration.roles.contains("relay") { builtIn.append(RelayService(
            peers: peers, authorize: { connection in
                // Issue 15: RELAY_OPEN needs the relay right (a role here or a grant an operator issued).
                if case .denied(let why) = await access.check(.relay, peer: connection.peerNodeID, connection: ObjectIdentifier(connection)) { return why }
                return nil
            }, ownAddress: endpoint.localAddress, maximumConcurrentStreams: max(1, configuration.maxRelayStreams ?? 512),
            maximumStreamsPerConnection: max(1, configuration.maxRelayStreamsPerConnection ?? 64),
            requestTimeout: .milliseconds((configuration.limits ?? PeerLimits()).requestTimeoutMilliseconds))) }
        if let router { builtIn.append(contentsOf: router.gossipServices) }
        let services = builtIn + services
        let status: @Sendable () async -> String = { await box.node?.statusJSON() ?? "{}" }
        self.services = services
        self.started = ContinuousClock.now
        let bandwidth = configuration.rateLimitBytesPerSecond ?? 0
        let probeLoad: @Sendable (Int) -> ProbeLoad = { ProbeLoad(activeTransfers: $0, bandwidthBytesPerSecond: bandwidth) }
        let limits = configuration.limits ?? PeerLimits()
        // A node answers a client without a certificate (only possible with publicRead) as a reader.
        // With --private-reads an anonymous reader may also present a (peer-unbound) read grant.
        let privateReads = configuration.privateReads ?? false
        let anonymous = privateReads ? AnonymousReaders.allowedFrameTypes.union([GrantMessage.Types.grant.rawValue]) : AnonymousReaders.allowedFrameTypes
        // Issue 15: the read right enforced (ReadGate): public content stays open to everyone.
        let keysForReads = self.publicKeys
        let readGate = privateReads ? ReadGate(access: access, isPublic: { content in
            if case .key = await keysForReads.answer(for: content) { return true }
            return false
        }) : nil
        // Issue 15 item 7: every STATUS answered is in the audit trail (who, under which grant).
        var statusAnswered: (@Sendable (NodeID?, [UInt8]?, Int) -> Void)?
        if let audit {
            statusAnswered = { (peer: NodeID?, grant: [UInt8]?, bytes: Int) in
                audit.note(AuditRecord.Direction.status, content: nil, peer: peer, bytes: Int64(bytes), chunks: 0, grant: grant)
            }
        }
        self.server = edge.map { ChunkServer(provider: $0, status: status, services: services, metrics: metrics, throttle: configuration.throttle, probeLoad: probeLoad, limits: limits, anonymousRequests: anonymous, tracker: tracker, peerNames: peerNames, access: access, statusAnswered: statusAnswered, readGate: readGate) }
            ?? ChunkServer(store: store, status: status, services: services, metrics: metrics, throttle: configuration.throttle, probeLoad: probeLoad, limits: limits, anonymousRequests: anonymous, tracker: tracker, peerNames: peerNames, access: access, statusAnswered: statusAnswered, readGate: readGate)
    }

    private let services: [any NodeService]
    private let started: ContinuousClock.Instant

    /// The node's access policy: its operators and publishers, the CA grants must chain to, and the
    /// revocation lists kept in `STORE/revocations.json`.
    static func accessPolicy(_ configuration: NodeConfiguration, nodeID: NodeID) -> AccessPolicy {
        let logger = Logger(label: "stoq.grants")
        let store = configuration.store
        let roles = AccessPolicy.Roles(
            node: nodeID, operators: Set((configuration.operators ?? []).compactMap { NodeID(hex: $0) }),
            publishers: Set((configuration.publishers ?? []).compactMap { NodeID(hex: $0) }),
            relayers: Set((configuration.relayFor ?? []).compactMap { NodeID(hex: $0) }), relayOpen: configuration.relayOpen ?? false,
            readers: Set((configuration.privateReaders ?? []).compactMap { NodeID(hex: $0) }))
        return AccessPolicy(roles: roles, trust: try? TrustRoots.load(path: configuration.ca), saved: RevocationStore.load(store: store, logger: logger),
                            save: { RevocationStore.save($0, store: store, logger: logger) })
    }

    /// A connection this node dialled: an edge asks its upstream to pass purges on over it.
    func dialled(_ connection: Connection) async {
        guard edge != nil, let address = await peers.address(of: connection), configuration.upstream.contains(address) else { return }
        await registrar?.dialled(connection, upstream: address)
        let client = PeerClient(connection: connection, name: address.description)
        Task { [logger, access] in
            do { try await client.subscribePurges() } catch {
                logger.info("the upstream does not pass purges on to this edge", metadata: ["peer": "\(address)", "error": "\(error)"])
            }
            await GrantService.fetchRevocations(from: client, into: access, logger: logger)
        }
    }

    /// The bound address.
    public var address: PeerAddress {
        PeerAddress(host: endpoint.localAddress.ipAddress ?? configuration.listen.host, port: endpoint.localAddress.port ?? configuration.listen.port)
    }

    /// Peers probed: upstream, then the other known peers.
    public var probedPeers: [PeerAddress] {
        var seen = Set<PeerAddress>()
        return (configuration.upstream + (configuration.peers ?? [])).filter { seen.insert($0).inserted }
    }

    /// Serves incoming connections, probes peers and answers the admin endpoint until ``close()``.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.server.run(on: self.endpoint) }
            if let health {
                group.addTask { await health.run() }
                for peer in probedPeers { group.addTask { await health.watch(peer) } }
            }
            if let admin { group.addTask { await admin.run() } }
            group.addTask { await self.renewer.run() }
            group.addTask { await self.keepAccounts() }
            if let router {
                let server = self.server
                group.addTask {
                    await router.run(peers: self.peers, localLoad: { Double(ProbeLoad(activeTransfers: server.transfers.count).loadPermille) / 1000 })
                }
            }
        }
    }

    /// Stops probing, closes the admin endpoint, peer connections and the endpoint, and flushes the
    /// store (its metadata is committed as it goes; this checkpoints what is pending).
    public func close() async {
        await health?.stop()
        router?.stop()
        await renewer.stop()
        await admin?.close()
        await peers.closeAll()
        await endpoint.close()
        // Name subscribers, cached names and the edge registry waiting to be written.
        await names.flush()
        await edgeDirectory?.flush()
        stopping.set()
        logFinishedTransfers(all: true)
        audit?.tick(force: true)
        await saveCounters()
        // An empty commit syncs chunk files written since the last commit.
        do { try store.commit(CommitBatch()) } catch { logger.warning("could not flush the store", metadata: ["error": "\(error)"]) }
    }

    /// What keeps the node from serving, for `/healthz` (nil: nothing): its UDP socket is closed
    /// (a send error closed it and it could not be reopened, or the node is closing).
    public func healthProblem() async -> String? {
        let socket = await endpoint.socketHealth
        guard socket.isOpen else {
            return socket.failure ?? "the endpoint's UDP socket is closed; the node cannot serve (restart it)"
        }
        return nil
    }

    /// The node's status document (JSON): identity, connections, peers with health and RTT, store,
    /// cache, transfers, and the services' summaries.
    public func statusJSON() async -> String {
        let connections = await endpoint.connectionCount
        var doc: [String: Any] = [
            "name": configuration.name,
            "roles": configuration.roles,
            "listen": "[\(endpoint.localAddress.ipAddress ?? "")]:\(endpoint.localAddress.port ?? 0)",
            "region": configuration.region ?? "",
            "uptime_seconds": (ContinuousClock.now - started).seconds,
            "connections": connections,
            "upstream": configuration.upstream.map(\.description),
            "id": nodeID.short,
        ]
        if let admin { doc["admin"] = admin.address.description }
        if let health {
            doc["peers"] = await health.snapshot().map { p -> [String: Any] in
                var entry: [String: Any] = [
                    "address": p.peer.description, "state": p.isUp ? "up" : "down", "probes": p.probesSent,
                    "answered": p.answered, "timeouts": p.timeouts, "consecutive_failures": p.consecutiveFailures,
                ]
                if let rtt = p.smoothedRTT { entry["rtt_ms"] = (rtt.seconds * 1e5).rounded() / 100 }
                if let identity = peerNames.identity(atAddress: p.peer.description) {
                    entry["name"] = identity.label
                    entry["node_id"] = identity.nodeID.short
                }
                return entry
            }
        }
        if let router { doc["routing"] = namedRouting(router.status()) }
        doc["certificate"] = await renewer.statusDocument()
        if let stats = try? store.stats() {
            doc["store"] = ["chunks": stats.chunks, "bytes": stats.bytes, "pins": stats.pins]
        }
        let served = server.served
        doc["served"] = ["requests": served.requests, "bytes": served.bytes]
        if let gate = server.readGate {
            let held = gate.allowances.stats
            doc["private_reads"] = ["connections": held.connections, "chunk_ids": held.ids,
                                    "per_connection_bound": gate.allowances.perConnection, "node_bound": gate.allowances.total]
        }
        let now = ContinuousClock.now
        // Chunk responses being sent now, and the transfers (per peer and content) they belong to.
        doc["responses"] = server.transfers.snapshot.map { t -> [String: Any] in
            ["chunk": t.chunk, "peer": t.peer, "bytes": t.bytes, "sent": t.sent, "class": t.priority,
             "seconds": ((now - t.started).seconds * 1000).rounded() / 1000]
        }
        doc["transfers"] = transfersStatus()
        if tracker.count > Self.listedTransfers { doc["transfers_not_listed"] = tracker.count - Self.listedTransfers }
        doc["totals"] = await totalsStatus()
        if let audit { doc["audit"] = audit.status() }
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
        for service in services {
            if let summary = await service.status() { doc[service.name] = summary }
        }
        let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Fetches `root` into the node's store from `addresses` (and pins it), with the node's health
    /// probing watching every source: a source that stops answering probes loses its requests to
    /// the others at once, whatever the swarm's own stall timers say. Needs ``run()`` going.
    /// - Parameters:
    ///   - configuration: scheduler settings.
    ///   - onProgress: called as chunks arrive.
    ///   - onEvent: human-readable notes (skipped peers, bans, failovers, health changes).
    public func fetch(
        _ root: ContentID, from addresses: [PeerAddress], configuration swarm: SwarmConfiguration = .init(),
        onProgress: (@Sendable (SwarmProgress) -> Void)? = nil, onEvent: (@Sendable (String) -> Void)? = nil
    ) async throws -> FetchReport {
        let report = try await ContentFetcher.fetch(
            root, from: addresses, peers: peers, health: health, store: store, configuration: swarm, logger: logger,
            onProgress: onProgress, onEvent: onEvent, router: router)
        // Library fetches are in the audit trail like the transfers the node serves (issue 15 item 7).
        audit?.record(fetch: report)
        // One info line per completed fetch (not one per chunk).
        logger.info("fetched content", metadata: [
            "content": "\(root)", "bytes": "\(report.fetchedBytes)", "chunks": "\(report.chunks)",
            "seconds": "\(String(format: "%.3f", report.seconds))",
            "rate_bytes_per_second": "\(report.seconds > 0 ? Int((Double(report.fetchedBytes) / report.seconds).rounded()) : report.fetchedBytes)",
            "peers": "\(report.sources.filter { $0.chunks > 0 }.map(\.name).joined(separator: ", "))",
        ])
        return report
    }

    /// Brings the gauges that mirror other components (store, cache) up to date and renders every
    /// metric in the Prometheus text format.
    public func scrape() async -> String {
        if let edge {
            let c = await edge.counters
            metrics.syncCache(hits: savedCounters.cacheHits + c.hits, misses: savedCounters.cacheMisses + c.misses)
        }
        if let stats = try? store.stats() {
            metrics.storeChunks.set(stats.chunks)
            metrics.storeBytes.set(stats.bytes)
        }
        return metrics.render()
    }
}

/// Runs a ``Node`` under swift-service-lifecycle: `run()` serves until the service group begins a
/// graceful shutdown (SIGTERM/SIGINT in `stoq node`), then closes connections, stops probing and
/// flushes the store before returning.
public struct NodeLifecycleService: Service, CustomStringConvertible {
    /// The node.
    public let node: Node

    /// Wraps a started node.
    public init(node: Node) { self.node = node }

    public var description: String { "stoq node \(node.configuration.name)" }

    public func run() async throws {
        let node = self.node
        await withGracefulShutdownHandler {
            await node.run()
        } onGracefulShutdown: {
            Task { await node.close() }
        }
        // `run()` also returns when the endpoint closes for another reason: close the rest too.
        await node.close()
    }
}
