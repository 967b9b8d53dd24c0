import ArgumentParser
import Foundation
import Logging
import STOQ
import STOQHTTP
import STOQNode
import HyperMesh
import Nexus
import ServiceLifecycle

/// `stoq node`: run a STOQ node (origin, edge or client) until SIGINT/SIGTERM.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run a STOQ node: serve chunks from its store (origin) or cache them from upstream (edge)."
    )
    @Argument(help: "The node's name, the same as --name (picks the default certificate ~/.stoq/certs/NAME.pem and store ~/.stoq/NAME).") var nodeName: String?
    @Option(help: "JSON node configuration whose keys are these flags in camelCase (docs/CONFIG.md); relative paths in it are relative to the file. Flags override it.") var config: String?
    @Flag(help: "Print the effective configuration (file, flags and defaults) as JSON on stdout, itself a valid --config file, and exit without starting the node.") var printConfig = false
    @Option(help: "Node name (default: node).") var name: String?
    @Option(help: "Listen address (default '[::1]:4433').") var listen: String?
    @Option(help: "Node certificate (PEM; default ~/.stoq/certs/NAME.pem, as `stoq init NAME` writes it).") var cert: String?
    @Option(help: "Node private key (PEM; default ~/.stoq/certs/NAME.key).") var key: String?
    @Option(help: "Network CA certificate (PEM; default ~/.stoq/certs/ca.pem).") var ca: String?
    @Option(help: "Store directory (default: $STOQ_STORE, else ~/.stoq/NAME).") var store: String?
    @Option(help: "How new chunks are kept: packs or files (default: $STOQ_STORE_FORMAT, else the store's own layout, else packs for a new store).") var storeFormat: String?
    @Option(help: "Role: origin (the default), edge, client, relay (carries peers' streams to a next hop), storage (HyperMesh shards) or issuer (renews certificates; needs --ca-dir); repeatable.") var role: [String] = []
    @Option(help: "Nodes an edge fetches misses from, ADDR[,ADDR...] (repeatable; origin first).") var peers: [String] = []
    @Option(name: .customLong("upstream"), help: .hidden) var upstream: [String] = []
    @Option(help: "Region name (default: the certificate's region).") var region: String?
    @Option(help: "Per-connection send limit, bytes/s.") var rateLimit: UInt64?
    @Option(help: "The most chunk bytes an edge keeps, a positive number (default 1 GiB; W-TinyLFU decides what stays).") var cacheBytes: Int?
    @Option(help: "Another node whose health to probe, ADDR[,ADDR...] (repeatable; --peers are probed anyway).") var watch: [String] = []
    @Option(name: .customLong("peer"), help: .hidden) var peer: [String] = []
    @Option(help: "Admin HTTP endpoint (/metrics, /status, /healthz): a port (bound to [::1]) or '[IPV6]:PORT' (IPv6 only; '[::]' serves no IPv4). Keep it on loopback.") var admin: String?
    @Flag(help: "Run the Nexus DHT: answer DHT requests, publish the node record and provider records for pinned content.") var dht = false
    @Option(help: "DHT bootstrap nodes, comma-separated, e.g. '[::1]:4433,[::1]:4434' (implies --dht).") var bootstrap: String?
    @Option(help: "CT log directory: refuse peers whose certificate is not in it (checked with an inclusion proof; implies --dht).") var requireCt: String?
    @Option(help: "Enrolment table (from `stoq certs issue --enrol TABLE`): refuse peers that cannot prove the enrolment secret issued with their certificate, the second factor besides --require-ct (implies --dht).") var requireEnrolment: String?
    @Option(help: "This node's enrolment secret (NAME.enrol, from `stoq certs issue --enrol`): the proof nodes run with --require-enrolment ask for.") var enrolmentSecret: String?
    @Option(help: "Log level: trace, debug, info (default), notice, warning, error, critical.") var logLevel: String?
    @Option(help: "Log format on stderr: text (default) or json (one object per line).") var logFormat: String?
    @Option(help: "Health probe interval in ms (default 1000).") var probeInterval: Int?
    @Option(help: "Health probe timeout in ms (default 100).") var probeTimeout: Int?
    @Option(help: "Unanswered probes in a row that mark a peer down (default 3).") var probeFailures: Int?
    @Option(name: .customLong("health-interval"), help: .hidden) var healthInterval: Int?
    @Option(name: .customLong("health-timeout"), help: .hidden) var healthTimeout: Int?
    @Option(name: .customLong("health-failures"), help: .hidden) var healthFailures: Int?
    @Option(help: "Serve throttle: node-wide upload limit in bytes/s (interactive before bulk, fair turns).") var serveRate: UInt64?
    @Option(help: "Serve throttle: per-connection upload limit in bytes/s.") var connectionServeRate: UInt64?
    @Option(help: "Routing gossip interval in ms (default 2000).") var gossipInterval: Int?
    @Flag(help: "Run without the routing matrix (no gossip; fetch sources in the order given).") var noRouting = false
    @Option(help: "HyperMesh shard directory; implies the storage role (default with --role storage: STORE/shards).") var shards: String?
    @Option(help: "Most connections held at once, accepted and dialled (default 1024); more are refused with a reason.") var maxConnections: Int?
    @Option(help: "Most connections accepted from one IPv6 address (default 64).") var maxConnectionsPerAddress: Int?
    @Option(help: "UDP sockets on the listen address (SO_REUSEPORT), one event loop each, so many connections use N cores (1-64, default 1).") var eventLoops: Int?
    @Option(help: "A request stream whose request is incomplete after this many ms is reset (default 10000).") var requestTimeoutMs: Int?
    @Option(help: "The node's location, LAT,LON in degrees (e.g. '48.85,2.35'): routing's geographic factor and the edge registry's nearness. The region comes from --region or the certificate.") var location: String?
    @Flag(help: "Accept anonymous readers (clients without a certificate, e.g. `stoq get TICKET`): they may PING, WANT, GET_CHUNK, NAME_RESOLVE and ask for public read keys, nothing else.") var publicRead = false
    @Option(help: "Who may upload content into this origin with `stoq put --node`: a node id (64 hex characters, from `stoq certs show`), a certificate file, or the name of a certificate `stoq init` made, e.g. client (repeatable).") var publisher: [String] = []
    @Option(name: .customLong("operator"), help: "Who operates this node: may read its STATUS, purge, and issue access grants for status, purge and relay (`stoq grant create`); a node id, a certificate file, or a name `stoq init` made (repeatable). Default: the client certificate beside the CA file (CA_DIR/client.pem, which stoq init makes), else none: only the node itself reads STATUS and purges.") var operators: [String] = []
    @Option(name: .customLong("relay-for"), help: "With --role relay: a node this relay carries streams for, besides its operators and publishers (node id, certificate file or stoq init name; repeatable). Others need a grant with the relay right.") var relayFor: [String] = []
    @Flag(help: "With --role relay: carry streams for every certificate of the network, no grant needed.") var relayOpen = false
    @Flag(help: "Enforce the read right: serve manifests and chunks of content that is not public (stoq put --public) only to this node, its operators, publishers, --private-reader ids and connections that presented a read grant covering the content (ERROR 7 otherwise).") var privateReads = false
    @Option(name: .customLong("private-reader"), help: "With --private-reads: a node that reads every content here, e.g. an edge fetching for its readers (node id, certificate file or stoq init name; repeatable).") var privateReader: [String] = []
    @OptionGroup var httpOptions: HTTPOptions
    @OptionGroup var renewal: RenewalOptions
    @OptionGroup var auditOptions: AuditOptions

    /// A config file or flag refused: one line on stderr, exit code 2 (a usage error).
    static func refuse(_ message: String) -> ExitCode {
        Console.shared.error(message)
        return ExitCode(2)
    }

    /// The configuration keys the flags set (they override the file's).
    func flagValues() throws -> [String: ConfigValue] {
        var v = [String: ConfigValue]()
        let cwd = FileManager.default.currentDirectoryPath
        func path(_ p: String) -> ConfigValue { .string(NodeConfigurationFile.absolute(p, relativeTo: cwd)) }
        func addresses(_ flag: String, _ texts: [String]) throws -> ConfigValue {
            let list = texts.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
            for text in list where PeerAddress(text) == nil {
                throw ValidationError("--\(flag): '\(text)' is not an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)")
            }
            return .list(list)
        }
        if nodeName != nil && name != nil && nodeName != name { throw ValidationError("the node is named twice ('\(nodeName!)' and --name '\(name!)'); give one") }
        if let n = name ?? nodeName { v["name"] = .string(n) }
        if let listen {
            guard PeerAddress(listen) != nil else { throw ValidationError("--listen takes an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)") }
            v["listen"] = .string(listen)
        }
        if let cert { v["cert"] = path(cert) }
        if let key { v["key"] = path(key) }
        if let ca { v["ca"] = path(ca) }
        if let store { v["store"] = path(store) }
        if let storeFormat { v["storeFormat"] = .string(storeFormat) }
        if !role.isEmpty {
            let roles = role.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            if let bad = roles.first(where: { !NodeConfigurationFile.roles.contains($0) }) {
                throw ValidationError("--role: '\(bad)' is not a role; use \(NodeConfigurationFile.roles.joined(separator: ", "))")
            }
            v["role"] = .list(roles)
        }
        if let region { v["region"] = .string(region) }
        if let location { v["location"] = .string(location) }
        if !(peers + upstream).isEmpty { v["peers"] = try addresses("peers", peers + upstream) }
        if !(watch + peer).isEmpty { v["watch"] = try addresses("watch", watch + peer) }
        if let admin {
            // A bare port binds loopback: the endpoint is unauthenticated.
            if let port = Int(admin), (0...65535).contains(port) { v["admin"] = .integer(port) }
            else if PeerAddress(admin) != nil { v["admin"] = .string(admin) }
            else { throw ValidationError("--admin takes a port (bound to [::1]) or an IPv6 address like '[::1]:9464' (STOQ is IPv6-only)") }
        }
        if let cacheBytes { v["cacheBytes"] = .integer(cacheBytes) }
        if let rateLimit { v["rateLimit"] = .integer(Int(clamping: rateLimit)) }
        if let serveRate { v["serveRate"] = .integer(Int(clamping: serveRate)) }
        if let connectionServeRate { v["connectionServeRate"] = .integer(Int(clamping: connectionServeRate)) }
        if let p = probeInterval ?? healthInterval { v["probeInterval"] = .integer(p) }
        if let p = probeTimeout ?? healthTimeout { v["probeTimeout"] = .integer(p) }
        if let p = probeFailures ?? healthFailures { v["probeFailures"] = .integer(p) }
        if let gossipInterval { v["gossipInterval"] = .integer(gossipInterval) }
        if noRouting { v["noRouting"] = .bool(true) }
        if let maxConnections { v["maxConnections"] = .integer(maxConnections) }
        if let maxConnectionsPerAddress { v["maxConnectionsPerAddress"] = .integer(maxConnectionsPerAddress) }
        if let eventLoops { v["eventLoops"] = .integer(eventLoops) }
        if let requestTimeoutMs { v["requestTimeoutMs"] = .integer(requestTimeoutMs) }
        if let logLevel { v["logLevel"] = .string(logLevel) }
        if let logFormat { v["logFormat"] = .string(logFormat) }
        if dht { v["dht"] = .bool(true) }
        if let bootstrap { v["bootstrap"] = try addresses("bootstrap", [bootstrap]) }
        if let requireCt { v["requireCt"] = path(requireCt) }
        if let requireEnrolment { v["requireEnrolment"] = path(requireEnrolment) }
        if let enrolmentSecret { v["enrolmentSecret"] = path(enrolmentSecret) }
        if let shards { v["shards"] = path(shards) }
        if publicRead { v["publicRead"] = .bool(true) }
        if !publisher.isEmpty { v["publisher"] = .list(publisher) }
        if !operators.isEmpty { v["operator"] = .list(operators) }
        if !relayFor.isEmpty { v["relayFor"] = .list(relayFor) }
        if relayOpen { v["relayOpen"] = .bool(true) }
        if privateReads { v["privateReads"] = .bool(true) }
        if !privateReader.isEmpty { v["privateReader"] = .list(privateReader) }
        if let issuer = renewal.issuer {
            guard PeerAddress(issuer) != nil else { throw ValidationError("--issuer takes an IPv6 address like '[::1]:4400' (STOQ is IPv6-only)") }
            v["issuer"] = .string(issuer)
        }
        if let caDir = renewal.caDir { v["caDir"] = path(caDir) }
        if let caKey = renewal.caKey { v["caKey"] = path(caKey) }
        if let maxLifetime = renewal.maxLifetime { v["maxLifetime"] = .string(maxLifetime) }
        if let ctLog = renewal.ctLog { v["ctLog"] = path(ctLog) }
        if let http = httpOptions.http { v["http"] = .string(http) }
        if let httpCert = httpOptions.httpCert { v["httpCert"] = path(httpCert) }
        if let httpKey = httpOptions.httpKey { v["httpKey"] = path(httpKey) }
        if let accessLog = httpOptions.accessLog { v["accessLog"] = accessLog == "-" ? .string("-") : path(accessLog) }
        if let accessLogFormat = httpOptions.accessLogFormat { v["accessLogFormat"] = .string(accessLogFormat) }
        if let publisherKey = httpOptions.publisherKey { v["publisherKey"] = path(publisherKey) }
        v.merge(auditOptions.values()) { _, flag in flag }
        return v
    }

    /// The `client` certificate beside the CA file (`stoq init` writes both): the default operator.
    static func defaultOperator(ca: String) -> (path: String, id: String)? {
        let path = ((ca as NSString).deletingLastPathComponent as NSString).appendingPathComponent("client.pem")
        guard FileManager.default.fileExists(atPath: path), let id = try? PublisherReference.resolve(path, flag: "--operator") else { return nil }
        return (path, id)
    }

    func run() async throws {
        // File, then flags over it, then defaults for what neither sets (docs/CONFIG.md).
        var values = [String: ConfigValue]()
        if let config {
            do {
                let file = try NodeConfigurationFile.read(path: config)
                values = file.values
                for warning in file.warnings { Console.shared.note(warning) }
            } catch {
                throw Self.refuse(error.reason)
            }
        }
        values.merge(try flagValues()) { _, flag in flag }
        if printConfig {
            Console.shared.result(NodeConfigurationFile.render(values))
            return
        }
        var c: NodeConfiguration
        do { c = try NodeConfigurationFile.configuration(values) } catch { throw Self.refuse(error.reason) }
        // Below the file and the flag: the environment the store commands read too.
        if c.storeFormat == nil, let e = ProcessInfo.processInfo.environment["STOQ_STORE_FORMAT"], !e.isEmpty { c.storeFormat = e }
        // A publisher may be named by node id, certificate file or a name `stoq init` made.
        do { c.publishers = try c.publishers.map { list in try list.map { try PublisherReference.resolve($0) } } } catch let e as CLIError { throw Self.refuse(e.description) } catch { throw Self.refuse("\(error)") }
        do { c.operators = try c.operators.map { list in try list.map { try PublisherReference.resolve($0, flag: "--operator") } } } catch let e as CLIError { throw Self.refuse(e.description) } catch { throw Self.refuse("\(error)") }
        do { c.relayFor = try c.relayFor.map { list in try list.map { try PublisherReference.resolve($0, flag: "--relay-for") } } } catch let e as CLIError { throw Self.refuse(e.description) } catch { throw Self.refuse("\(error)") }
        do { c.privateReaders = try c.privateReaders.map { list in try list.map { try PublisherReference.resolve($0, flag: "--private-reader") } } } catch let e as CLIError { throw Self.refuse(e.description) } catch { throw Self.refuse("\(error)") }
        // Closed by default (docs/SECURITY.md): with no --operator, the person who made the network's
        // CA operates its nodes: the `client` certificate `stoq init` wrote beside the CA file.
        if (c.operators ?? []).isEmpty, let own = Self.defaultOperator(ca: c.ca) {
            c.operators = [own.id]
            Console.shared.note("operator: \(own.path) (node \(own.id.prefix(16))…), the client certificate beside the CA; give --operator to choose")
        }
        let httpOptions: HTTPOptions
        do { httpOptions = try self.httpOptions.merged(with: c) } catch let e as ValidationError { throw Self.refuse(e.message) }
        if !FileManager.default.fileExists(atPath: c.certificate) {
            let given = values["cert"] != nil
            throw Self.refuse(given
                ? "no certificate at \(c.certificate); check --cert (or the config key cert)"
                : "no certificate at \(c.certificate) (the default for a node named '\(c.name)'); run `stoq init \(c.name)` first, or give --cert, --key and --ca (or --config FILE)")
        }
        do { c = try c.withPlacement() } catch let error as NodeError { throw ValidationError(error.reason) }
        try renewal.apply(to: &c)
        let level = try Self.logLevel(c.logLevel ?? "info")
        // Before anything opens or listens (shards, DHT, endpoint): a bad cache size, admin
        // address or certificate stops here with a message. `Node.start` checks again for library users.
        try await c.validate()
        try httpOptions.checkFiles(certificate: c.certificate, key: c.key)
        try LogFormat.parse(c.logFormat).bootstrap(level: level)
        let metrics = NodeMetrics()
        metrics.bootstrapMetricsSystem()
        let logger = Logger(label: "stoq.node")

        var services: [any NodeService] = try issuerServices(c, logger: logger)
        if c.shards != nil || c.roles.contains("storage") {
            if !c.roles.contains("storage") { c.roles.append("storage") }
            let directory = c.shards ?? (c.store as NSString).appendingPathComponent("shards")
            let region = c.region ?? (try? NodeCredentials.load(certificatePath: c.certificate, keyPath: c.key))?.region ?? "default"
            services.append(try StorageService.load(directory: directory, keyPath: c.key, region: region))
        }
        if let secretPath = c.enrolmentSecret {
            // The second factor: answer ENROL_CHALLENGE with this node's proof.
            let secret: [UInt8]
            do { secret = try Enrolment.loadSecret(path: secretPath) } catch { throw Self.refuse(ErrorReport.peopleText(error)) }
            let chain = try PEMFile.certificateDERs(in: PEMFile.read(c.certificate))
            guard let leaf = chain.first else { throw Self.refuse("\(c.certificate) holds no certificate") }
            services.append(EnrolmentService(secret: secret, nodeID: try NodeID(certificateDER: leaf).bytes))
        }
        let bootstrapList = (c.bootstrap ?? []).map(\.description).joined(separator: ",")
        if c.dht == true || !bootstrapList.isEmpty || c.requireCt != nil || c.requireEnrolment != nil {
            // A storage node announces itself in the DHT so `stoq block put --dht` finds it.
            let serviceKeys = c.roles.contains("storage") ? [StorageDiscovery.providerKey] : []
            try await runNexusNode(c, bootstrap: bootstrapList.isEmpty ? nil : bootstrapList, requireCT: c.requireCt, services: services, serviceKeys: serviceKeys, metrics: metrics, logger: logger, http: httpOptions)
            return
        }
        let node = try await Node.start(c, services: services, metrics: metrics, logger: logger)
        let hup = reloadOnSIGHUP(node)
        do { try AuditOptions.attach(node, configuration: c) } catch {
            await node.close()
            throw error
        }
        defer { hup.cancel() }
        let frontDoor: HTTPOptions.Running?
        do { frontDoor = try await httpOptions.start(node: node, configuration: c, logger: logger) } catch {
            await node.close()
            throw error
        }
        print("ready \(c.name) \(node.address) roles=\(c.roles.joined(separator: ","))" + (node.admin.map { " admin=\($0.address)" } ?? ""))
        fflush(nil)
        // swift-service-lifecycle: SIGTERM/SIGINT start a graceful shutdown (connections closed,
        // probing stopped, store flushed), a second signal is not needed.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: NodeLifecycleService(node: node))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        await frontDoor?.stop()
        if let edge = node.edge {
            let counters = await edge.counters
            print("cache \(c.name) hits=\(counters.hits) misses=\(counters.misses) upstream_bytes=\(counters.upstreamBytes)")
        }
        let served = node.server.served
        print("served \(c.name) requests=\(served.requests) bytes=\(served.bytes)")
        fflush(nil)
    }

    static func logLevel(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("unknown log level '\(text)'; use one of " + Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return level
    }
}


/// `stoq status`: ask a running node for its status over mutual TLS.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a node's peers, store, cache and transfers (asked over stoq/1 with mutual TLS)."
    )
    @Option(help: "The node, e.g. '[::1]:4433'.") var node: String = "[::1]:4433"
    @Option(help: "Client certificate (PEM).") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca
    @Flag(help: "Print the raw JSON status document.") var json = false
    @Option(help: "An access grant with the status right (its text or a file), when your certificate is not an operator's of the node.") var grant: String?

    func run() async throws {
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
        let tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        do {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            let client = PeerClient(connection: connection, name: address.description)
            let rtt = try await client.ping()
            try await GrantInput.present(grant, on: client)
            let document = try await client.status()
            if json {
                // stdout is the JSON document alone, so `stoq status --json | jq` works; the RTT
                // of the request goes to stderr.
                print(document)
                FileHandle.standardError.write(Data(String(format: "rtt %.2f ms\n", rtt.seconds * 1000).utf8))
            } else {
                print(StatusReport.render(json: document, rtt: rtt))
            }
            await connection.close()
            await endpoint.close()
        } catch {
            await endpoint.close()
            throw error
        }
    }
}

/// Renders a node's status document for people.
enum StatusReport {
    static func render(json: String, rtt: Duration) -> String {
        guard let doc = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return json }
        var lines = [String]()
        let roles = (doc["roles"] as? [String])?.joined(separator: ",") ?? "?"
        lines.append("node      \(doc["name"] ?? "?")\((doc["id"] as? String).map { " [\($0)]" } ?? "") (\(roles)) at \(doc["listen"] ?? "?"), region \((doc["region"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "-"), up \(Int((doc["uptime_seconds"] as? Double) ?? 0)) s")
        lines.append(String(format: "rtt       %.2f ms from here; %@ connection(s)", rtt.seconds * 1000, "\(doc["connections"] ?? 0)"))
        if let admin = doc["admin"] { lines.append("admin     http://\(admin)/metrics") }
        let peers = doc["peers"] as? [[String: Any]] ?? []
        lines.append("peers     \(peers.count)" + (peers.isEmpty ? " (none probed)" : ""))
        for p in peers {
            let rttText = (p["rtt_ms"] as? Double).map { String(format: "%.2f ms", $0) } ?? "-"
            let who = (p["name"] as? String).map { "\($0) at \(p["address"] ?? "?")" } ?? "\(p["address"] ?? "?")"
            lines.append("  \(who)  \(((p["state"] as? String) ?? "?").padding(toLength: 4, withPad: " ", startingAt: 0))  rtt \(rttText)  probes \(p["answered"] ?? 0)/\(p["probes"] ?? 0) answered, \(p["timeouts"] ?? 0) timeouts")
        }
        if let store = doc["store"] as? [String: Any] {
            lines.append("store     \(store["chunks"] ?? 0) chunks, \(store["bytes"] ?? 0) bytes, \(store["pins"] ?? 0) pins")
        }
        if let cache = doc["cache"] as? [String: Any] {
            let ratio = (cache["hit_ratio"] as? Double) ?? 0
            lines.append(String(format: "cache     %@ hits, %@ misses (%.0f %% hits), %@ of %@ bytes, %@ evictions", "\(cache["hits"] ?? 0)", "\(cache["misses"] ?? 0)", ratio * 100, "\(cache["bytes"] ?? 0)", "\(cache["capacity_bytes"] ?? 0)", "\(cache["evictions"] ?? 0)"))
        }
        if let served = doc["served"] as? [String: Any] {
            var line = "served    \(served["requests"] ?? 0) chunk requests, \(bytesText(served["bytes"])) since start"
            if let totals = doc["totals"] as? [String: Any] {
                line += "; \(totals["served_chunks"] ?? 0) chunks, \(bytesText(totals["served_bytes"])) in all"
            }
            lines.append(line)
        }
        if let totals = doc["totals"] as? [String: Any], doc["cache"] != nil || ((totals["uploads"] as? Int) ?? 0) > 0 {
            lines.append("totals    cache \(totals["cache_hits"] ?? 0) hits, \(totals["cache_misses"] ?? 0) misses, \(bytesText(totals["cache_upstream_bytes"])) from upstream; \(totals["uploads"] ?? 0) uploads, \(bytesText(totals["upload_bytes"])) (kept across restarts)")
        }
        let transfers = doc["transfers"] as? [[String: Any]] ?? []
        lines.append("transfers \(transfers.count) active")
        for t in transfers {
            let fetch = (t["direction"] as? String) == "fetch"
            let peers = (t["peers"] as? [String])?.joined(separator: ", ") ?? "\(t["peer"] ?? "?")"
            let rate = bytesText(t["rate_bytes_per_second"]) + "/s"
            lines.append("  \(fetch ? "fetch" : "serve") \(t["content"] ?? "?") \(fetch ? "from" : "to") \(peers)  \(bytesText(t["bytes"])) in \(t["chunks"] ?? 0) chunks  \(rate)  \(t["seconds"] ?? 0) s")
        }
        if let routing = doc["routing"] as? [String: Any] {
            let gossip = routing["gossip"] as? [String: Any] ?? [:]
            let nodes = routing["nodes"] as? [[String: Any]] ?? []
            lines.append("routing   \(routing["name"] ?? routing["id"] ?? "?"): \(routing["known_nodes"] ?? 0) nodes known; gossip \(gossip["sent"] ?? 0) sent, \(gossip["received"] ?? 0) received, \(gossip["rejected"] ?? 0) rejected")
            if let signed = routing["signed"] as? [String: Any] {
                lines.append("  signed adverts: \(signed["adverts_signed"] ?? 0) signed here; \(signed["signature_checks"] ?? 0) signatures checked, \(signed["bad_signatures"] ?? 0) refused; \(signed["chain_verifications"] ?? 0) certificate chains verified, \(signed["certificates_cached"] ?? 0) cached")
            }
            let width = max(18, nodes.map { "\($0["name"] ?? $0["id"] ?? "?")".count + 1 }.max() ?? 0)
            if !nodes.isEmpty { lines.append("  " + "node".padding(toLength: width, withPad: " ", startingAt: 0) + " hops  rtt        predicted  load  age     state") }
            for n in nodes {
                func ms(_ key: String) -> String { (n[key] as? Double).map { String(format: "%.2f ms", $0) } ?? "-" }
                lines.append("  " + [
                    "\(n["name"] ?? n["id"] ?? "?")".padding(toLength: width, withPad: " ", startingAt: 0),
                    "\(n["hops"] ?? "?")".padding(toLength: 5, withPad: " ", startingAt: 0),
                    ms("rtt_ms").padding(toLength: 10, withPad: " ", startingAt: 0),
                    ms("predicted_rtt_ms").padding(toLength: 10, withPad: " ", startingAt: 0),
                    String(format: "%.2f", (n["load"] as? Double) ?? 0).padding(toLength: 5, withPad: " ", startingAt: 0),
                    String(format: "%.1f s", (n["age_s"] as? Double) ?? 0).padding(toLength: 7, withPad: " ", startingAt: 0),
                    "\(n["state"] ?? "?")",
                ].joined(separator: " "))
            }
        }
        if let cert = doc["certificate"] as? [String: Any] {
            var line = "cert      \(cert["state"] ?? "?"), valid until \(cert["not_after"] ?? "?"), \(cert["renewals"] ?? 0) renewal(s), \(cert["renewal_failures"] ?? 0) failure(s), issuer \(cert["issuer"] ?? "none")"
            if let warning = cert["warning"] { line += "\n  warning: \(warning)" }
            lines.append(line)
        }
        let known: Set<String> = ["certificate", "name", "roles", "listen", "region", "uptime_seconds", "connections", "upstream", "admin", "peers", "store", "cache", "served", "transfers", "routing",
                                  "id", "responses", "totals"]
        for key in doc.keys.sorted() where !known.contains(key) {
            // A service's summary: `name  key value, key value` in key order (never a Swift dictionary dump).
            let name = key.count < 9 ? key.padding(toLength: 9, withPad: " ", startingAt: 0) : key
            lines.append("\(name) \(plain(doc[key]))")
        }
        return lines.joined(separator: "\n")
    }

    /// A status value for people: numbers and strings as they are, objects as `key value, …` in
    /// key order, lists comma-separated.
    static func plain(_ value: Any?) -> String {
        switch value {
        case let object as [String: Any]:
            return object.keys.sorted().map { "\($0) \(plain(object[$0]))" }.joined(separator: ", ")
        case let list as [Any]:
            return list.map { plain($0) }.joined(separator: ", ")
        case let number as NSNumber:
            return number.stringValue
        case let text as String:
            return text
        case nil, is NSNull:
            return "-"
        default:
            return "\(value!)"
        }
    }

    /// A byte count for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `2.00 GiB`.
    static func bytesText(_ value: Any?) -> String {
        let n = (value as? Double) ?? (value as? Int).map(Double.init) ?? 0
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = n, i = 0
        while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: v >= 100 ? "%.0f %@" : "%.1f %@", v, units[i])
    }
}
