import Foundation
import Logging
import NIOCore
import STOQIdentity
import STOQNode
import STOQTransport
import STOQWire

/// Runs a ``KademliaNode`` over real QUIC: the edge adapter of the sans-IO DHT.
///
/// Incoming requests arrive through ``NexusService`` (a ``NodeService`` on the node's streams);
/// outgoing requests go over the node's ``PeerSet`` connections, one request per bidirectional
/// stream. The clock is Unix time in milliseconds, read here and passed to the state machine as
/// `now` (name records carry wall-clock expiry times); a timer task calls
/// ``KademliaNode/handleTimeout(now:)`` when ``KademliaNode/pollTimeout()`` is due, which drives
/// request timeouts, expiry, republish and bucket refresh.
///
/// A driver is created detached and then ``attach(record:peers:)``ed once the node's endpoint is
/// bound (its port and identity are known only then). A driver whose record has no addresses is
/// a client: it can look up and store, and peers do not add it to their tables.
public actor NexusDHT {
    /// What finished.
    enum Completion: Sendable {
        case lookup(LookupResult)
        case stored([NexusID])
    }

    /// Counters for `stoq status` and benchmarks.
    public struct Counters: Sendable, Hashable {
        /// Requests answered for peers.
        public var served = 0
        /// Requests sent to peers.
        public var sent = 0
        /// Requests whose peer could not be reached or answered badly.
        public var unreachable = 0
        /// Requests refused (sender id not the authenticated peer, malformed).
        public var refused = 0
        /// Replies received to this node's requests.
        public var answered = 0
    }

    /// The DHT parameters.
    public nonisolated let configuration: DHTConfiguration
    private let validator: any DHTRecordValidator
    private let clock: @Sendable () -> UInt64
    private let logger: Logger
    private var node: KademliaNode?
    private var peers: PeerSet?
    private var waiters: [LookupID: CheckedContinuation<Completion, Never>] = [:]
    /// Operations a caller will wait for after another one (their completion is kept if it comes first).
    private var expectedLater: Set<LookupID> = []
    private var finishedEarly: [LookupID: Completion] = [:]
    private var bootstrapWaiters: [CheckedContinuation<Void, Never>] = []
    private var timer: Task<Void, Never>?
    private var wake: CheckedContinuation<Void, Never>?
    private var lastFailure: String?
    /// Request counters.
    public private(set) var counters = Counters()

    /// Creates a driver (not yet attached).
    /// - Parameters:
    ///   - configuration: DHT parameters.
    ///   - validator: which values this node stores (default: signed name records and signed node
    ///     records, see ``NexusRecordValidator``).
    ///   - clock: Unix time in ms (tests may inject another).
    public init(
        configuration: DHTConfiguration = DHTConfiguration(), validator: any DHTRecordValidator = NexusRecordValidator(),
        clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) },
        logger: Logger = Logger(label: "stoq.nexus.dht")
    ) {
        self.configuration = configuration
        self.validator = validator
        self.clock = clock
        self.logger = logger
    }

    /// Starts the DHT as `record`, sending through `peers`, and starts its timer.
    public func attach(record: NodeRecord, peers: PeerSet) {
        // Called once, by Node.start; no peer input leads here.
        precondition(node == nil, "NexusDHT.attach called twice")
        let seed = record.id.w0 ^ UInt64(truncatingIfNeeded: clock())
        node = KademliaNode(record: record, config: configuration, validator: validator, seed: seed, now: clock())
        self.peers = peers
        timer = Task { [weak self] in
            while !Task.isCancelled, let self, await self.tick() {}
        }
    }

    /// This node's record (nil before ``attach(record:peers:)``).
    public var record: NodeRecord? { node?.record }
    /// Contacts in the routing table.
    public var contactCount: Int { node?.table.count ?? 0 }
    /// Values held for the network.
    public var storedValueCount: Int { node?.storedValueCount ?? 0 }
    /// Provider keys held for the network.
    public var providerKeyCount: Int { node?.providerKeyCount ?? 0 }

    /// Stops the timer and completes waiting operations with what they have.
    public func stop() {
        timer?.cancel()
        timer = nil
        wake?.resume()
        wake = nil
        for (_, w) in waiters { w.resume(returning: .stored([])) }
        waiters.removeAll()
        for w in bootstrapWaiters { w.resume() }
        bootstrapWaiters.removeAll()
    }

    // MARK: - Operations

    /// Joins the network through `seeds`: dials each to learn its authenticated node id, then runs
    /// the Kademlia bootstrap (own-id lookup and bucket refreshes).
    /// - Returns: the number of contacts in the routing table afterwards.
    /// - Throws: ``NexusError`` `.noHealthyNode` if no seed answered.
    @discardableResult
    public func join(seeds: [PeerAddress]) async throws(NexusError) -> Int {
        let records = await contact(seeds)
        guard !records.isEmpty || seeds.isEmpty else {
            throw NexusError(.noHealthyNode, "none of the \(seeds.count) bootstrap nodes (\(seeds.map(\.description).joined(separator: ", "))) answered; check the addresses and that they run with --dht")
        }
        // A seed that answered the handshake but none of the bootstrap's requests in time is
        // asked again, up to three rounds: on a starved machine (two busy loops beside a test
        // suite) one round of 1 s request timeouts can pass without an answer from a live seed.
        for _ in 0..<Self.bootstrapRounds {
            guard node != nil else { throw Self.detached }
            let answeredBefore = counters.answered
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                bootstrapWaiters.append(c)
                node!.bootstrap(seeds: records, now: clock())
                drain()
            }
            if seeds.isEmpty || counters.answered != answeredBefore { return contactCount }
        }
        throw NexusError(
            .noHealthyNode,
            "no bootstrap node answered a DHT request in \(Self.bootstrapRounds) rounds: \(lastFailure ?? "no answer"); check that they run with --dht")
    }

    /// Bootstrap rounds ``join(seeds:)`` tries before it gives up on seeds that never answer.
    static let bootstrapRounds = 3

    /// Dials `addresses` and returns the records of those that answered (id from the handshake).
    public func contact(_ addresses: [PeerAddress]) async -> [NodeRecord] {
        guard let peers else { return [] }
        var out: [NodeRecord] = []
        for address in addresses {
            do {
                let client = try await peers.client(for: address)
                guard let id = client.connection.peerNodeID, let nid = NexusID(bytes: id.bytes) else { continue }
                out.append(NodeRecord(id: nid, addresses: [try NexusAddress(address)]))
            } catch {
                logger.info("seed unreachable", metadata: ["seed": "\(address)", "error": "\(error)"])
            }
        }
        return out
    }

    /// Runs an iterative lookup and returns its result.
    public func lookup(_ kind: LookupKind, target: NexusID) async throws(NexusError) -> LookupResult {
        guard node != nil else { throw Self.detached }
        let completion = await wait(for: node!.startLookup(kind, target: target, now: clock()))
        guard case .lookup(let result) = completion else {
            throw NexusError(.noHealthyNode, "the DHT stopped before the lookup finished")
        }
        return result
    }

    /// Stores `value` under `key` on the closest nodes (and republishes it from here).
    /// - Returns: the nodes that acknowledged the store.
    public func put(key: NexusID, value: [UInt8]) async throws(NexusError) -> [NexusID] {
        guard node != nil else { throw Self.detached }
        let lid = try node!.put(key: key, value: value, now: clock())
        let completion = await wait(for: lid)
        guard case .stored(let on) = completion else { return [] }
        return on
    }

    /// Announces this node as a provider of `key` (and re-announces it periodically).
    /// - Returns: the nodes that acknowledged.
    public func provide(key: NexusID) async throws(NexusError) -> [NexusID] {
        guard node != nil else { throw Self.detached }
        let completion = await wait(for: node!.provide(key: key, now: clock()))
        guard case .stored(let on) = completion else { return [] }
        return on
    }

    /// Withdraws this node's provider entry for `key` from the closest nodes (ADD_PROVIDER with
    /// TTL 0) and stops re-announcing it.
    /// - Returns: the nodes that acknowledged the withdrawal.
    @discardableResult
    public func withdraw(key: NexusID) async throws(NexusError) -> [NexusID] {
        guard node != nil else { throw Self.detached }
        let completion = await wait(for: node!.withdraw(key: key, now: clock()))
        guard case .stored(let on) = completion else { return [] }
        return on
    }

    /// Keys this node announces itself a provider of.
    public var providedKeys: [NexusID] { node?.providedKeys ?? [] }

    /// Replaces this node's record (a new address, region or certificate; the same id) and
    /// announces every provided key again with it.
    /// - Returns: per provided key, the nodes that stored the new entry.
    @discardableResult
    public func updateRecord(_ record: NodeRecord) async throws(NexusError) -> [(key: NexusID, storedOn: [NexusID])] {
        guard node != nil else { throw Self.detached }
        guard record.id == node!.record.id else {
            throw NexusError(.malformedInput, "a node record update must keep the node's id (\(node!.record.id.shortHex)…); a new key is a new node")
        }
        let keys = node!.providedKeys
        let lids = node!.updateRecord(record, now: clock())
        expectedLater.formUnion(lids)
        var out: [(key: NexusID, storedOn: [NexusID])] = []
        for (key, lid) in zip(keys, lids) {
            expectedLater.remove(lid)
            let completion = await wait(for: lid)
            if case .stored(let on) = completion { out.append((key, on)) } else { out.append((key, [])) }
        }
        return out
    }

    /// Performs the actions an operation queued and waits for it to finish. The state machine's
    /// outbox is drained only here, after the waiter is registered, so no completion is missed.
    private func wait(for lid: LookupID) async -> Completion {
        if let done = finishedEarly.removeValue(forKey: lid) { return done }
        return await withCheckedContinuation { (c: CheckedContinuation<Completion, Never>) in
            waiters[lid] = c
            drain()
        }
    }

    /// Hands a completion to its waiter, or keeps it for the waiter to come (several operations
    /// started at once, e.g. by ``updateRecord(_:)``, are awaited one after another).
    private func complete(_ lid: LookupID, _ completion: Completion) {
        if let waiter = waiters.removeValue(forKey: lid) {
            waiter.resume(returning: completion)
        } else if expectedLater.remove(lid) != nil {
            finishedEarly[lid] = completion
        }
    }

    private static var detached: NexusError {
        NexusError(.noHealthyNode, "the DHT is not attached to a running node yet")
    }

    // MARK: - Input from the network

    /// Answers a request from an authenticated peer; nil when there is nothing to answer.
    func answer(_ message: DHTMessage, from sender: NodeRecord) -> DHTMessage? {
        guard node != nil, message.isRequest else { return nil }
        counters.served += 1
        node!.handle(message, from: sender, now: clock())
        return drain(replyTo: message.rpc, of: sender.id)
    }

    /// Counts a refused request.
    func refused() { counters.refused += 1 }

    /// Feeds a reply.
    func deliver(_ reply: DHTMessage, from peer: NodeRecord) {
        guard node != nil else { return }
        counters.answered += 1
        node!.handle(reply, from: peer, now: clock())
        drain()
    }

    /// Fails a request whose peer could not be reached.
    func unreachable(rpc: UInt64, because reason: String) {
        guard node != nil else { return }
        lastFailure = reason
        counters.unreachable += 1
        node!.handleUnreachable(rpc: rpc, now: clock())
        drain()
    }

    // MARK: - Output

    /// Performs the state machine's actions. A response to `rpc` for `requester` (the request being
    /// answered) is returned instead of sent: it goes back on the request's own stream.
    @discardableResult
    private func drain(replyTo rpc: UInt64? = nil, of requester: NexusID? = nil) -> DHTMessage? {
        var reply: DHTMessage?
        while let action = node?.pollAction() {
            switch action {
            case .send(let to, let message):
                if !message.isRequest {
                    if message.rpc == rpc, to.id == requester { reply = message }
                    continue  // replies only travel on their request's stream
                }
                guard let peers, let me = node?.record else { continue }
                counters.sent += 1
                let envelope = DHTRequestEnvelope(sender: me, message: message)
                Task { await self.exchange(envelope, with: to, peers: peers) }
            case .lookupFinished(let lid, let result):
                complete(lid, .lookup(result))
            case .storeFinished(let lid, _, let on):
                complete(lid, .stored(on))
            case .bootstrapFinished:
                let ws = bootstrapWaiters
                bootstrapWaiters.removeAll()
                for w in ws { w.resume() }
            }
        }
        wake?.resume()
        wake = nil
        return reply
    }

    /// Sends one request on its own stream and feeds back the reply or the failure.
    private nonisolated func exchange(_ envelope: DHTRequestEnvelope, with peer: NodeRecord, peers: PeerSet) async {
        let rpc = envelope.message.rpc
        guard let address = peer.addresses.first(where: \.isDialable)?.peerAddress else {
            await unreachable(rpc: rpc, because: "\(peer) has no address a node could listen on (port 0, unspecified or multicast)")
            return
        }
        do {
            let client = try await peers.client(for: address)
            guard let id = client.connection.peerNodeID, id.bytes == peer.id.bytes else {
                throw NexusError(.forgedRecord, "\(address) is not node \(peer.id.shortHex) (its certificate names another key)")
            }
            let reply = try await Self.request(envelope, on: client.connection)
            await deliver(reply, from: peer)
        } catch let error as NexusError {
            logger.debug("DHT request failed", metadata: ["peer": "\(address)", "error": "\(error)"])
            await unreachable(rpc: rpc, because: "\(address): \(error.reason)")
        } catch {
            logger.debug("DHT peer unreachable", metadata: ["peer": "\(address)", "error": "\(error)"])
            await peers.drop(address)
            await unreachable(rpc: rpc, because: "\(address): \(error)")
        }
    }

    /// One request/response exchange on a new stream of `connection`.
    public static func request(_ envelope: DHTRequestEnvelope, on connection: Connection) async throws -> DHTMessage {
        let stream = try await connection.openBidirectionalStream(priority: .control)
        try await stream.write(nexusFrame(NexusFrameType.dhtRequest, envelope.encode()))
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: DHTMessage.maxMessageSize)
        decoder.handle(bytes: try await stream.readAll(limit: DHTMessage.maxMessageSize + 16))
        guard let frame = try decoder.pollFrame() else {
            throw NexusError(.malformedInput, "the peer closed the stream without a DHT answer")
        }
        var payload = frame.payload
        let bytes = payload.readBytes(length: payload.readableBytes) ?? []
        switch frame.type.rawValue {
        case NexusFrameType.dhtResponse:
            return try DHTMessage.decode(bytes)
        case NexusFrameType.error:
            throw NexusError(.malformedInput, "the peer refused the DHT request: \(String(decoding: bytes, as: UTF8.self))")
        default:
            throw NexusError(.malformedInput, "the peer answered a DHT request with frame type \(frame.type)")
        }
    }

    // MARK: - Timer

    /// Runs due timers, then sleeps until the next deadline or until an input changes it.
    /// - Returns: false once stopped.
    private func tick() async -> Bool {
        guard timer != nil, node != nil else { return false }
        let now = clock()
        if node!.pollTimeout() <= now {
            node!.handleTimeout(now: now)
            drain()
        }
        let wait = min(node!.pollTimeout() &- min(node!.pollTimeout(), clock()), 1_000)
        guard wait > 0 else { return true }
        // Sleep in a child task; `drain` (a new request may set an earlier deadline) wakes us early.
        let sleeper = Task { try? await Task.sleep(for: .milliseconds(Int(wait))) ; self.wakeUp() }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in wake = c }
        sleeper.cancel()
        return timer != nil
    }

    private func wakeUp() {
        wake?.resume()
        wake = nil
    }

    /// A status summary.
    public func status() -> [String: any Sendable] {
        [
            "node_id": node?.id.hex ?? "",
            "contacts": contactCount,
            "stored_values": storedValueCount,
            "provider_keys": providerKeyCount,
            "requests_served": counters.served,
            "requests_sent": counters.sent,
            "unreachable": counters.unreachable,
            "refused": counters.refused,
            "answered": counters.answered,
        ]
    }
}

/// The Nexus DHT ``NodeService``: answers DHT requests (frame types 0x40–0x4f) on a node's streams
/// with the node's ``NexusDHT``.
public struct NexusService: NodeService {
    /// The DHT it answers for.
    public let dht: NexusDHT

    /// Wraps a DHT driver.
    public init(dht: NexusDHT) { self.dht = dht }

    /// `nexus`.
    public var name: String { "nexus" }
    /// The DHT part of Nexus's range, 0x40–0x4f.
    public var frameTypes: ClosedRange<UInt64> { NexusFrameType.dhtRange }
    /// A DHT request envelope at most.
    public var maximumRequestLength: Int { DHTRequestEnvelope.maxEncodedSize }

    /// Answers one request: checks that the sender speaks for itself (its record's id is the node
    /// id the handshake authenticated), then lets the state machine answer.
    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        do {
            guard request.type.rawValue == NexusFrameType.dhtRequest else {
                throw NexusError(.malformedInput, "unknown Nexus request type \(request.type)")
            }
            var payload = request.payload
            let envelope = try DHTRequestEnvelope.decode(payload.readBytes(length: payload.readableBytes) ?? [])
            guard let peer = connection.peerNodeID, peer.bytes == envelope.sender.id.bytes else {
                throw NexusError(.forgedRecord, "the request claims to come from node \(envelope.sender.id.shortHex), but the connection authenticated another key")
            }
            guard let reply = await dht.answer(envelope.message, from: envelope.sender) else {
                throw NexusError(.malformedInput, "not a DHT request this node answers (or the DHT is not running)")
            }
            try await stream.write(nexusFrame(NexusFrameType.dhtResponse, reply.encode()))
            try await stream.finish()
        } catch let error as NexusError {
            await dht.refused()
            _ = try? await stream.write(nexusFrame(NexusFrameType.error, Array(error.reason.utf8.prefix(1024))))
            _ = try? await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    /// The DHT's counters and table size.
    public func status() async -> [String: any Sendable]? { await dht.status() }
}
