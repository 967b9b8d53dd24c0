import ArgumentParser
import Foundation
import STOQ
import STOQNode
import HyperMesh

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
    @Option(help: "Store directory.") var store: String?
    @Option(help: "Role: origin, edge, client or storage (HyperMesh shards; repeatable).") var role: [String] = []
    @Option(help: "Upstream peer an edge fetches misses from (repeatable).") var upstream: [String] = []
    @Option(help: "Region name.") var region: String?
    @Option(help: "Per-connection send limit, bytes/s.") var rateLimit: UInt64?
    @Option(help: "The most chunk bytes an edge keeps (W-TinyLFU decides what stays).") var cacheBytes: Int?
    @Option(help: "HyperMesh shard directory; implies the storage role (default with --role storage: STORE/shards).") var shards: String?

    func run() async throws {
        var c: NodeConfiguration
        if let config {
            c = try NodeConfiguration.load(path: config)
        } else {
            guard let cert, let key, let ca else { throw ValidationError("give --config FILE, or --cert, --key and --ca") }
            c = NodeConfiguration(
                name: name ?? "node", listen: PeerAddress("[::1]:4433")!, certificate: cert, key: key, ca: ca,
                store: store ?? StoreOptions().directory, roles: ["origin"]
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
        var services: [any NodeService] = []
        if shards != nil || c.roles.contains("storage") {
            if !c.roles.contains("storage") { c.roles.append("storage") }
            let directory = shards ?? (c.store as NSString).appendingPathComponent("shards")
            let region = c.region ?? (try? NodeCredentials.load(certificatePath: c.certificate, keyPath: c.key))?.region ?? "default"
            services.append(try StorageService.load(directory: directory, keyPath: c.key, region: region))
        }
        let node = try await Node.start(c, services: services)
        print("ready \(c.name) \(node.address) roles=\(c.roles.joined(separator: ","))")
        fflush(nil)
        async let serving: Void = node.run()
        await runUntilSignalled { await node.close() }
        await serving
        if let edge = node.edge {
            let counters = await edge.counters
            print("cache \(c.name) hits=\(counters.hits) misses=\(counters.misses) upstream_bytes=\(counters.upstreamBytes)")
        }
        let served = node.server.served
        print("served \(c.name) requests=\(served.requests) bytes=\(served.bytes)")
        fflush(nil)
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

    func run() async throws {
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
        let tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        do {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            let client = PeerClient(connection: connection, name: address.description)
            let rtt = try await client.ping()
            print(try await client.status())
            print(String(format: "rtt %.2f ms", rtt.seconds * 1000))
            await connection.close()
            await endpoint.close()
        } catch {
            await endpoint.close()
            throw error
        }
    }
}
