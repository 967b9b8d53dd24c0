import Foundation
import NIOConcurrencyHelpers
import STOQEdge
import STOQIdentity
import STOQNode
import STOQTransport
import STOQWire

/// A DHT client for tools (`stoq name`, `stoq resolve`): its own endpoint with the caller's
/// certificate, a ``NexusDHT`` without addresses (peers answer it but do not add it to their
/// tables), joined through one or more running nodes.
public final class NexusClient: Sendable {
    /// The DHT driver.
    public let dht: NexusDHT
    /// The endpoint it dials from.
    public let endpoint: Endpoint
    /// Its connections.
    public let peers: PeerSet

    private init(dht: NexusDHT, endpoint: Endpoint, peers: PeerSet) {
        self.dht = dht
        self.endpoint = endpoint
        self.peers = peers
    }

    /// Binds an endpoint with the given credentials and joins the DHT through `seeds`.
    /// - Parameters:
    ///   - certificate: PEM certificate chain path (a certificate of the network's CA).
    ///   - key: PEM private key path.
    ///   - ca: the network CA certificate path.
    ///   - dht: the DHT settings (request timeout and others; the defaults suit a network).
    public static func connect(
        seeds: [PeerAddress], certificate: String, key: String, ca: String, dht configuration: DHTConfiguration = DHTConfiguration()
    ) async throws -> NexusClient {
        let chainPEM = try PEMFile.read(certificate)
        guard let leaf = try PEMFile.certificateDERs(in: chainPEM).first else {
            throw NexusError(.malformedInput, "\(certificate) holds no certificate")
        }
        let tls = TLSConfiguration(certificateChainPEM: chainPEM, privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        let peers = PeerSet(endpoint: endpoint)
        let dht = NexusDHT(configuration: configuration)
        await dht.attach(record: NodeRecord(id: NexusID(bytes: try NodeID(certificateDER: leaf).bytes)!), peers: peers)
        let client = NexusClient(dht: dht, endpoint: endpoint, peers: peers)
        do {
            try await dht.join(seeds: seeds)
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Publishes a signed name record on the nodes closest to its name.
    /// - Returns: how many nodes stored it.
    /// - Throws: `.staleRecord` when every holder refused it (a record with a version at least as
    ///   high is held, or another owner holds the name).
    public func setName(_ record: NameRecord, now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) async throws -> Int {
        try record.verify(now: now)
        let storedOn = try await dht.put(key: record.name.key, value: record.encode())
        guard !storedOn.isEmpty else {
            if let held = try? await dht.lookup(.value, target: record.name.key).value, let current = try? NameRecord.decode(held),
               current.ownerKey != record.ownerKey {
                throw NexusError(.ownerMismatch, "'\(record.name)' is owned by another key (owner \(NameOwnership.fingerprint(current.ownerKey))); every node responsible for it refused this record. Only the owner can update the name; the owner can hand it over with `stoq name transfer`")
            }
            throw NexusError(.staleRecord, "every node responsible for '\(record.name)' refused version \(record.version): a record with a higher (or the same) version is held, or the name has another owner; publish a higher --version with the owner's key")
        }
        return storedOn.count
    }

    /// Looks a name up and verifies the record it finds.
    /// - Throws: `.notFound` when no node holds it; `.forgedRecord`/`.expiredRecord` when what came
    ///   back does not verify.
    public func getName(_ name: NexusName, now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) async throws -> (NameRecord, LookupResult) {
        let result = try await dht.lookup(.value, target: name.key)
        guard let value = result.value else {
            throw NexusError(.notFound, "no node holds a record for '\(name)' (asked \(result.messages) nodes); publish it with `stoq name set`")
        }
        let record = try NameRecord.decode(value)
        guard record.name == name else {
            throw NexusError(.forgedRecord, "a node answered '\(name)' with a record for '\(record.name)'")
        }
        try record.verify(now: now)
        return (record, result)
    }

    /// Looks up a node's signed record by id (nil when it has not published one).
    public func nodeRecord(_ id: NexusID, now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) async throws -> SignedNodeRecord? {
        guard let value = try await dht.lookup(.value, target: SignedNodeRecord.key(for: id)).value else { return nil }
        let record = try SignedNodeRecord.decode(value)
        try record.verify(now: now)
        guard record.record.id == id else { throw NexusError(.forgedRecord, "asked for node \(id.shortHex), got \(record.record.id.shortHex)") }
        return record
    }

    /// Stops the DHT and closes the endpoint.
    public func close() async {
        await dht.stop()
        await peers.closeAll()
        await endpoint.close()
    }
}

/// Picks the node of a service to use: probes each with STOQ PING under the health rule (DESIGN.md
/// §5: a probe per interval, 100 ms timeout, 3 failures in a row = down, via STOQEdge's
/// ``HealthMonitor``), then lets ``ServiceSelector`` choose the lowest measured latency among the
/// healthy, falling back to geography.
public struct ServiceResolver: Sendable {
    /// The probe rule: interval, timeout, failures that mark a node down.
    public typealias HealthRule = HealthMonitor<NexusID>.Configuration
    /// Health rule (default 1 s / 100 ms / 3).
    public var health: HealthRule
    /// Probe rounds before choosing (3 rounds are what it takes to call a node down).
    public var rounds: Int

    /// Creates a resolver.
    public init(health: HealthRule = .init(), rounds: Int = 3) {
        self.health = health
        self.rounds = rounds
    }

    /// What a probe run saw of one node.
    public struct Probe: Sendable, Hashable {
        /// The node.
        public var node: NexusID
        /// Its health.
        public var health: NodeHealth
        /// Smoothed RTT in ms, if it answered.
        public var rttMilliseconds: Double?
    }

    /// Probes `endpoints` for ``rounds`` intervals and chooses one.
    /// - Parameters:
    ///   - peers: connections to dial from.
    ///   - locations: node locations (from signed node records) for the geographic fallback.
    ///   - clientLocation: where the caller is.
    /// - Returns: the selection and every probe result.
    public func resolve(
        _ endpoints: [ServiceEndpoint], peers: PeerSet, locations: [NexusID: GeoLocation] = [:], clientLocation: GeoLocation? = nil
    ) async throws -> (ServiceSelection, [Probe]) {
        let probes = await probe(endpoints, peers: peers)
        let byID = Dictionary(probes.map { ($0.node, $0) }, uniquingKeysWith: { a, _ in a })
        let metrics = ClosureServiceMetrics(latency: { byID[$0]?.rttMilliseconds }, health: { byID[$0]?.health ?? .unknown })
        let candidates = endpoints.map { ServiceCandidate(endpoint: $0, location: locations[$0.nodeID]) }
        return (try ServiceSelector.select(from: candidates, metrics: metrics, clientLocation: clientLocation), probes)
    }

    /// Runs the health monitor over real PINGs for ``rounds`` intervals, and on until every node
    /// has had ``rounds`` probes answered or timed out (at most 5 × the rounds, or 5 s more), so a
    /// late wake-up on a busy machine does not cut the evidence short. Connections are dialled
    /// first, so a probe's RTT is one PING round trip, not a handshake.
    public func probe(_ endpoints: [ServiceEndpoint], peers: PeerSet) async -> [Probe] {
        var addresses: [NexusID: PeerAddress] = [:]
        for e in endpoints { if let a = e.addresses.first(where: \.isDialable) { addresses[e.nodeID] = a.peerAddress } }
        await withTaskGroup(of: Void.self) { group in
            for (_, address) in addresses { group.addTask { _ = try? await peers.client(for: address) } }
        }
        let clock = ContinuousClock()
        let start = clock.now
        let answers = ProbeAnswers()
        func now() -> UInt64 { UInt64((clock.now - start).wholeNanoseconds) }
        var monitor = HealthMonitor<NexusID>(configuration: health, nonceSeed: 1)
        for e in endpoints where addresses[e.nodeID] != nil { monitor.addPeer(e.nodeID, now: now()) }
        let end = UInt64(rounds) * health.interval
        // A loaded machine wakes this loop late, so by `end` the last probes may not have been
        // sent or timed out yet: a dead node would look degraded (1 or 2 misses), not down. The
        // loop goes on until every node has had `rounds` probes answered or timed out, bounded by
        // `hardEnd`, so the verdict rests on the same evidence however busy the machine is.
        let hardEnd = end + max(4 * end, 5_000_000_000)
        func settled() -> Bool {
            endpoints.allSatisfy { e in
                guard addresses[e.nodeID] != nil, let h = monitor.health(of: e.nodeID) else { return true }
                return h.answered + h.timeouts >= UInt64(rounds)
            }
        }
        var pendingProbes: [Task<Void, Never>] = []
        while now() < end || (!settled() && now() < hardEnd) {
            // Answers first, with the time they arrived, then the timeouts that are due.
            for (node, nonce, at) in answers.take() { monitor.handleProbeResponse(from: node, nonce: nonce, now: at) }
            monitor.handleTimeout(now: now())
            while let action = monitor.pollAction() {
                guard case .sendProbe(let node, let nonce) = action, let address = addresses[node] else { continue }
                pendingProbes.append(Task {
                    do {
                        let client = try await peers.client(for: address)
                        guard client.connection.peerNodeID?.bytes == node.bytes else { return }
                        _ = try await client.ping()
                        answers.add(node, nonce, UInt64((clock.now - start).wholeNanoseconds))
                    } catch {
                        await peers.drop(address)
                    }
                })
            }
            while monitor.pollEvent() != nil {}
            let next = now() < end ? min(monitor.pollTimeout() ?? end, end) : (monitor.pollTimeout() ?? hardEnd)
            let wait = min(next > now() ? next - now() : 0, 5_000_000)  // answers are picked up within 5 ms
            if wait > 0 { try? await Task.sleep(for: .nanoseconds(Int64(wait))) }
        }
        for task in pendingProbes { task.cancel() }
        for (node, nonce, at) in answers.take() { monitor.handleProbeResponse(from: node, nonce: nonce, now: at) }
        return endpoints.map { e in
            guard let h = monitor.health(of: e.nodeID) else { return Probe(node: e.nodeID, health: .unknown, rttMilliseconds: nil) }
            let state: NodeHealth = !h.isUp ? .down : h.consecutiveFailures > 0 ? .degraded : h.answered == 0 ? .unknown : .up
            return Probe(node: e.nodeID, health: state, rttMilliseconds: h.smoothedRTT.map { $0 / 1e6 })
        }
    }
}

/// Probe answers handed from probe tasks to the resolver loop (checked `Sendable`: the list lives
/// in a locked box).
final class ProbeAnswers: Sendable {
    private let items = NIOLockedValueBox([(NexusID, UInt64, UInt64)]())
    func add(_ node: NexusID, _ nonce: UInt64, _ at: UInt64) { items.withLockedValue { $0.append((node, nonce, at)) } }
    func take() -> [(NexusID, UInt64, UInt64)] { items.withLockedValue { items in defer { items.removeAll() }; return items } }
}
