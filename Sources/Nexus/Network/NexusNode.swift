import Crypto
import Foundation
import Logging
import STOQContent
import STOQEdge
import STOQIdentity
import STOQNode
import STOQTransport

/// A STOQ ``Node`` with Nexus on it: the DHT answering on the node's streams, joins through
/// bootstrap nodes, publishes its signed node record and provider records for its pinned content,
/// and optionally admits only peers whose certificate is in a CT log.
public final class NexusNode: Sendable {
    /// The STOQ node.
    public let node: Node
    /// Its DHT driver.
    public let dht: NexusDHT
    /// Its DHT record (id from its certificate's key, listen address, region, certificate hash).
    public let record: NodeRecord
    /// Admission by CT log, if required.
    public let admission: CTAdmission?
    /// Service keys this node announces itself a provider of (e.g. HyperMesh's storage key), besides
    /// its pinned content.
    public let serviceKeys: [NexusID]
    /// On an edge: the provider records of what it caches, announced and withdrawn as the cache
    /// changes.
    public let announcements: EdgeAnnouncements?
    private let signer: (any CertificateSigner)?
    private let logger: Logger
    /// The second factor (`--require-enrolment`): peers must prove their enrolment secret.
    public let enrolment: EnrolmentTable?

    /// Starts a node with Nexus.
    /// - Parameters:
    ///   - configuration: the STOQ node's configuration.
    ///   - dht: DHT parameters.
    ///   - admission: when set, peers whose certificate is not logged are refused.
    ///   - services: further services (e.g. HyperMesh).
    ///   - serviceKeys: keys ``publish(now:)`` announces this node a provider of (a service's
    ///     well-known key, so clients find its nodes with a provider lookup).
    ///   - announce: on an edge, how its cached content is announced (bounds and rate).
    public static func start(
        _ configuration: NodeConfiguration, dht dhtConfiguration: DHTConfiguration = DHTConfiguration(),
        admission: CTAdmission? = nil, services: [any NodeService] = [], serviceKeys: [NexusID] = [], metrics: NodeMetrics = NodeMetrics(),
        announce: ProviderAnnouncer.Configuration = .init(), logger: Logger = Logger(label: "stoq.nexus"),
        enrolment: EnrolmentTable? = nil, enrolmentSecret: [UInt8]? = nil
    ) async throws -> NexusNode {
        let chain = try PEMFile.certificateDERs(in: PEMFile.read(configuration.certificate))
        guard let leaf = chain.first else {
            throw NexusError(.malformedInput, "\(configuration.certificate) holds no certificate")
        }
        let id = try NodeID(certificateDER: leaf)
        // Owned names: who owns which DHT name, kept across restarts (and read from the CT log).
        let dhtOwners = NameOwnershipStore(path: configuration.store + "/names/dht-owners.json")
        let dht = NexusDHT(configuration: dhtConfiguration, validator: NexusRecordValidator(ownership: dhtOwners))
        let node = try await Node.start(configuration, services: [NexusService(dht: dht)] + services
                                            + (services.contains { $0.frameTypes.contains(Enrolment.challengeType) } ? [] : [EnrolmentService(secret: enrolmentSecret, nodeID: id.bytes)]),
                                        metrics: metrics, logger: logger)
        if let log = admission?.log {
            // Name bindings in the CT log decide who owns a name, in both name systems.
            let reader: NameOwnershipStore.LogReader = { from in log.entries(withPrefix: NameOwnerBinding.prefix, from: from) }
            let logKey = Array(log.publicKey.x963Representation)
            dhtOwners.attachLog(reader: reader, logKey: logKey)
            node.names.ownership.attachLog(reader: reader, logKey: logKey)
        }
        let record = NodeRecord(
            id: NexusID(bytes: id.bytes)!, addresses: [try NexusAddress(node.address)],
            region: String((configuration.region ?? "").utf8.prefix(NodeRecord.maxRegionLength)) ?? "",
            certificateFingerprint: NexusHash.sha256(leaf))
        await dht.attach(record: record, peers: node.peers)
        var announcements: EdgeAnnouncements?
        if let edge = node.edge {
            announcements = await EdgeAnnouncements(edge: edge, dht: dht, configuration: announce, logger: logger)
            announcements?.start()
        }
        return NexusNode(node: node, dht: dht, record: record, admission: admission, serviceKeys: serviceKeys, announcements: announcements,
                         signer: node.signer, logger: logger, enrolment: enrolment)
    }

    private init(node: Node, dht: NexusDHT, record: NodeRecord, admission: CTAdmission?, serviceKeys: [NexusID], announcements: EdgeAnnouncements?,
                 signer: (any CertificateSigner)?, logger: Logger, enrolment: EnrolmentTable? = nil) {
        self.enrolment = enrolment
        self.announcements = announcements
        self.serviceKeys = serviceKeys
        self.node = node
        self.dht = dht
        self.record = record
        self.admission = admission
        self.signer = signer
        self.logger = logger
    }

    /// The bound address.
    public var address: PeerAddress { node.address }

    /// Joins the DHT through `seeds` (none: this is the first node).
    /// - Returns: contacts in the routing table afterwards.
    @discardableResult
    public func join(_ seeds: [PeerAddress]) async throws -> Int {
        try await dht.join(seeds: seeds.filter { $0 != address })
    }

    /// What ``publish(now:)`` stored.
    public struct Publication: Sendable {
        /// Nodes holding the signed node record (nil: the node key cannot sign, e.g. not P-256).
        public var nodeRecordStoredOn: Int?
        /// Per pinned content id, the nodes holding its provider record.
        public var provided: [(content: String, storedOn: Int)]
        /// Per service key, the nodes holding this node's provider record.
        public var servicesProvided: [(key: NexusID, storedOn: Int)] = []
    }

    /// Publishes the signed node record, a provider record for every pinned content id and one for
    /// every service key.
    /// The DHT re-announces both on its own republish timers.
    public func publish(now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) async throws -> Publication {
        var out = Publication(nodeRecordStoredOn: nil, provided: [])
        // The node's key signs the record: in memory, or in its token (`--key 'pkcs11:…'`).
        if let signer {
            let signed = try SignedNodeRecord.sign(record, issuedAt: now, ttl: dht.configuration.recordTTL, signer: signer)
            out.nodeRecordStoredOn = try await dht.put(key: SignedNodeRecord.key(for: record.id), value: signed.encode()).count
        }
        for pin in try node.store.pins() {
            let key = NexusID(bytes: pin.id.manifest.bytes)!
            out.provided.append((pin.id.description, try await dht.provide(key: key).count))
        }
        for key in serviceKeys {
            out.servicesProvided.append((key, try await dht.provide(key: key).count))
        }
        return out
    }

    /// Serves until the endpoint closes (like ``Node/run()``: requests, health probes, admin
    /// endpoint); with ``admission`` set, a peer whose certificate is not logged is refused (its
    /// connection closed with the reason) before any request is answered.
    public func run() async {
        guard admission != nil || enrolment != nil else {
            await node.run()
            return
        }
        let node = self.node
        let logger = self.logger
        let admission = self.admission
        let enrolment = self.enrolment
        let me = Array(record.id.bytes)
        await withDiscardingTaskGroup { outer in
            outer.addTask {
                await withDiscardingTaskGroup { group in
                    for await connection in node.endpoint.incomingConnections {
                        group.addTask {
                            var refusal: (UInt64, String)?
                            if let admission, case .refused(let error) = admission.check(connection.peerCertificateChain) {
                                refusal = (CTAdmission.refusalCode, error.reason)
                            } else if let enrolment, let why = await enrolment.challenge(connection, verifier: me) {
                                // The second factor: the certificate alone is not enough.
                                refusal = (Enrolment.refusalCode, why)
                            }
                            guard let (code, reason) = refusal else {
                                await node.server.serve(connection: connection)
                                return
                            }
                            logger.warning("refusing peer", metadata: ["peer": "\(connection.remoteAddress)", "reason": "\(reason)"])
                            // Close when the peer's first request arrives (none is answered): by
                            // then both sides have confirmed the handshake, so the peer surely
                            // receives the CONNECTION_CLOSE and its reason.
                            if code == CTAdmission.refusalCode { for await _ in connection.incomingStreams { break } }
                            await connection.close(code: code, reason: reason)
                        }
                    }
                }
            }
            if let health = node.health {
                outer.addTask {
                    for peer in node.probedPeers { await health.watch(peer) }
                    await health.run()
                }
            }
            if let admin = node.admin { outer.addTask { await admin.run() } }
        }
    }

    /// Stops the DHT timers and closes the node.
    public func close() async {
        announcements?.stop()
        await dht.stop()
        await node.close()
    }
}

/// Admits a peer only if its certificate is in a certificate-transparency log, checked with an
/// inclusion proof against a signed tree head of that log.
public struct CTAdmission: Sendable {
    /// The log.
    public let log: TransparencyLog
    /// QUIC application error code used to close a refused connection.
    public static let refusalCode: UInt64 = 0x4354  // "CT"

    /// The outcome of a check.
    public enum Decision: Sendable {
        /// Logged; the proof verified.
        case admitted(InclusionBundle)
        /// Not logged, or the proof failed.
        case refused(NexusError)
    }

    /// Uses `log`.
    public init(log: TransparencyLog) { self.log = log }

    /// Opens the log in `directory` and checks it end to end first (every leaf, subtree hash and
    /// signed head), so a node never admits peers against a tampered log.
    /// - Throws: `.logTampered` naming the first inconsistency; `.emptyLog` if there is no log.
    public static func open(directory: String) throws -> CTAdmission {
        let log = try TransparencyLog.open(directory: directory, create: false)
        do {
            try log.verifyIntegrity()
        } catch {
            throw NexusError(error.code, "the CT log in \(directory) fails its integrity check, refusing to start: \(error.reason)")
        }
        return CTAdmission(log: log)
    }

    /// Checks a peer's certificate chain (leaf first).
    public func check(_ chain: [[UInt8]], now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> Decision {
        guard let leaf = chain.first else {
            return .refused(NexusError(.notLogged, "the peer presented no certificate; this node requires certificates logged in CT log \(log.logID.shortHex)…"))
        }
        do {
            return .admitted(try log.proveLogged(leaf, now: now))
        } catch let error where error.code == .notLogged {
            return .refused(NexusError(.notLogged, "certificate not in CT log \(log.logID.shortHex)… required by this node: \(error.reason). Issue it with `stoq certs issue --ct-log DIR` or append it with `stoq ct append`"))
        } catch {
            return .refused(NexusError(error.code, "CT inclusion proof failed, refusing the peer: \(error.reason)"))
        }
    }
}
