import ArgumentParser
import Foundation
import Logging
import STOQ
import STOQNode
import STOQSwarm

/// Options for fetching from peers over `stoq/1` (used by `stoq get --peers`).
struct PeerOptions: ParsableArguments {
    @Option(help: "Fetch from these peers first, comma-separated IPv6 addresses: '[::1]:4433,[fd00::2]:4433'.")
    var peers: String?
    @Option(name: .customLong("cert"), help: "Client certificate (PEM) presented to the peers. Default: ~/.stoq/certs/client.pem when it exists (stoq init).") var certOption: String?
    @Option(name: .customLong("key"), help: "Client private key (PEM). Default: ~/.stoq/certs/client.key when it exists (stoq init).") var keyOption: String?
    @Option(name: .customLong("ca"), help: "Network CA certificate (PEM) the peers' certificates must chain to. Default: ~/.stoq/certs/ca.pem when it exists (stoq init).") var caOption: String?
    /// `--cert`, `--key` and `--ca`, each defaulting to the files `stoq init` wrote (`ClientIdentity`).
    var identity: (cert: String?, key: String?, ca: String?) {
        var (cert, key, ca) = (certOption, keyOption, caOption)
        ClientIdentity.fill(cert: &cert, key: &key, ca: &ca)
        return (cert, key, ca)
    }
    var cert: String? { identity.cert }
    var key: String? { identity.key }
    var ca: String? { identity.ca }
    @Flag(help: "Ask the peers in the order given instead of ranking them by route cost (3 PING/PONGs and a gossip exchange each).") var noRouting = false
    @Option(help: "Reach every peer through this relay node (a node with the relay role), e.g. when the direct path is slow or blocked: '[fd00::9]:4433'.")
    var via: String?
    @Option(help: ArgumentHelp("Probe every peer's health this often while fetching, in ms.", valueName: "ms"))
    var probeInterval = 1000
    @Option(help: ArgumentHelp("A probe (PING) unanswered after this many ms is a miss.", valueName: "ms"))
    var probeTimeout = 100
    @Option(help: "Misses in a row that mark a peer down; its requests move to the other peers at once.")
    var probeFailures = 3
    @Flag(help: "Do not probe the peers' health while fetching (only the swarm's stall timers move requests).")
    var noProbe = false
    @Option(help: ArgumentHelp("A peer that is down (probes unanswered, or its connection lost and dialled again without success) this long stops counting; a fetch with no live peer waits this long, then fails.", valueName: "s"))
    var sourceRetrySeconds = 120
    @Option(help: "An access grant (its text or a file), presented to every peer before fetching and with --via to the relay: the relay right lets the relay carry your streams when your certificate is not one it carries for; the read right lets a peer run with --private-reads serve you content that is not public (also without a certificate) and names the transfer in the peers' audit records; with stoq get, a sealed content's key wrapped for your reader key (stoq grant create --reader --content, opened with --reader-key).")
    var grant: String?
    @Option(help: ArgumentHelp("Close a connection to a peer after this many seconds without a packet from it (QUIC idle timeout; the lower of the two sides' values applies). The fetch dials a closed connection again.", valueName: "s"))
    var idleTimeout = 30

    /// Refuses a retry window or idle timeout out of range before anything runs.
    func validate() throws {
        _ = try swarmConfiguration()
        _ = try endpointConfiguration()
    }

    /// The scheduler settings these options ask for.
    func swarmConfiguration() throws -> SwarmConfiguration {
        guard (1...86_400).contains(sourceRetrySeconds) else {
            throw ValidationError("--source-retry-seconds must be between 1 and 86400 (a day); got \(sourceRetrySeconds)")
        }
        var swarm = SwarmConfiguration()
        swarm.downSourceLimit = UInt64(sourceRetrySeconds) * 1_000_000_000
        return swarm
    }

    /// The endpoint settings these options ask for.
    func endpointConfiguration() throws -> EndpointConfiguration {
        guard (1...3600).contains(idleTimeout) else {
            throw ValidationError("--idle-timeout must be between 1 and 3600 seconds; got \(idleTimeout)")
        }
        var configuration = EndpointConfiguration()
        configuration.idleTimeout = .seconds(idleTimeout)
        return configuration
    }

    /// The health probing these options ask for (nil: --no-probe).
    func healthConfiguration() throws -> HealthMonitor<PeerAddress>.Configuration? {
        guard !noProbe else { return nil }
        do {
            return try HealthSettings(intervalMilliseconds: probeInterval, timeoutMilliseconds: probeTimeout, failureThreshold: probeFailures)
                .monitorConfiguration()
        } catch let error as NodeError {
            throw ValidationError("--probe-interval/--probe-timeout/--probe-failures: \(error.reason)")
        }
    }

    /// The parsed peer addresses.
    func addresses() throws -> [PeerAddress] {
        guard let peers else { return [] }
        return try peers.split(separator: ",").map { text in
            guard let a = PeerAddress(String(text.trimmingCharacters(in: .whitespaces))) else {
                throw ValidationError("'\(text)' is not an IPv6 address like [::1]:4433 (STOQ is IPv6-only)")
            }
            return a
        }
    }

    /// The relay's ERROR 7 (no relay right) to a relayed PING through `client`, or nil (carried,
    /// or failed for another reason the fetch itself reports).
    static func relayRefusal(_ client: PeerClient?) async -> String? {
        guard let client, let stream = try? await client.openRequestStream(priority: .control) else { return nil }
        do {
            try await stream.write(STOQMessage.ping(nonce: 1, sentAtMicros: 0).encoded())
            try await stream.finish()
            var decoder = FrameDecoder(maximumPayloadLength: 4096)
            decoder.handle(bytes: try await stream.readAll(limit: 4096))
            if let frame = try decoder.pollFrame(), case .error(7, let message) = try STOQMessage.decode(frame) { return message }
        } catch {}
        return nil
    }

    /// Fetches `id` from the peers into `store`, printing progress and a summary. `stoq get
    /// --peers` and `stoq demo` both come here, so the demo exercises the path every reader uses.
    /// - Parameters:
    ///   - hooks: what the caller watches besides the progress bar and summary.
    ///   - view: where progress is drawn (nil: nowhere); left running (the caller finishes it).
    func fetch(_ id: ContentID, into store: any ChunkStore, hooks: PeerFetchHooks = .init(), view: ProgressView? = nil) async throws -> FetchReport {
        let addresses = try addresses()
        let probing = try healthConfiguration()
        let swarm = try swarmConfiguration()
        let endpointConfiguration = try endpointConfiguration()
        guard let ca, (cert == nil) == (key == nil) else {
            throw ValidationError("--peers needs --ca, and --cert with --key (mutual TLS) unless the peers accept readers without a certificate (--public-read)")
        }
        let tls = TLSConfiguration(
            certificateChainPEM: try cert.map { try PEMFile.read($0) }, privateKeyPEM: try key.map { try PEMFile.read($0) }, trustRootsPEM: try PEMFile.read(ca)
        )
        var relay: PeerAddress?
        if let via {
            guard let address = PeerAddress(via) else { throw ValidationError("--via '\(via)' is not an IPv6 address like [::1]:4433") }
            relay = address
        }
        view?.phase(addresses.count == 1 ? "connecting to \(addresses[0])…" : "connecting to \(addresses.count) peers…")
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: endpointConfiguration)
        // With --via, every peer's client (fetches and probes alike) goes through the relay.
        let peers = PeerSet(endpoint: endpoint, via: relay)
        // --grant: parsed once; presented below and on every connection dialled again later.
        let parsedGrant = try grant.map(GrantInput.load)
        if let relay {
            let carrier: PeerClient
            do { carrier = try await peers.client(for: relay) } catch {
                await endpoint.close()
                throw CLIError("cannot reach the relay \(relay): \(ErrorReport.peopleText(error)); check --relay and that a relay runs there")
            }
            // The grant may be for the relay (the relay right) or for the peers only (read): a relay
            // that refuses it is not an error yet; the relayed PING below says whether it carries.
            var grantRefused: String?
            do { try await GrantInput.present(grant, on: carrier) } catch { grantRefused = ErrorReport.peopleText(error) }
            // One relayed PING first: a relay that will not carry this certificate says so (ERROR 7)
            // here, instead of every request failing until the peers count as down.
            if let first = addresses.first(where: { $0 != relay }), let refusal = await Self.relayRefusal(try? await peers.client(for: first)) {
                await endpoint.close()
                let why = grantRefused.map { "; it also refused the grant: \($0)" } ?? ""
                throw CLIError("the relay \(relay) refused to carry this certificate's streams: \(refusal)\(why)")
            }
        }
        // --grant: presented on each peer's connection (the fetch reuses it), so that a read grant
        // names the transfer in the peers' audit records, and again on every connection the fetch
        // dials later (a peer re-dialled after a drop). A peer that refuses it (a grant for the
        // relay, one carrying only a reader's key, one from a publisher the peer does not know) still
        // serves public reading; a peer that cannot be reached is left to the fetch, which says so.
        // Without a certificate too: a node run with --private-reads takes a grant bound to no peer
        // from an anonymous reader (others answer ERROR 5, which is ignored here like any refusal).
        // Their refusals are shown if the fetch then fails (a node run with --private-reads
        // refuses the content to a connection whose grant it refused: expired, revoked, …).
        var grantRefusals: [String] = []
        if let grant {
            for address in addresses {
                guard let client = try? await peers.client(for: address) else { continue }
                do { try await GrantInput.present(grant, on: client) } catch { grantRefusals.append(ErrorReport.peopleText(error)) }
            }
        }
        if let parsedGrant {
            await peers.onConnect { _, client in _ = try? await client.presentGrant(parsedGrant) }
        }
        // Every peer is probed while the fetch runs (through the relay with --via); a peer that
        // stops answering is marked down and its requests move at once (DESIGN.md §5 "Health").
        // Several peers: a router measures them (PING/PONG, one gossip exchange each) and ranks
        // them by route cost; the health probes keep feeding it while the fetch runs.
        var router: NodeRouter?
        if addresses.count > 1, !noRouting, let cert, let leaf = try PEMFile.certificateDERs(in: PEMFile.read(cert)).first {
            // Signed routing: the peers take only signed adverts, and this client checks theirs.
            let security = try? RoutingAdvertSecurity(
                trustRoots: TrustRoots.load(path: ca), credentials: key.flatMap { try? NodeCredentials.load(certificatePath: cert, keyPath: $0) })
            router = NodeRouter(node: try NodeID(certificateDER: leaf), security: security)
        }
        // A source's health changes reach the user once, as notes (onEvent below: "source X is
        // down…"); the service's own log lines would say the same again in another format.
        var healthLogger = Logger(label: "stoq.health")
        healthLogger.logLevel = .error
        let health = probing.map { PeerHealthService(peers: peers, configuration: $0, observer: router, logger: healthLogger) }
        let prober = health.map { health in Task { await health.run() } }
        let bar = hooks.interactive ? view : nil
        func shutDown() async {
            if let health {
                if hooks.interactive {
                    for peer in await health.snapshot() { Console.shared.note("health \(peer.summary)") }
                }
                await health.stop()
            }
            await prober?.value
            await peers.closeAll()
            await endpoint.close()
        }
        do {
            let report = try await ContentFetcher.fetch(
                id, from: addresses, peers: peers, health: health, store: store, configuration: swarm,
                onProgress: { progress in
                    bar?.update(done: Int64(progress.bytesDone), total: Int64(progress.totalBytes), sources: progress.liveSources)
                    hooks.onProgress?(progress)
                },
                onEvent: { note in
                    if hooks.interactive { Console.shared.note(note) }
                    hooks.onEvent?(note)
                }, router: router)
            bar?.finish()
            await shutDown()
            guard hooks.interactive else { return report }
            let perSource = report.sources.map { s in
                "\(s.name) \(s.bytes) B" + (s.routeCost.map { $0.isFinite ? String(format: " (route cost %.1f)", $0) : " (unknown route)" } ?? "")
            }.joined(separator: ", ")
            Console.shared.note(String(format: "fetched %d chunks (%d already here), %d bytes in %.2f s (%.1f Mbit/s) from %@",
                         report.chunks, report.chunksAlreadyPresent, report.fetchedBytes, report.seconds, report.megabitsPerSecond, perSource))
            return report
        } catch {
            bar?.abandon()
            await shutDown()
            if hooks.interactive { for refusal in grantRefusals { Console.shared.note(refusal) } }
            throw error
        }
    }
}

/// What a caller of ``PeerOptions/fetch(_:into:hooks:)`` watches besides the progress bar and
/// the summary line.
struct PeerFetchHooks: Sendable {
    /// Called as chunks arrive (after the progress bar).
    var onProgress: (@Sendable (SwarmProgress) -> Void)?
    /// Called with every note (skipped peers, route preference, stalls, failovers, health changes).
    var onEvent: (@Sendable (String) -> Void)?
    /// Print the progress bar, the notes, the peers' health and the summary line, as `stoq get`
    /// does; false: the caller reports (the demo).
    var interactive: Bool

    init(onProgress: (@Sendable (SwarmProgress) -> Void)? = nil, onEvent: (@Sendable (String) -> Void)? = nil, interactive: Bool = true) {
        self.onProgress = onProgress
        self.onEvent = onEvent
        self.interactive = interactive
    }
}

extension SwarmProgress {
    /// Sources that can deliver now (active or backing off; not down, banned or removed): the
    /// "N sources" of the progress bar.
    var liveSources: Int {
        sources.filter { source in
            switch source.state {
            case .active, .backingOff: return true
            default: return false
            }
        }.count
    }
}
