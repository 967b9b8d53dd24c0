import Crypto
import Foundation
import Logging
import NIOCore
import STOQExchange
import STOQIdentity
import STOQRouting
import STOQTransport
import STOQWire

extension RoutingNodeID {
    /// The routing id of a node: the first 8 bytes of its ``NodeID`` (the SHA-256 of its public
    /// key). Every STOQ layer names a node to the router this way.
    public init(_ node: NodeID) {
        self.init(prefixOf: node.bytes)!
    }
}

/// Routing settings of a node (`routing` in the node configuration).
public struct RoutingSettings: Codable, Sendable, Hashable {
    /// Set false to run without a routing matrix (no gossip, sources in the order given).
    public var enabled: Bool?
    /// Time between gossip exchanges with each connected peer, ms (default 2000).
    public var gossipIntervalMilliseconds: Int?

    /// Creates settings (nil fields take the defaults).
    public init(enabled: Bool? = nil, gossipIntervalMilliseconds: Int? = nil) {
        self.enabled = enabled
        self.gossipIntervalMilliseconds = gossipIntervalMilliseconds
    }

    /// Whether routing runs (default: yes).
    public var isEnabled: Bool { enabled ?? true }

    /// The gossip interval.
    /// - Throws: ``NodeError`` `.invalidArgument` below 10 ms.
    public func gossipInterval() throws -> Duration {
        let ms = gossipIntervalMilliseconds ?? 2000
        guard ms >= 10 else {
            throw NodeError(.invalidArgument, "routing: the gossip interval (\(ms) ms) must be at least 10 ms")
        }
        return .milliseconds(ms)
    }
}

/// One row of a node's routing table, for `stoq status`.
public struct RoutingTableEntry: Sendable, Hashable {
    /// The node's routing id.
    public var node: RoutingNodeID
    /// Gossip hops from this node (1: a direct peer).
    public var hops: Int
    /// Smoothed RTT measured by PING/PONG, ms (nil: never measured here).
    public var measuredRTTMilliseconds: Double?
    /// RTT predicted by Vivaldi coordinates (or geography while they are untrained), ms; nil
    /// before the node reaches a published snapshot.
    public var predictedRTTMilliseconds: Double?
    /// The node's load (0 idle, 1 saturated).
    public var load: Double
    /// Seconds since the node was last heard of (directly or by fresh gossip).
    public var ageSeconds: Double
    /// Whether health probing reports it down.
    public var isDown: Bool
}

/// The routing counters of a node.
public struct RoutingCounters: Sendable, Hashable {
    /// Gossip messages sent (requests and answers).
    public var gossipSent = 0
    /// Gossip messages received and applied.
    public var gossipReceived = 0
    /// Gossip messages refused (malformed, forged sender, or the peer refused ours).
    public var gossipRejected = 0
    /// PONG measurements fed to the matrix.
    public var measurements = 0
}

/// A running node's router: the owner of its ``RoutingMatrix``.
///
/// Fed with every PONG the node's health probing gets (RTT, and the load and bandwidth the peer
/// announced), with peer up/down changes, and with gossip exchanged with connected peers (each
/// exchange is one ROUTING_GOSSIP request answered by the receiver's own view). Every
/// `updateInterval` (100 ms) ``tick()`` publishes a snapshot; queries (``rankSources(_:size:)``,
/// ``route(to:size:)``) run on the latest published snapshot with their own query engine, so
/// they never wait for an update, and updates never wait for a query.
///
/// The matrix is sans-IO; this type reads the clock. Its time is the wall clock (nanoseconds since
/// 1970) so that the versions a node stamps on its adverts keep growing across restarts.
///
/// `@unchecked Sendable`: the matrix, the address map, the counters and the set of exchanges in
/// flight are behind `lock`; the published snapshot (an immutable class) is behind `snapshotLock`.
public final class NodeRouter: @unchecked Sendable {
    /// The node's routing id.
    public let selfID: RoutingNodeID
    /// Time between gossip rounds.
    public let gossipInterval: Duration
    /// How often a snapshot is published.
    public let updateInterval: Duration
    let lock = NSLock()
    var matrix: RoutingMatrix
    private var peerIDs: [PeerAddress: RoutingNodeID] = [:]
    var counters = RoutingCounters()
    private let snapshotLock = NSLock()
    private var published: RoutingSnapshot?
    let metrics: NodeMetrics?
    let clock: @Sendable () -> Duration
    let logger: Logger
    /// Signed routing: this node's signing key and the checks of others' adverts (nil: a router
    /// for simulations and tests that trusts unsigned gossip and exchanges none over the network).
    public let security: RoutingAdvertSecurity?
    /// This node's last signed advert and when it was signed (re-signed at most every
    /// ``resignInterval``).
    var ownSigned: (advert: SignedRoutingAdvert, at: Duration)?

    /// The wall clock as a duration since 1970.
    /// (A double holds it to a quarter of a microsecond, far finer than gossip needs.)
    public static let wallClock: @Sendable () -> Duration = {
        .nanoseconds(Int64(Date().timeIntervalSince1970 * 1e9))
    }

    /// Creates a router.
    /// - Parameters:
    ///   - node: the node's id (its routing id is ``RoutingNodeID/init(_:)`` of it).
    ///   - region: the node's region name (hashed to the matrix's 16-bit region number).
    ///   - latitude: degrees, when known.
    ///   - longitude: degrees, when known.
    ///   - bandwidthBytesPerSecond: the node's access bandwidth, if known.
    ///   - gossipInterval: time between gossip rounds.
    ///   - configuration: matrix tuning.
    ///   - clock: the time source (the wall clock by default).
    ///   - security: signed routing (every node runs with it): the node signs its own advert and
    ///     takes an advert about any node only with that node's valid signature.
    public init(
        node: NodeID, region: String? = nil, latitude: Double? = nil, longitude: Double? = nil, bandwidthBytesPerSecond: UInt64? = nil,
        gossipInterval: Duration = .seconds(2), configuration: RoutingConfiguration = NodeRouter.defaultConfiguration,
        metrics: NodeMetrics? = nil, clock: @escaping @Sendable () -> Duration = NodeRouter.wallClock,
        logger: Logger = Logger(label: "stoq.routing"), security: RoutingAdvertSecurity? = nil
    ) {
        self.security = security
        selfID = RoutingNodeID(node)
        var geo = GeoCoordinate.unknown
        if let latitude, let longitude {
            let candidate = GeoCoordinate(latitude: Float(latitude), longitude: Float(longitude))
            if candidate.isValid { geo = candidate }
        }
        matrix = RoutingMatrix(
            selfID: selfID, region: Self.regionNumber(region), geo: geo,
            bandwidthBitsPerSecond: Float(bandwidthBytesPerSecond ?? 0) * 8, configuration: configuration,
            verifier: security.map { SignedAdvertVerifier(security: $0) })
        self.gossipInterval = gossipInterval
        self.updateInterval = configuration.updateInterval
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
    }

    /// Matrix tuning for a node: gossip messages that fit the wire bounds of
    /// ``RoutingGossipMessage`` (64 relayed nodes with 8 links each, 32 own links).
    public static let defaultConfiguration: RoutingConfiguration = {
        var c = RoutingConfiguration()
        c.gossipNodesPerMessage = min(c.gossipNodesPerMessage, RoutingGossipMessage.maxNodeAdverts - 1)
        c.maxAdvertsPerGossip = min(c.maxAdvertsPerGossip, RoutingGossipMessage.maxLinkAdverts)
        return c
    }()

    /// How far ahead of this node's clock an advert's version may be (clock skew between nodes);
    /// adverts stamped later are dropped.
    public static let maximumClockSkew: Duration = .seconds(300)

    /// A region name's number in the matrix: the first two bytes of its SHA-256 (0: no region).
    public static func regionNumber(_ name: String?) -> UInt16 {
        guard let name, !name.isEmpty else { return 0 }
        let digest = Array(SHA256.hash(data: Array(name.utf8)))
        return max(1, UInt16(digest[0]) << 8 | UInt16(digest[1]))
    }

    // MARK: Inputs

    /// Feeds one answered probe: `rtt` measured to `peer` (whose handshake proved `nodeID`),
    /// and the load and spare bandwidth its PONG announced.
    public func handleProbe(peer: PeerAddress, nodeID: NodeID?, rtt: Duration, pong: STOQMessage.Pong) {
        guard let nodeID else { return }
        let id = RoutingNodeID(nodeID)
        let now = clock()
        lock.withLock {
            peerIDs[peer] = id
            // The peer's own coordinate, when gossip taught it, moves ours (Vivaldi).
            let known = matrix.record(of: id)
            let coordinate = known.flatMap { $0.version > 0 ? $0.coordinate : nil }
            let measurement = RoutingMeasurement(
                peer: id, rtt: rtt,
                bandwidthBitsPerSecond: pong.bandwidthBytesPerSecond > 0 ? Float(pong.bandwidthBytesPerSecond) * 8 : nil,
                load: Float(min(pong.loadPermille, 1000)) / 1000, coordinate: coordinate)
            matrix.handleMeasurement(measurement, now: now)
            counters.measurements += 1
        }
    }

    /// Health probing says `peer` went up or down.
    public func handlePeerState(peer: PeerAddress, isUp: Bool) {
        let now = clock()
        lock.withLock {
            guard let id = peerIDs[peer] else { return }
            matrix.handlePeerState(id, isUp: isUp, now: now)
        }
    }

    /// Sets this node's load (0 idle ... 1 saturated), announced in its next gossip.
    public func setLocalLoad(_ load: Double) {
        lock.withLock { matrix.setLocalLoad(Float(load)) }
    }

    /// This node's view as a gossip message.
    public func makeGossip() -> RoutingGossipMessage {
        let now = clock()
        let gossip = lock.withLock { matrix.makeGossip(now: now) }
        return Self.wire(gossip)
    }

    /// Applies gossip received from the peer whose handshake proved `peer`.
    ///
    /// A peer speaks only for itself: a message whose sender is not the peer, or whose adverts
    /// do not start with the sender's own, is refused whole and changes nothing.
    /// - Throws: ``NodeError`` `.protocolViolation` for a forged or unauthenticated message.
    @discardableResult
    public func handleGossip(_ message: RoutingGossipMessage, from peer: NodeID?) throws -> RoutingGossipOutcome {
        guard security == nil else {
            reject()
            throw NodeError(.protocolViolation, "unsigned routing gossip (ROUTING_GOSSIP 0x11) is not accepted: this node takes only signed routing adverts (ROUTING_ADVERTS 0x26); upgrade the sender")
        }
        guard let peer else {
            reject()
            throw NodeError(.protocolViolation, "routing gossip on a connection without a peer certificate; refused")
        }
        let peerID = RoutingNodeID(peer)
        guard message.sender == peerID.rawValue else {
            reject()
            throw NodeError(.protocolViolation, "routing gossip from \(peerID) claims to be the view of \(RoutingNodeID(message.sender)); a peer may only send its own view — refused")
        }
        guard let own = message.nodes.first, own.node == message.sender, own.hops == 0 else {
            reject()
            throw NodeError(.protocolViolation, "routing gossip from \(peerID) does not start with its own advert (hops 0); refused")
        }
        // Versions are the origin's wall clock: one from the future is a forgery (or a clock far
        // off) that would shadow the node's real adverts until then; it is dropped.
        let now = clock()
        let horizon = UInt64(max(0, (now + Self.maximumClockSkew).nanoseconds))
        var accepted = message
        accepted.nodes.removeAll { $0.version > horizon }
        accepted.links.removeAll { $0.version > horizon }
        let future = message.nodes.count + message.links.count - accepted.nodes.count - accepted.links.count
        let gossip = Self.routing(accepted)
        var outcome = lock.withLock {
            counters.gossipReceived += 1
            return matrix.handleGossip(gossip, now: now)
        }
        outcome.rejected += future
        metrics?.routingGossip("received")
        return outcome
    }

    /// Counts a message sent.
    func noteSent() {
        lock.withLock { counters.gossipSent += 1 }
        metrics?.routingGossip("sent")
    }

    /// Counts a message refused (by this node, or a peer refusing ours).
    func reject() {
        lock.withLock { counters.gossipRejected += 1 }
        metrics?.routingGossip("rejected")
    }

    /// Publishes a snapshot when the update interval has passed (the matrix's 100 ms timer).
    /// - Returns: how long until the matrix wants the next call.
    @discardableResult
    public func tick() -> Duration {
        let now = clock()
        let (snapshot, known, deadline) = lock.withLock { () -> (RoutingSnapshot?, Int, Duration) in
            matrix.handleTimeout(now: now)
            return (matrix.pollSnapshot(), matrix.knownNodeCount, matrix.pollTimeout())
        }
        if let snapshot { snapshotLock.withLock { published = snapshot } }
        metrics?.routingKnownNodes.set(known)
        return deadline - now
    }

    /// Publishes a snapshot now (e.g. before a fetch asks for a ranking).
    public func publishNow() {
        let now = clock()
        let snapshot = lock.withLock { matrix.publish(now: now) }
        snapshotLock.withLock { published = snapshot }
    }

    // MARK: Queries (on the published snapshot; never wait for the matrix)

    /// The latest published snapshot.
    public var snapshot: RoutingSnapshot? { snapshotLock.withLock { published } }

    /// Ranks `candidates` as sources of `size`-byte chunks, cheapest first (route cost: latency,
    /// transfer time, load, distance, hops); nodes the router does not know come last with cost
    /// `.infinity`.
    public func rankSources(_ candidates: [RoutingNodeID], size: Int, weights: RouteCostWeights = RouteCostWeights()) -> [RankedSource] {
        if snapshot == nil { publishNow() }
        guard let snapshot else { return [] }
        var engine = RouteQueryEngine()
        return engine.rankSources(in: snapshot, candidates: candidates, size: size, weights: weights)
    }

    /// The cheapest route to `destination` on the published snapshot.
    public func route(to destination: RoutingNodeID, size: Int = 0, weights: RouteCostWeights = RouteCostWeights()) -> Route? {
        guard let snapshot else { return nil }
        var engine = RouteQueryEngine()
        return engine.route(in: snapshot, from: selfID, to: destination, size: size, weights: weights)
    }

    /// What the matrix knows about `node` (reads the matrix, not the snapshot).
    public func record(of node: RoutingNodeID) -> RoutingNodeRecord? {
        lock.withLock { matrix.record(of: node) }
    }

    /// The RTT (ms) of the measured link `from → to` in the published snapshot (measured here,
    /// or learnt by gossip from the node that measured it); nil when unknown.
    public func linkRTT(from: RoutingNodeID, to: RoutingNodeID) -> Double? {
        snapshot?.measuredLatency(from: from, to: to).map(Double.init)
    }

    /// Nodes known, this node included.
    public var knownNodeCount: Int { lock.withLock { matrix.knownNodeCount } }

    /// Gossip and measurement counters.
    public var stats: RoutingCounters { lock.withLock { counters } }

    /// Every known node but this one, nearest (measured, else predicted) first. Predictions come
    /// from the published snapshot (nil for a node learnt since).
    public func table() -> [RoutingTableEntry] {
        let now = clock()
        let snapshot = self.snapshot
        let records = lock.withLock { matrix.knownNodes.dropFirst().compactMap { matrix.record(of: $0) } }
        func key(_ e: RoutingTableEntry) -> Double { e.measuredRTTMilliseconds ?? e.predictedRTTMilliseconds ?? .infinity }
        return records.map { r in
            RoutingTableEntry(
                node: r.node, hops: Int(r.hops), measuredRTTMilliseconds: r.measuredRTT.map { Double($0.smoothed) },
                predictedRTTMilliseconds: snapshot?.predictedLatency(from: selfID, to: r.node).map(Double.init),
                load: Double(r.load), ageSeconds: max(0, Double((now - r.lastHeard).nanoseconds) / 1e9), isDown: r.isDown)
        }.sorted { key($0) != key($1) ? key($0) < key($1) : $0.node < $1.node }
    }

    /// The routing part of `stoq status`.
    public func status() -> [String: Any] {
        let c = stats
        let report = lock.withLock { matrix.predictionReport() }
        func rounded(_ x: Double) -> Double { (x * 100).rounded() / 100 }
        var document: [String: Any] = [
            "id": selfID.description,
            "known_nodes": knownNodeCount,
            "gossip": ["sent": c.gossipSent, "received": c.gossipReceived, "rejected": c.gossipRejected],
            "measurements": c.measurements,
            "vivaldi_median_error": rounded(report.vivaldiMedianRelativeError),
            "nodes": table().map { e -> [String: Any] in
                var entry: [String: Any] = [
                    "id": e.node.description, "hops": e.hops, "load": rounded(e.load), "age_s": rounded(e.ageSeconds),
                    "state": e.isDown ? "down" : "up",
                ]
                if let m = e.measuredRTTMilliseconds { entry["rtt_ms"] = rounded(m) }
                if let p = e.predictedRTTMilliseconds { entry["predicted_rtt_ms"] = rounded(p) }
                return entry
            },
        ]
        if let security {
            let s = security.stats
            document["signed"] = [
                "adverts_signed": s.signed, "signature_checks": s.signatureChecks, "bad_signatures": s.badSignatures,
                "chain_verifications": s.chainVerifications, "certificate_cache_hits": s.cacheHits,
                "certificates_refused": s.certificatesRefused, "certificates_cached": security.cachedCertificates,
            ]
        }
        return document
    }

    // MARK: Running

    private var runner: Task<Void, Never>?
    private var exchanging = Set<ObjectIdentifier>()
    private var stopped = false

    /// Publishes snapshots every update interval and gossips with `peers`' connections every
    /// gossip interval, until ``stop()`` (or cancellation).
    /// - Parameter localLoad: this node's load now (0 idle ... 1 saturated), announced in gossip.
    public func run(peers: PeerSet, localLoad: (@Sendable () -> Double)? = nil) async {
        let task = Task {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    while !Task.isCancelled {
                        if let localLoad { self.setLocalLoad(localLoad()) }
                        let wait = self.tick()
                        try? await Task.sleep(for: max(.milliseconds(1), min(wait, self.updateInterval)))
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await self.gossipRound(peers: peers)
                        try? await Task.sleep(for: self.gossipInterval)
                    }
                }
            }
        }
        let alreadyStopped = lock.withLock { () -> Bool in
            runner = task
            return stopped
        }
        if alreadyStopped { task.cancel() }
        await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
    }

    /// Stops ``run(peers:localLoad:)``.
    public func stop() {
        let task = lock.withLock { () -> Task<Void, Never>? in
            stopped = true
            return runner
        }
        task?.cancel()
    }

    /// Measures `clients` now (each `rounds` PING/PONGs, then one gossip exchange) and publishes a
    /// snapshot: what a one-shot client (`stoq get --peers`) knows before it ranks its sources.
    /// A peer that does not answer within `timeout` is left unmeasured (it then ranks last).
    public func measure(_ clients: [PeerClient], rounds: Int = 3, timeout: Duration = .seconds(1)) async {
        await withDiscardingTaskGroup { group in
            for client in clients {
                guard client.authenticatedPeer != nil else { continue }  // relayed: not a link of ours
                group.addTask {
                    _ = await withDeadline(timeout) { () async -> Bool in
                        let address = PeerAddress(host: client.connection.remoteAddress.ipAddress ?? "::", port: client.connection.remoteAddress.port ?? 0)
                        for _ in 0 ..< rounds {
                            guard let (rtt, pong) = try? await client.probe() else { return false }
                            self.handleProbe(peer: address, nodeID: client.authenticatedPeer, rtt: rtt, pong: pong)
                        }
                        _ = try? await self.exchange(with: client)
                        return true
                    }
                }
            }
        }
        publishNow()
    }

    /// The router's ranking as a fetch preference: each source that is a ``PeerChunkSource`` costs what
    /// ``rankSources(_:size:weights:)`` says for its peer (by the node id its handshake proved);
    /// other sources cost `.infinity`. A fetch asks its sources directly, so where the cheapest
    /// route is relayed the source costs its direct link instead (``directCost(to:size:weights:)``).
    public func sourcePreference(weights: RouteCostWeights = RouteCostWeights()) -> SourcePreference {
        SourcePreference { sources, chunkSize in
            let ids = sources.map { ($0 as? any PeerChunkSource)?.authenticatedPeer.map(RoutingNodeID.init) }
            let ranked = self.rankSources(ids.compactMap { $0 }, size: chunkSize, weights: weights)
            var cost = [RoutingNodeID: Double]()
            for r in ranked {
                let direct = r.route.map { $0.isDirect ? $0.cost : self.directCost(to: r.node, size: chunkSize, weights: weights) ?? r.cost }
                cost[r.node] = Double(direct ?? r.cost)
            }
            return ids.map { id in id.flatMap { cost[$0] } ?? .infinity }
        }
    }

    /// The cost of the direct link to `node` (measured, else predicted) on the published snapshot;
    /// nil when the node is unknown or carries no routes.
    public func directCost(to node: RoutingNodeID, size: Int, weights: RouteCostWeights = RouteCostWeights()) -> Float? {
        guard let snapshot else { return nil }
        var engine = RouteQueryEngine()
        return engine.bestSingleRelayRoute(in: snapshot, from: selfID, to: node, candidates: [], size: size, weights: weights)?.cost
    }

    /// Exchanges gossip once with every peer `peers` holds a connection to (in parallel).
    /// An exchange that takes longer than ``exchangeTimeout`` is abandoned (a silent peer cannot
    /// hold the next round), and a peer is skipped while its abandoned exchange still waits, so a
    /// silent peer holds at most one.
    public func gossipRound(peers: PeerSet) async {
        let clients = await peers.connectedClients
        let timeout = exchangeTimeout
        await withDiscardingTaskGroup { group in
            for client in clients {
                let key = ObjectIdentifier(client)
                guard lock.withLock({ exchanging.insert(key).inserted }) else { continue }
                group.addTask {
                    let finished = await withDeadline(timeout) { () async -> Bool in
                        defer { _ = self.lock.withLock { self.exchanging.remove(key) } }
                        do {
                            try await self.exchange(with: client)
                        } catch {
                            self.logger.debug("gossip exchange failed", metadata: ["peer": "\(client.name)", "error": "\(error)"])
                        }
                        return true
                    }
                    if finished == nil {
                        self.logger.debug("gossip exchange abandoned after \(timeout)", metadata: ["peer": "\(client.name)"])
                    }
                }
            }
        }
    }

    /// How long one gossip exchange may take: the gossip interval, within 1 ... 3 s (an exchange
    /// is one round trip of a few kilobytes).
    public var exchangeTimeout: Duration { min(.seconds(3), max(.seconds(1), gossipInterval)) }

    /// One exchange: sends this node's view to `client`'s peer and applies the view it answers.
    @discardableResult
    public func exchange(with client: PeerClient) async throws -> RoutingGossipOutcome {
        if security != nil { return try await exchangeAdverts(with: client) }
        let answer: RoutingGossipMessage
        do {
            noteSent()
            answer = try await client.exchangeGossip(makeGossip())
        } catch let error as NodeError where error.code == .refused {
            reject()
            throw error
        }
        return try handleGossip(answer, from: client.authenticatedPeer)
    }

    // MARK: Conversion between the wire and the routing module

    static func wire(_ g: RoutingGossip) -> RoutingGossipMessage {
        RoutingGossipMessage(
            sender: g.sender.rawValue,
            nodes: g.nodes.prefix(RoutingGossipMessage.maxNodeAdverts).map { n in
                .init(
                    node: n.node.rawValue, version: n.version, hops: n.hops, region: n.region, latitude: n.geo.latitude,
                    longitude: n.geo.longitude, coordinate: n.coordinate.vector, height: n.coordinate.height, error: n.coordinate.error,
                    load: n.load, bandwidthBitsPerSecond: n.bandwidthBitsPerSecond, ageMilliseconds: n.ageMilliseconds)
            },
            links: g.links.prefix(RoutingGossipMessage.maxLinkAdverts).map { l in
                .init(from: l.from.rawValue, to: l.to.rawValue, version: l.version, rttMilliseconds: l.rttMilliseconds,
                      bandwidthBitsPerSecond: l.bandwidthBitsPerSecond)
            })
    }

    static func routing(_ m: RoutingGossipMessage) -> RoutingGossip {
        RoutingGossip(
            sender: RoutingNodeID(m.sender),
            nodes: m.nodes.map { n in
                RoutingNodeAdvert(
                    node: RoutingNodeID(n.node), version: n.version, hops: n.hops, region: n.region,
                    geo: GeoCoordinate(latitude: n.latitude, longitude: n.longitude),
                    coordinate: VivaldiCoordinate(vector: n.coordinate, height: n.height, error: n.error), load: n.load,
                    bandwidthBitsPerSecond: n.bandwidthBitsPerSecond, ageMilliseconds: n.ageMilliseconds)
            },
            links: m.links.map { l in
                RoutingLinkAdvert(
                    from: RoutingNodeID(l.from), to: RoutingNodeID(l.to), version: l.version, rttMilliseconds: l.rttMilliseconds,
                    bandwidthBitsPerSecond: l.bandwidthBitsPerSecond)
            })
    }
}

extension NodeRouter: PeerProbeObserver {
    /// Feeds an answered probe (see ``handleProbe(peer:nodeID:rtt:pong:)``).
    public func probeAnswered(peer: PeerAddress, nodeID: NodeID?, rtt: Duration, pong: STOQMessage.Pong) {
        handleProbe(peer: peer, nodeID: nodeID, rtt: rtt, pong: pong)
    }

    /// Feeds a change of state (see ``handlePeerState(peer:isUp:)``).
    public func peerStateChanged(peer: PeerAddress, isUp: Bool) {
        handlePeerState(peer: peer, isUp: isUp)
    }
}

/// Answers ROUTING_GOSSIP (0x11) requests: applies the asker's view (only if it is the asker's
/// own, as its handshake proved) and answers with this node's view. A malformed or forged
/// message is answered with an ERROR frame saying why, and changes nothing.
struct RoutingService: NodeService {
    let router: NodeRouter
    var name: String { "routing" }
    var frameTypes: ClosedRange<UInt64> { STOQMessage.Types.routingGossip.rawValue ... STOQMessage.Types.routingGossip.rawValue }
    var maximumRequestLength: Int { RoutingGossipMessage.maxPayloadLength }

    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let reply: STOQMessage
        do {
            guard case .routingGossip(let gossip)? = try STOQMessage.decode(request) else {
                throw NodeError(.protocolViolation, "not a routing gossip frame")
            }
            try router.handleGossip(gossip, from: connection.peerNodeID)
            reply = .routingGossip(router.makeGossip())
            router.noteSent()
        } catch let error as WireError {
            router.reject()
            reply = .error(code: ChunkErrorCode.badRequest, message: "malformed routing gossip: \(error)")
        } catch {
            reply = .error(code: ChunkErrorCode.badRequest, message: "\(error)")
        }
        do {
            try await stream.write(reply.encoded())
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }
}

extension PeerClient {
    /// Sends this node's routing view and returns the peer's.
    /// - Throws: ``NodeError`` `.refused` when the peer refuses it (with its reason),
    ///   `.protocolViolation` for another answer; wire and transport errors as they are.
    public func exchangeGossip(_ gossip: RoutingGossipMessage) async throws -> RoutingGossipMessage {
        guard relayedTarget == nil else {
            // The target would see the relay as the sender, and we could not tell whose view answers.
            throw NodeError(.invalidArgument, "routing gossip is exchanged only with directly connected peers, not through a relay (\(name))")
        }
        let stream = try await connection.openBidirectionalStream(priority: .control)
        try await stream.write(STOQMessage.routingGossip(gossip).encoded())
        try await stream.finish()
        let limit = RoutingGossipMessage.maxPayloadLength + 16
        var decoder = FrameDecoder(maximumPayloadLength: limit)
        decoder.handle(bytes: try await stream.readAll(limit: limit))
        guard let frame = try decoder.pollFrame() else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering routing gossip")
        }
        switch try STOQMessage.decode(frame) {
        case .routingGossip(let answer)?: return answer
        case .error(_, let message)?: throw NodeError(.refused, "\(name) refused routing gossip: \(message)")
        default: throw NodeError(.protocolViolation, "\(name) answered routing gossip with \(frame.type)")
        }
    }
}
