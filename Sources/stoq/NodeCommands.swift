import ArgumentParser
import Foundation
import Logging
import STOQ
import STOQHTTP
import STOQNode
import HyperMesh
import ServiceLifecycle

/// `stoq node`: run a STOQ node (origin, edge or client) until SIGINT/SIGTERM.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run a STOQ node: serve chunks from its store (origin) or cache them from upstream (edge)."
    )
    @Option(help: "JSON node configuration (see README). Flags override it.") var config: String?
    @Option(help: "Node name.") var name: String?
    @Option(help: "Listen address, e.g. '[::1]:4433'.") var listen: String?
    @Option(help: "Node certificate (PEM).") var cert: String?
    @Option(help: "Node private key (PEM).") var key: String?
    @Option(help: "Network CA certificate (PEM).") var ca: String?
    @Option(help: "Store directory (default: $STOQ_STORE, else ~/.stoq/NAME).") var store: String?
    @Option(help: "Role: origin, edge, client, relay (carries peers' streams to a next hop), storage (HyperMesh shards) or issuer (renews certificates; needs --ca-dir); repeatable.") var role: [String] = []
    @Option(help: "Upstream peer an edge fetches misses from (repeatable).") var upstream: [String] = []
    @Option(help: "Region name.") var region: String?
    @Option(help: "Per-connection send limit, bytes/s.") var rateLimit: UInt64?
    @Option(help: "The most chunk bytes an edge keeps, a positive number (default 1 GiB; W-TinyLFU decides what stays).") var cacheBytes: Int?
    @Option(help: "Another known peer whose health to probe (repeatable; upstream peers are probed anyway).") var peer: [String] = []
    @Option(help: "Admin HTTP endpoint (/metrics, /status, /healthz): a port (bound to [::1]) or '[IPV6]:PORT' (IPv6 only; '[::]' serves no IPv4). Keep it on loopback.") var admin: String?
    @Flag(help: "Run the Nexus DHT: answer DHT requests, publish the node record and provider records for pinned content.") var dht = false
    @Option(help: "DHT bootstrap nodes, comma-separated, e.g. '[::1]:4433,[::1]:4434' (implies --dht).") var bootstrap: String?
    @Option(help: "CT log directory: refuse peers whose certificate is not in it (checked with an inclusion proof).") var requireCt: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?
    @Option(help: "Log format on stderr: text (default) or json (one object per line; config key logFormat).") var logFormat: String?
    @Option(help: "Health probe interval in ms (default 1000).") var healthInterval: Int?
    @Option(help: "Health probe timeout in ms (default 100).") var healthTimeout: Int?
    @Option(help: "Unanswered probes in a row that mark a peer down (default 3).") var healthFailures: Int?
    @Option(help: "Serve throttle: node-wide upload limit in bytes/s (interactive before bulk, fair turns).") var serveRate: UInt64?
    @Option(help: "Serve throttle: per-connection upload limit in bytes/s.") var connectionServeRate: UInt64?
    @Option(help: "Routing gossip interval in ms (default 2000).") var gossipInterval: Int?
    @Flag(help: "Run without the routing matrix (no gossip; fetch sources in the order given).") var noRouting = false
    @Option(help: "HyperMesh shard directory; implies the storage role (default with --role storage: STORE/shards).") var shards: String?
    @Option(help: "Most connections held at once, accepted and dialled (default 1024); more are refused with a reason.") var maxConnections: Int?
    @Option(help: "Most connections accepted from one IPv6 address (default 64).") var maxConnectionsPerAddress: Int?
    @Option(help: "A request stream whose request is incomplete after this many ms is reset (default 10000).") var requestTimeoutMs: Int?
    @Option(help: "The node's location, LAT,LON in degrees (e.g. '48.85,2.35'): routing's geographic factor and the edge registry's nearness (config key location). The region comes from --region or the certificate.") var location: String?
    @Flag(help: "Accept anonymous readers (clients without a certificate, e.g. `stoq get TICKET`): they may PING, WANT, GET_CHUNK, NAME_RESOLVE and ask for public read keys, nothing else.") var publicRead = false
    @Option(help: "A node id (64 hex characters, from `stoq certs show`) allowed to upload content into this origin with `stoq put --node` (repeatable; config key publishers).") var publisher: [String] = []
    @OptionGroup var httpOptions: HTTPOptions
    @OptionGroup var renewal: RenewalOptions

    func run() async throws {
        var c: NodeConfiguration
        if let config {
            c = try NodeConfiguration.load(path: config)
        } else {
            guard let cert, let key, let ca else { throw ValidationError("give --config FILE, or --cert, --key and --ca") }
            c = NodeConfiguration(
                name: name ?? "node", listen: PeerAddress("[::1]:4433")!, certificate: cert, key: key, ca: ca,
                store: store ?? StoreOptions.defaultDirectory(name: name ?? "node"), roles: ["origin"]
            )
        }
        if let name { c.name = name }
        if let listen {
            guard let address = PeerAddress(listen) else { throw ValidationError("--listen takes an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)") }
            c.listen = address
        }
        if let cert { c.certificate = cert }
        if let key { c.key = key }
        if let ca { c.ca = ca }
        if let store { c.store = store }
        if !role.isEmpty { c.roles = role }
        if let region { c.region = region }
        if let rateLimit { c.rateLimitBytesPerSecond = rateLimit }
        if let cacheBytes { c.cacheBytes = cacheBytes }
        if !upstream.isEmpty {
            c.upstream = try upstream.map { text in
                guard let a = PeerAddress(text) else { throw ValidationError("upstream '\(text)' is not an IPv6 address like '[::1]:4433'") }
                return a
            }
        }
        if !peer.isEmpty {
            c.peers = try peer.map { text in
                guard let a = PeerAddress(text) else { throw ValidationError("peer '\(text)' is not an IPv6 address like '[::1]:4433'") }
                return a
            }
        }
        if let admin {
            // A bare port binds loopback: the endpoint is unauthenticated.
            guard let a = Int(admin).map({ PeerAddress(host: "::1", port: $0) }) ?? PeerAddress(admin) else {
                throw ValidationError("--admin takes a port (bound to [::1]) or an IPv6 address like '[::1]:9464' (STOQ is IPv6-only)")
            }
            c.admin = a
        }
        if let logLevel { c.logLevel = logLevel }
        if let logFormat { c.logFormat = logFormat }
        if !publisher.isEmpty { c.publishers = publisher }
        if let maxConnections { c.maxConnections = maxConnections }
        if let maxConnectionsPerAddress { c.maxConnectionsPerAddress = maxConnectionsPerAddress }
        if publicRead { c.publicRead = true }
        if let requestTimeoutMs {
            var l = c.limits ?? PeerLimits()
            l.requestTimeoutMilliseconds = requestTimeoutMs
            c.limits = l
        }
        if healthInterval != nil || healthTimeout != nil || healthFailures != nil {
            var h = c.health ?? HealthSettings()
            if let healthInterval { h.intervalMilliseconds = healthInterval }
            if let healthTimeout { h.timeoutMilliseconds = healthTimeout }
            if let healthFailures { h.failureThreshold = healthFailures }
            c.health = h
        }
        if serveRate != nil || connectionServeRate != nil {
            var t = c.throttle ?? ServeThrottleSettings()
            if let serveRate { t.totalBytesPerSecond = serveRate }
            if let connectionServeRate { t.connectionBytesPerSecond = connectionServeRate }
            c.throttle = t
        }
        if gossipInterval != nil || noRouting {
            var r = c.routing ?? RoutingSettings()
            if let gossipInterval { r.gossipIntervalMilliseconds = gossipInterval }
            if noRouting { r.enabled = false }
            c.routing = r
        }
        if let location { c.location = location }
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
        if shards != nil || c.roles.contains("storage") {
            if !c.roles.contains("storage") { c.roles.append("storage") }
            let directory = shards ?? (c.store as NSString).appendingPathComponent("shards")
            let region = c.region ?? (try? NodeCredentials.load(certificatePath: c.certificate, keyPath: c.key))?.region ?? "default"
            services.append(try StorageService.load(directory: directory, keyPath: c.key, region: region))
        }
        if dht || bootstrap != nil || requireCt != nil {
            // A storage node announces itself in the DHT so `stoq block put --dht` finds it.
            let serviceKeys = c.roles.contains("storage") ? [StorageDiscovery.providerKey] : []
            try await runNexusNode(c, bootstrap: bootstrap, requireCT: requireCt, services: services, serviceKeys: serviceKeys, metrics: metrics, logger: logger, http: httpOptions)
            return
        }
        let node = try await Node.start(c, services: services, metrics: metrics, logger: logger)
        let hup = reloadOnSIGHUP(node)
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
    @Option(help: "Client certificate (PEM).") var cert: String
    @Option(help: "Client private key (PEM).") var key: String
    @Option(help: "Network CA certificate (PEM).") var ca: String
    @Flag(help: "Print the raw JSON status document.") var json = false

    func run() async throws {
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
        let tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        do {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            let client = PeerClient(connection: connection, name: address.description)
            let rtt = try await client.ping()
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
