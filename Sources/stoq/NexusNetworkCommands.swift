import ArgumentParser
import Crypto
import Foundation
import Nexus
import STOQ
import STOQNode
import Logging
import ServiceLifecycle
import NexusBenchmarks

// MARK: - stoq node --dht / --bootstrap / --require-ct

/// Parses `[::1]:4433,[::1]:4434`.
func parsePeerList(_ text: String, option: String) throws -> [PeerAddress] {
    try text.split(separator: ",").map { part in
        guard let a = PeerAddress(String(part).trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(option): '\(part)' is not an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)")
        }
        return a
    }
}

/// Runs `stoq node` with Nexus: DHT service, join, publication, CT admission.
func runNexusNode(_ c: NodeConfiguration, bootstrap: String?, requireCT: String?, services: [any NodeService] = [], serviceKeys: [NexusID] = [], metrics: NodeMetrics, logger: Logger, http: HTTPOptions? = nil) async throws {
    let seeds = try bootstrap.map { try parsePeerList($0, option: "--bootstrap") } ?? []
    let admission = try requireCT.map { try CTAdmission.open(directory: $0) }
    let enrolment = try c.requireEnrolment.map { try EnrolmentTable(path: $0) }
    let nexus = try await NexusNode.start(c, admission: admission, services: services, serviceKeys: serviceKeys, metrics: metrics, logger: logger, enrolment: enrolment)
    // Signed audit heads go to the CT log with --audit-ct-log (AuditCommands.swift).
    try AuditOptions.attach(nexus.node, configuration: c)
    let frontDoor = try await http?.start(node: nexus.node, configuration: c, logger: logger)
    let hup = reloadOnSIGHUP(nexus.node)
    defer { hup.cancel() }
    print("ready \(c.name) \(nexus.address) roles=\(c.roles.joined(separator: ",")) node_id=\(nexus.record.id)\(admission.map { " require_ct=\($0.log.logID.shortHex)" } ?? "")\(enrolment == nil ? "" : " require_enrolment=yes")")
    fflush(nil)
    do {
        let t0 = ContinuousClock.now
        let contacts = try await nexus.join(seeds)
        let publication = try await nexus.publish()
        print(String(format: "dht %@ joined contacts=%d in %.1f ms; node record on %d nodes; %d content ids provided",
                     c.name, contacts, (ContinuousClock.now - t0).seconds * 1000, publication.nodeRecordStoredOn ?? 0, publication.provided.count)
              + publication.servicesProvided.map { String(format: "; service key %@ on %d nodes", $0.key.shortHex, $0.storedOn) }.joined())
    } catch {
        print("dht \(c.name) could not join: \(ErrorReport.peopleText(error))")
    }
    fflush(nil)
    // A node that joined an empty or young network publishes again as peers arrive (the DHT's own
    // republish timer takes over after that).
    let republish = Task {
        var stored = 0
        for delay in [5, 15, 30, 60] {
            try await Task.sleep(for: .seconds(delay))
            let contacts = await nexus.dht.contactCount
            if contacts > stored, let now = try? await nexus.publish().nodeRecordStoredOn { stored = now }
            if stored >= 3 { break }
        }
    }
    defer { republish.cancel() }
    // swift-service-lifecycle, as plain `stoq node`: SIGTERM/SIGINT shut down gracefully.
    try await ServiceGroup(configuration: .init(
        services: [.init(service: NexusLifecycleService(nexus: nexus))], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger
    )).run()
    await frontDoor?.stop()
    let served = nexus.node.server.served
    print("served \(c.name) requests=\(served.requests) bytes=\(served.bytes) \(dhtCountersText(await nexus.dht.counters))")
    fflush(nil)
}

/// Runs a ``NexusNode`` under swift-service-lifecycle.
struct NexusLifecycleService: Service {
    let nexus: NexusNode
    func run() async throws {
        let nexus = self.nexus
        await withGracefulShutdownHandler {
            await nexus.run()
        } onGracefulShutdown: {
            Task { await nexus.close() }
        }
        await nexus.close()
    }
}

/// `stoq certs issue --ct-log DIR`: appends the certificate just written and prints its receipt.
func logIssuedCertificate(_ certificatePath: String, log directory: String) throws -> String {
    let log = try TransparencyLog.open(directory: directory, create: true)
    guard let der = try PEMFile.certificateDERs(in: PEMFile.read(certificatePath)).first else {
        throw CLIError("\(certificatePath) holds no certificate")
    }
    let receipt = try log.append(der, now: UInt64(Date().timeIntervalSince1970 * 1000))
    let head = try log.signedTreeHead(now: UInt64(Date().timeIntervalSince1970 * 1000))
    return "  ct log:      \(directory) entry \(receipt.index), tree size \(head.treeSize), root \(head.rootHash.shortHex)…"
}

// MARK: - Network options shared by name and resolve

/// How a tool reaches the DHT: entry points (`--bootstrap`) and the caller's credentials.
struct NexusNetworkOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Nexus DHT nodes to join through, comma-separated (default '[::1]:4433').", valueName: "addresses"))
    var bootstrap: String?
    /// The old spelling of `--bootstrap` (`--node` is the node a command talks to).
    @Option(name: .customLong("node"), help: .hidden) var legacyNode: String?
    @Option(help: "Client certificate (PEM) issued by the network CA.") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca

    func validate() throws {
        if bootstrap != nil && legacyNode != nil { throw ValidationError("give --bootstrap only (--node is its old spelling here)") }
    }

    func connect() async throws -> NexusClient {
        let seeds = try parsePeerList(bootstrap ?? legacyNode ?? "[::1]:4433", option: bootstrap == nil && legacyNode != nil ? "--node" : "--bootstrap")
        return try await NexusClient.connect(seeds: seeds, certificate: cert, key: key, ca: ca)
    }
}

/// Parses a name's value: a content id, or service nodes.
func parseNameValue(content: String?, nodes: [String]) throws -> NameValue {
    if let content {
        if let id = ContentID(content) { return .content(NexusID(bytes: id.manifest.bytes)!) }
        let h = content.hasPrefix("stoq:") ? String(content.dropFirst(5)) : content
        guard let id = NexusHash(hex: h) else { throw ValidationError("the value must be a content id (stoq:… or 64 hex digits), or give --node") }
        return .content(id)
    }
    guard !nodes.isEmpty else { throw ValidationError("give a content id or at least one --node") }
    return .service(try nodes.map { spec in
        let parts = spec.split(separator: "@", maxSplits: 1)
        guard let id = NexusHash(hex: String(parts[0])) else { throw ValidationError("node id must be 64 hex digits: \(spec)") }
        let addrs = parts.count == 2 ? try parts[1].split(separator: ",").map { try NexusAddress(parsing: String($0)) } : []
        return ServiceEndpoint(nodeID: id, addresses: addrs)
    })
}

extension NameCommand {
    /// `stoq name set NAME VALUE`: sign and publish in the DHT.
    struct SetName: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Sign a name record with the owner's key and store it in the Nexus DHT (a higher version replaces a lower one).")
        @Argument(help: "The name, e.g. video.example.") var name: String
        @Argument(help: "Content id (stoq:… or 64 hex digits). Omit when giving --service-node.") var value: String?
        @Option(name: .customLong("service-node"), help: "Service node NODEID(64 hex)@[addr]:port; repeatable.") var serviceNodes: [String] = []
        @Option(help: "Owner private key (PEM, from `stoq name keygen`).") var owner: String
        @Option(help: "The record's version (default: now in ms, so a later set wins).") var recordVersion: UInt64?
        @Option(help: "Lifetime in seconds.") var ttl: UInt32 = 3600
        @OptionGroup var network: NexusNetworkOptions

        func run() async throws {
            let key = try P256.Signing.PrivateKey(pemRepresentation: String(decoding: try Data(contentsOf: URL(fileURLWithPath: owner)), as: UTF8.self))
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let record = try NameRecord.sign(name: try NexusName(name), value: try parseNameValue(content: value, nodes: serviceNodes),
                                             version: recordVersion ?? now, issuedAt: now, ttl: ttl, owner: key)
            let client = try await network.connect()
            do {
                let t0 = ContinuousClock.now
                let stored = try await client.setName(record, now: now)
                print(String(format: "set %@ version %llu on %d nodes in %.1f ms (ttl %u s)", record.name.text, record.version, stored, (ContinuousClock.now - t0).seconds * 1000, ttl))
                await client.close()
            } catch {
                await client.close()
                throw error
            }
        }
    }

    /// `stoq name get NAME`: look up and verify.
    struct GetName: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Look a name up in the Nexus DHT and verify its signature and expiry.")
        @Argument(help: "The name.") var name: String
        @OptionGroup var network: NexusNetworkOptions

        func run() async throws {
            let client = try await network.connect()
            do {
                let t0 = ContinuousClock.now
                let (record, lookup) = try await client.getName(try NexusName(name))
                let ms = (ContinuousClock.now - t0).seconds * 1000
                switch record.value {
                case .content(let id): print("\(record.name) → \(contentText(id))")
                case .service(let eps):
                    for e in eps { print("\(record.name) → node \(e.nodeID) \(e.addresses.map(\.description).joined(separator: " "))") }
                }
                print(String(format: "version %llu, expires %@, owner %@…; verified; %d requests, %d rounds, %.1f ms",
                             record.version, "\(Date(timeIntervalSince1970: Double(record.expiresAt) / 1000))",
                             NexusHash.sha256(try record.ownerPublicKey().derRepresentation).shortHex, lookup.messages, lookup.rounds, ms))
                await client.close()
            } catch {
                await client.close()
                throw error
            }
        }
    }
}

// MARK: - stoq resolve

/// `stoq resolve SERVICE`: the healthy node of a service with the lowest latency.
struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve",
        abstract: "Pick a service's node: healthy (1 s / 100 ms / 3 probes), lowest measured latency, else nearest.")
    @Argument(help: "The service's name (a name record listing its nodes).") var service: String
    @Option(help: "Probe rounds (one probe per node per interval).") var rounds: Int = 3
    @Option(help: ArgumentHelp("Probe every node this often, in ms.", valueName: "ms")) var probeInterval: UInt64?
    /// The old spelling of `--probe-interval` (the probe flags are `--probe-*` everywhere).
    @Option(name: .customLong("interval-ms"), help: .hidden) var legacyIntervalMs: UInt64?
    @Option(help: "Where you are, 'LAT,LON', for the geographic fallback.") var near: String?
    @OptionGroup var network: NexusNetworkOptions

    func run() async throws {
        var location: GeoLocation?
        if let near {
            let parts = near.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2 else { throw ValidationError("--near takes 'LAT,LON' in degrees") }
            location = GeoLocation(latitude: parts[0], longitude: parts[1])
        }
        let client = try await network.connect()
        do {
            let (record, _) = try await client.getName(try NexusName(service))
            guard case .service(let endpoints) = record.value else {
                throw CLIError("'\(service)' names content, not a service; `stoq name get \(service)` shows it")
            }
            var locations: [NexusID: GeoLocation] = [:]
            for e in endpoints { if let l = try? await client.nodeRecord(e.nodeID)?.location { locations[e.nodeID] = l } }
            var health = ServiceResolver.HealthRule()
            health.interval = (probeInterval ?? legacyIntervalMs ?? 1000) * 1_000_000
            let resolver = ServiceResolver(health: health, rounds: rounds)
            let (selection, probes) = try await resolver.resolve(endpoints, peers: client.peers, locations: locations, clientLocation: location)
            for p in probes {
                print("  \(p.node.shortHex) \(p.health) \(p.rttMilliseconds.map { String(format: "%.2f ms", $0) } ?? "-")")
            }
            let e = selection.candidate.endpoint
            print("\(service) → \(e.nodeID) \(e.addresses.map(\.description).joined(separator: " ")) (\(basisText(selection.basis)))")
            await client.close()
        } catch {
            await client.close()
            throw error
        }
    }
}

// MARK: - stoq relay

/// `stoq relay`: the old home of the relay benchmark (`stoq relay bench`, now `stoq bench relay`); hidden.
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay", abstract: "Old spelling: `stoq relay bench` is `stoq bench relay`.", shouldDisplay: false, subcommands: [RelayBenchAlias.self])

    /// `stoq bench relay` (old spelling `relay bench`, hidden): a relay route chosen by the router and followed over real QUIC.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "relay",
            abstract: "Relay: nodes A, R, B on [::1], A's direct path to B slowed in user space; the route A's matrix picks, and chunk fetches direct vs along it.")
        @Option(help: "Added one-way delay on the direct path, ms.") var delayMs: Int = 25
        @Option(help: "Chunk size in KiB.") var chunkKib: Int = 256
        @Option(help: "Fetches per path.") var fetches: Int = 5

        func run() async throws {
            print(try await RelayBenchmark.run(delay: .milliseconds(delayMs), chunkBytes: chunkKib * 1024, fetches: fetches))
        }
    }
}
