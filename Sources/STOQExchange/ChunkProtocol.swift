import Crypto
import Foundation
import Logging
import NIOCore
import STOQAccess
import STOQContent
import STOQEdge
import STOQIdentity
import STOQTransport
import STOQWire

/// Limits of the chunk protocol.
public enum ChunkProtocol {
    /// The largest request frame a server reads.
    public static let maximumRequestLength = 4096
    /// The largest response body a client accepts (a data chunk is ≤ 1 MiB plus AEAD overhead;
    /// manifests can be larger).
    public static let maximumChunkLength = 16 << 20
}

/// Where a ``ChunkServer`` gets the chunks it serves: a local store, or an edge cache that pulls
/// misses from upstream.
public protocol ChunkProvider: Sendable {
    /// The chunk's verified bytes, or `nil` when this node cannot supply it.
    func chunk(_ id: ChunkID) async throws -> [UInt8]?
    /// The same, for a known reader (one connection): an edge follows each reader's position in
    /// a manifest to read ahead, and notes the progress of an upstream fill on `fill` (the server
    /// tells the requester the source is alive while it does). Defaults to ``chunk(_:)``.
    func chunk(_ id: ChunkID, reader: ObjectIdentifier, fill: FillProgress) async throws -> [UInt8]?
    /// Which data chunks of `root` this node can supply (the answer to WANT). Defaults to all.
    func availability(of root: ContentID) async throws -> ChunkAvailability
}

extension ChunkProvider {
    /// Ignores the reader.
    public func chunk(_ id: ChunkID, reader: ObjectIdentifier, fill: FillProgress) async throws -> [UInt8]? { try await chunk(id) }
    /// Claims every chunk.
    public func availability(of root: ContentID) async throws -> ChunkAvailability { .all }
}

/// Serves what a ``ChunkStore`` holds.
public struct StoreChunkProvider: ChunkProvider {
    /// The store.
    public let store: any ChunkStore
    /// Wraps a store.
    public init(store: any ChunkStore) { self.store = store }
    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        do {
            return try store.read(id)
        } catch let error as ContentError where error.code == .notFound {
            return nil
        }
    }
}

/// Serves chunks over `stoq/1`: one `GET_CHUNK` per bidirectional stream, answered by a
/// `CHUNK_HEADER` frame and the raw bytes until FIN; `PING` is answered with `PONG`.
///
/// Stores hold ciphertext verified by id, so a server never needs a reader key. A malformed
/// request resets its stream and nothing else: the connection and the server keep serving.
/// With ``ServeThrottleSettings`` limits, response bytes pass a ``ServeThrottle`` (per-connection
/// token buckets, interactive before bulk) so one bulk client cannot starve the others.
public final class ChunkServer: StreamServer {
    /// Where chunks come from.
    public let provider: any ChunkProvider
    private let logger: Logger
    private let counters = ServerCounters()
    private let status: (@Sendable () async -> String)?
    /// Services of the layers above that answer their own frame types.
    public let services: [any NodeService]
    private let requestLimit: Int
    private let metrics: NodeMetrics?
    private let gate: ServeGate?
    /// Responses being sent now.
    public let transfers = TransferTable()
    /// Transfers per peer and content (what `stoq status` lists and the info log reports).
    public let tracker: TransferTracker
    /// Peers' names (certificate common name and short node id).
    public let peerNames: PeerNames
    /// What PONG announces (nil: ``ProbeLoad/init(activeTransfers:bandwidthBytesPerSecond:)``).
    private let probeLoad: (@Sendable (Int) -> ProbeLoad)?
    /// What each peer connection may hold of this server (requests read, responses unread).
    public let limits: PeerLimits
    /// Frame types answered on a connection whose peer presented no certificate (nil: no
    /// restriction; a node sets ``AnonymousReaders/allowedFrameTypes``). Others get ERROR 5.
    public let anonymousRequests: Set<UInt64>?
    /// Who may read STATUS (and the grants each connection presented); nil: every certificate.
    public let access: AccessPolicy?
    /// Told of every STATUS answered: the peer's node id, the grant that allowed it (nil: a role
    /// or no policy) and the document's length (a node's audit trail records it).
    private let statusAnswered: (@Sendable (_ peer: NodeID?, _ grant: [UInt8]?, _ bytes: Int) -> Void)?
    /// With `--private-reads`: who may read content that is not public (nil: every peer reads every chunk).
    public let readGate: ReadGate?

    /// Creates a server for a provider.
    /// - Parameters:
    ///   - status: answers STATUS requests with a JSON document (nil: refuse them).
    ///   - services: handlers for request types outside STOQ's own range (see ``NodeService``).
    ///   - metrics: where to count connections, requests, bytes and serve times.
    ///   - throttle: upload sharing (nil or no limits: unthrottled).
    ///   - probeLoad: the load and spare bandwidth PONG announces, from the number of responses
    ///     being sent (nil: load from that number alone, bandwidth unknown).
    ///   - limits: the bounds each peer connection is held to (``PeerLimits``).
    ///   - statusAnswered: told of every STATUS answered (peer, grant id, document bytes).
    public init(
        provider: any ChunkProvider, status: (@Sendable () async -> String)? = nil, services: [any NodeService] = [],
        metrics: NodeMetrics? = nil, throttle: ServeThrottleSettings? = nil,
        probeLoad: (@Sendable (Int) -> ProbeLoad)? = nil, limits: PeerLimits = PeerLimits(),
        anonymousRequests: Set<UInt64>? = nil, logger: Logger = Logger(label: "stoq.chunks"),
        tracker: TransferTracker = TransferTracker(), peerNames: PeerNames = PeerNames(), access: AccessPolicy? = nil,
        statusAnswered: (@Sendable (_ peer: NodeID?, _ grant: [UInt8]?, _ bytes: Int) -> Void)? = nil,
        readGate: ReadGate? = nil
    ) {
        self.access = access
        self.statusAnswered = statusAnswered
        self.readGate = readGate
        self.tracker = tracker
        self.peerNames = peerNames
        self.anonymousRequests = anonymousRequests
        self.limits = limits
        self.probeLoad = probeLoad
        self.provider = provider
        self.status = status
        self.services = services
        self.requestLimit = services.map(\.maximumRequestLength).reduce(ChunkProtocol.maximumRequestLength, max)
        self.metrics = metrics
        self.gate = throttle.flatMap { $0.isActive ? ServeGate(settings: $0) : nil }
        self.logger = logger
    }

    /// Creates a server for a store.
    public convenience init(
        store: any ChunkStore, status: (@Sendable () async -> String)? = nil, services: [any NodeService] = [],
        metrics: NodeMetrics? = nil, throttle: ServeThrottleSettings? = nil,
        probeLoad: (@Sendable (Int) -> ProbeLoad)? = nil, limits: PeerLimits = PeerLimits(),
        anonymousRequests: Set<UInt64>? = nil, logger: Logger = Logger(label: "stoq.chunks"),
        tracker: TransferTracker = TransferTracker(), peerNames: PeerNames = PeerNames(), access: AccessPolicy? = nil,
        statusAnswered: (@Sendable (_ peer: NodeID?, _ grant: [UInt8]?, _ bytes: Int) -> Void)? = nil,
        readGate: ReadGate? = nil
    ) {
        self.init(provider: StoreChunkProvider(store: store), status: status, services: services, metrics: metrics, throttle: throttle, probeLoad: probeLoad, limits: limits, anonymousRequests: anonymousRequests, logger: logger, tracker: tracker, peerNames: peerNames, access: access, statusAnswered: statusAnswered, readGate: readGate)
    }

    /// Bytes and requests served so far.
    public var served: (requests: Int, bytes: Int) { counters.value }

    /// Throttle counters of a connection (nil when serving is not throttled or it is unknown).
    public func throttleStats(of connection: Connection) async -> ServeThrottle<ObjectIdentifier>.ConnectionStats? {
        await gate?.stats(of: ObjectIdentifier(connection))
    }

    /// Response bytes the throttle granted so far, per class (empty when serving is not throttled).
    public func throttledBytes() async -> [ServePriority: Int] {
        await gate?.grantedBytes() ?? [:]
    }

    /// Serves a connection's streams, counting it while it is open, and holds the peer to
    /// ``limits``: at most ``PeerLimits/maxPendingRequests`` streams read their request at once
    /// (the others wait unread), a request late by ``PeerLimits/requestTimeoutMilliseconds`` and
    /// a response its peer stops reading are aborted.
    public func serve(connection: Connection) async {
        metrics?.connectionsAccepted.increment()
        metrics?.connectionsOpen.increment()
        let metrics = self.metrics
        _ = peerNames.label(of: connection)
        let guardian = ConnectionGuard(limits: limits, onAbort: { metrics?.request($0) })
        let watchdog = Task { await guardian.watch() }
        await withDiscardingTaskGroup { group in
            for await stream in connection.incomingStreams where stream.isBidirectional {
                await guardian.admitRequest(stream)
                group.addTask { await self.serve(stream: stream, on: connection, guardian: guardian) }
            }
        }
        watchdog.cancel()
        tracker.closed(ObjectIdentifier(connection))
        peerNames.closed(ObjectIdentifier(connection))
        await access?.closed(ObjectIdentifier(connection))
        readGate?.allowances.closed(ObjectIdentifier(connection))
        metrics?.connectionsOpen.decrement()
        await gate?.remove(connection: ObjectIdentifier(connection))
    }

    /// Answers one request stream: STOQ's own requests here, other types by the service that
    /// claims them. (Without ``serve(connection:)``'s watchdog: no request timeout.)
    public func serve(stream: QUICStream, on connection: Connection) async {
        let guardian = ConnectionGuard(limits: limits)
        await guardian.admitRequest(stream)
        await serve(stream: stream, on: connection, guardian: guardian)
    }

    /// The most bytes a request frame of `type` may declare: its service's limit, or 4 KiB.
    func requestLimit(for type: FrameType) -> Int {
        services.first(where: { $0.frameTypes.contains(type.rawValue) })?.maximumRequestLength ?? ChunkProtocol.maximumRequestLength
    }

    private func serve(stream: QUICStream, on connection: Connection, guardian: ConnectionGuard) async {
        var awaitingRequest = true
        defer { if awaitingRequest { guardian.requestEnded(stream.id) } }
        do {
            var decoder = FrameDecoder(maximumPayloadLength: requestLimit)
            var request: STOQMessage?
            // Each type's bound applies as soon as the frame's type and length are read.
            let limit: (FrameType) -> Int = { self.requestLimit(for: $0) }
            reading: for try await piece in stream {
                decoder.handle(bytes: piece)
                if let frame = try decoder.pollFrame(limit: limit) {
                    awaitingRequest = false
                    guardian.requestEnded(stream.id)
                    if let allowed = anonymousRequests, !allowed.contains(frame.type.rawValue), AnonymousReaders.isAnonymous(connection) {
                        metrics?.request("forbidden")
                        try await stream.write(STOQMessage.error(code: AnonymousReaders.forbiddenCode, message: AnonymousReaders.refusal(frame.type)).encoded())
                        try await stream.finish()
                        return
                    }
                    if let service = services.first(where: { $0.frameTypes.contains(frame.type.rawValue) }) {
                        metrics?.request(service.name)
                        await service.serve(request: frame, remaining: decoder.takeRemainingBytes(), stream: stream, connection: connection)
                        return
                    }
                    request = try STOQMessage.decode(frame)
                    break reading
                }
            }
            if awaitingRequest {
                awaitingRequest = false
                guardian.requestEnded(stream.id)
            }
            switch request {
            case .getChunk(let wireID, let offset, let length):
                metrics?.request("get_chunk")
                try await answer(chunk: ChunkID(bytes: wireID.bytes)!, offset: offset, length: length, on: stream, connection: connection, guardian: guardian)
            case .want(let wireID, _):
                metrics?.request("want")
                try await answerWant(wireID, on: stream, connection: connection)
            case .ping(let nonce, let sent):
                metrics?.request("ping")
                // A health probe measures the path, not the queue: answer ahead of bulk responses.
                await stream.setPriority(.control)
                let active = transfers.count
                let load = probeLoad?(active) ?? ProbeLoad(activeTransfers: active)
                let pong = STOQMessage.pong(.init(nonce: nonce, echoSentAtMicros: sent, loadPermille: load.loadPermille, bandwidthBytesPerSecond: load.bandwidthBytesPerSecond, activeTransfers: UInt64(active)))
                try await stream.write(pong.encoded())
                try await stream.finish()
            case .statusRequest:
                metrics?.request("status")
                // Issue 15: STATUS needs the status right (an operator's certificate or grant).
                let decision = await access?.check(.status, peer: connection.peerNodeID, connection: ObjectIdentifier(connection))
                if case .denied(let why) = decision {
                    metrics?.request("no_grant")
                    try await stream.write(STOQMessage.error(code: AccessPolicy.noGrantCode, message: String(why.prefix(1000))).encoded())
                    try await stream.finish()
                    break
                }
                let json = await status?() ?? "{}"
                try await stream.write(STOQMessage.status(json: json).encoded())
                try await stream.finish()
                if case .grant(let id) = decision {
                    statusAnswered?(connection.peerNodeID, id, json.utf8.count)
                } else {
                    statusAnswered?(connection.peerNodeID, nil, json.utf8.count)
                }
            case .relayOpen:
                metrics?.request("relay_refused")
                try await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: "this node does not relay; relaying needs a node with the relay role (stoq node --role relay)").encoded())
                try await stream.finish()
            case .none:
                metrics?.request("malformed")
                await stream.reset(code: ChunkErrorCode.badRequest)
            case .some(let other):
                metrics?.request("unexpected")
                try await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: "unexpected request \(other.frame().type)").encoded())
                try await stream.finish()
            }
        } catch let error as WireError {
            metrics?.request("malformed")
            logger.info("malformed request", metadata: ["error": "\(error)"])
            // Reset and STOP_SENDING: the peer stops sending the rest of an over-size request.
            await stream.abort(code: ChunkErrorCode.badRequest)
        } catch let error as STOQError where error.initiator == .local && error.code == .streamReset {
            logger.debug("request stream aborted", metadata: ["error": "\(error)"])
        } catch {
            logger.debug("request stream failed", metadata: ["error": "\(error)"])
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    /// Answers GET_CHUNK within the connection's response slots and byte budget: the response
    /// holds its slot from reading the chunk until the peer acknowledged every byte (or the
    /// watchdog aborted it), so a peer that does not read is back-pressured, then reset.
    private func answer(chunk id: ChunkID, offset: UInt64, length: UInt64, on stream: QUICStream, connection: Connection, guardian: ConnectionGuard) async throws {
        await guardian.acquireResponse(stream)
        defer { guardian.releaseResponse(stream.id) }
        if try await send(chunk: id, offset: offset, length: length, on: stream, connection: connection, guardian: guardian) {
            await stream.done()
        }
    }

    /// Reads and sends one chunk; true when a body went out (the slot then waits for its acknowledgement).
    private func send(chunk id: ChunkID, offset: UInt64, length: UInt64, on stream: QUICStream, connection: Connection, guardian: ConnectionGuard) async throws -> Bool {
        let started = ContinuousClock.now
        let reader = ObjectIdentifier(connection)
        // Issue 15: with --private-reads, content that is not public needs the read right.
        let readDecision = await readGate?.decide(id, peer: connection.peerNodeID, connection: reader)
        if case .denied(let why) = readDecision {
            metrics?.request("no_grant")
            try await stream.write(STOQMessage.error(code: AccessPolicy.noGrantCode, message: String(why.prefix(1000))).encoded())
            try await stream.finish()
            return false
        }
        let bytes: [UInt8]
        do {
            guard let found = try await withFillKeepalive(on: stream, { fill in try await provider.chunk(id, reader: reader, fill: fill) }) else {
                try await stream.write(STOQMessage.chunkHeader(status: .notFound, totalLength: 0, offset: 0, length: 0).encoded())
                try await stream.finish()
                return false
            }
            bytes = found
            if let readGate, let readDecision { readGate.learn(found, decision: readDecision, connection: reader) }
        } catch {
            logger.warning("cannot read chunk", metadata: ["chunk": "\(id.short)", "error": "\(error)"])
            try await stream.write(STOQMessage.chunkHeader(status: .internalError, totalLength: 0, offset: 0, length: 0).encoded())
            try await stream.finish()
            return false
        }
        let total = UInt64(bytes.count)
        guard offset <= total else {
            try await stream.write(STOQMessage.chunkHeader(status: .invalidRange, totalLength: total, offset: offset, length: 0).encoded())
            try await stream.finish()
            return false
        }
        let count = length == 0 ? total - offset : min(length, total - offset)
        let start = Int(offset), end = Int(offset + count)
        let header = STOQMessage.chunkHeader(status: .ok, totalLength: total, offset: offset, length: count).encoded()
        await guardian.reserve(stream, bytes: header.readableBytes + Int(count))
        let peer = peerNames.label(of: connection)
        let transfer = transfers.begin(chunk: id, peer: peer, bytes: Int(count))
        let tracked = tracker.beginServe(chunk: id, connection: reader, peer: peer)
        // The audit record names the grant the reader presented for this content (issue 15 item 7):
        // looked up once per transfer, not per chunk.
        if let access, let tracked, tracker.claimGrantCheck(tracked), let content = ContentID(tracker.content(of: tracked)),
           case .grant(let grant) = await access.check(.read, item: .content(content.manifest.bytes), peer: connection.peerNodeID, connection: reader) {
            tracker.setGrant(grant, for: tracked)
        }
        var completed = false
        metrics?.activeTransfers.increment()
        defer {
            transfers.end(transfer)
            tracker.end(tracked, completed: completed)
            metrics?.activeTransfers.decrement()
        }
        if let gate, count > 0 {
            let (response, priority) = await gate.enqueue(connection: ObjectIdentifier(connection), bytes: Int(count))
            transfers.setPriority(transfer, "\(priority)")
            do {
                try await stream.write(header)
                var sent = start
                while sent < end {
                    if await !gate.hasGrant(response) { metrics?.throttleWait("\(priority)") }
                    let n = await gate.take(response)
                    guard n > 0 else { throw NodeError(.unavailable, "response cancelled") }
                    try await stream.write(ByteBuffer(bytes: bytes[sent..<(sent + n)]))
                    sent += n
                    transfers.progress(transfer, sent: sent - start)
                    tracker.add(tracked, bytes: n)
                }
            } catch {
                await gate.cancel(response)
                throw error
            }
        } else {
            var out = header
            out.writeBytes(bytes[start..<end])
            try await stream.write(out)
            tracker.add(tracked, bytes: Int(count))
        }
        try await stream.finish()
        completed = true
        counters.add(bytes: Int(count))
        metrics?.servedBytes.increment(by: Int(count))
        metrics?.serveDuration.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
        return true
    }
}

/// The load and spare upload bandwidth a node announces in PONG (and routers weigh).
public struct ProbeLoad: Sendable, Hashable {
    /// Responses in flight at which a node calls itself saturated (load 1000 ‰).
    public static let saturatingTransfers = 64
    /// Load, 0 (idle) ... 1000 (saturated), per mille.
    public var loadPermille: UInt64
    /// Spare upload bandwidth, bytes/s (0: unknown).
    public var bandwidthBytesPerSecond: UInt64

    /// Creates a report.
    public init(loadPermille: UInt64, bandwidthBytesPerSecond: UInt64 = 0) {
        self.loadPermille = min(loadPermille, 1000)
        self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
    }

    /// The load of a node sending `activeTransfers` responses (saturated at
    /// ``saturatingTransfers``).
    public init(activeTransfers: Int, bandwidthBytesPerSecond: UInt64 = 0) {
        self.init(loadPermille: UInt64(max(0, activeTransfers)) * 1000 / UInt64(Self.saturatingTransfers), bandwidthBytesPerSecond: bandwidthBytesPerSecond)
    }
}

/// The responses a server is sending, for `stoq status`.
///
/// `@unchecked Sendable`: state behind `lock`.
public final class TransferTable: @unchecked Sendable {
    /// One response in progress.
    public struct Transfer: Sendable, Hashable {
        /// The chunk (short id).
        public var chunk: String
        /// Who asked.
        public var peer: String
        /// Response size.
        public var bytes: Int
        /// Bytes written so far.
        public var sent: Int
        /// Throttle class (`interactive`, `bulk`) or `unthrottled`.
        public var priority: String
        /// When it began.
        public var started: ContinuousClock.Instant
    }
    private let lock = NSLock()
    private var next = 0
    private var active: [Int: Transfer] = [:]

    func begin(chunk: ChunkID, peer: String, bytes: Int) -> Int {
        lock.withLock {
            next += 1
            active[next] = Transfer(chunk: chunk.short, peer: peer, bytes: bytes, sent: 0, priority: "unthrottled", started: .now)
            return next
        }
    }
    func setPriority(_ id: Int, _ priority: String) { lock.withLock { active[id]?.priority = priority } }
    func progress(_ id: Int, sent: Int) { lock.withLock { active[id]?.sent = sent } }
    func end(_ id: Int) { _ = lock.withLock { active.removeValue(forKey: id) } }

    /// Responses in progress now.
    public var count: Int { lock.withLock { active.count } }
    /// A snapshot, oldest first.
    public var snapshot: [Transfer] { lock.withLock { active.sorted { $0.key < $1.key }.map(\.value) } }
}

/// Application error codes of the chunk protocol (RESET_STREAM / ERROR frames).
public enum ChunkErrorCode {
    /// The request was malformed or unexpected.
    public static let badRequest: UInt64 = 0x1
    /// The server failed.
    public static let internalError: UInt64 = 0x2
    /// The peer exceeded one of the server's ``PeerLimits``: its request did not arrive in time,
    /// or it stopped reading a response.
    public static let limitExceeded: UInt64 = 0x3
}

/// A connection to one peer that can be asked for chunks.
///
/// A client can also reach its peer through a relay (``init(relay:to:targetID:name:metrics:)``):
/// every request stream then opens with RELAY_OPEN on the relay's connection and is carried to the
/// peer, and everything else (chunks verified against their ids, HAVE, PING, names) works as on a
/// direct connection.
public final class PeerClient: Sendable {
    /// The connection: to the peer, or to the relay when ``relayedTarget`` is set.
    public let connection: Connection
    /// A name for reports (address or node name).
    public let name: String
    /// The peer reached through the relay at the other end of ``connection`` (nil: direct).
    public let relayedTarget: PeerAddress?
    private let relayedTargetID: WireID?
    private let metrics: NodeMetrics?

    /// Wraps an established `stoq/1` connection.
    /// - Parameter metrics: where to count received bytes, fetch times and bad answers.
    public init(connection: Connection, name: String, metrics: NodeMetrics? = nil) {
        self.connection = connection
        self.name = name
        self.metrics = metrics
        self.relayedTarget = nil
        self.relayedTargetID = nil
    }

    /// A client for `target` reached through the relay at the other end of `relay`.
    /// - Parameters:
    ///   - targetID: the target's node id when known; the relay then refuses a node at that
    ///     address with another certificate.
    ///   - name: a name for reports (default `TARGET via RELAY`).
    public init(relay: Connection, to target: PeerAddress, targetID: NodeID? = nil, name: String? = nil, metrics: NodeMetrics? = nil) {
        self.connection = relay
        self.relayedTarget = target
        self.relayedTargetID = targetID.flatMap { WireID($0.bytes) }
        self.name = name ?? "\(target) via \(relay.remoteAddress.ipAddress.map { "[\($0)]:\(relay.remoteAddress.port ?? 0)" } ?? "relay")"
        self.metrics = metrics
    }

    /// Opens a request stream to the peer (through the relay when there is one).
    public func openRequestStream(priority: StreamPriority) async throws -> QUICStream {
        let stream = try await connection.openBidirectionalStream(priority: priority)
        if let target = relayedTarget {
            try await stream.write(STOQMessage.relayOpen(target: relayedTargetID, host: target.host, port: UInt16(clamping: target.port)).encoded())
        }
        return stream
    }

    /// Fetches a whole chunk and verifies it against `id`.
    /// - Throws: ``NodeError`` `.notFound` when the peer lacks it, `.corrupt` when the bytes do not
    ///   match the id, `.protocolViolation` for a malformed answer; transport errors as they are.
    public func fetchChunk(_ id: ChunkID, progress: (@Sendable (Int) -> Void)? = nil) async throws -> [UInt8] {
        let started = ContinuousClock.now
        do {
            let bytes = try await fetchVerified(id, progress: progress)
            metrics?.receivedBytes.increment(by: bytes.count)
            metrics?.fetchDuration.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
            return bytes
        } catch let error as NodeError where error.code == .corrupt {
            metrics?.receivedFault("corrupt")
            throw error
        } catch let error as NodeError where error.code == .protocolViolation {
            metrics?.receivedFault("protocol")
            throw error
        }
    }

    private func fetchVerified(_ id: ChunkID, progress: (@Sendable (Int) -> Void)?) async throws -> [UInt8] {
        let stream = try await openRequestStream(priority: .bulk)
        try await stream.write(STOQMessage.getChunk(chunkID: WireID(id.bytes)!, offset: 0, length: 0).encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: 1024)
        var body = [UInt8]()
        var expected: Int?
        for try await piece in stream {
            if let expected {
                body.append(contentsOf: piece.readableBytesView)
                progress?(piece.readableBytes)
                guard body.count <= expected else { throw NodeError(.protocolViolation, "\(name) sent more than the \(expected) bytes it announced for \(id.short)") }
                continue
            }
            decoder.handle(bytes: piece)
            frames: while let frame = try decoder.pollFrame() {
            switch try STOQMessage.decode(frame) {
            case .chunkPending:
                progress?(0)  // the peer is still filling the chunk (an edge's upstream miss): alive
                continue frames
            case .chunkHeader(.ok, _, _, let length):
                guard length <= UInt64(ChunkProtocol.maximumChunkLength) else {
                    throw NodeError(.protocolViolation, "\(name) announced a \(length)-byte chunk; the limit is \(ChunkProtocol.maximumChunkLength)")
                }
                expected = Int(length)
                body.reserveCapacity(Int(length))
                let rest = decoder.takeRemainingBytes()
                body.append(contentsOf: rest.readableBytesView)
                progress?(rest.readableBytes)  // the header itself is a sign of life, even with no body yet
                break frames
            case .chunkHeader(.notFound, _, _, _):
                throw NodeError(.notFound, "\(name) does not hold chunk \(id.short)")
            case .chunkHeader(let status, _, _, _):
                throw NodeError(.refused, "\(name) answered \(status) for chunk \(id.short)")
            case .error(_, let message):
                throw NodeError(.refused, "\(name): \(message)")
            default:
                throw NodeError(.protocolViolation, "\(name) answered GET_CHUNK with \(frame.type)")
            }
            }
        }
        guard let expected else { throw NodeError(.protocolViolation, "\(name) closed the stream before answering") }
        guard body.count == expected else {
            metrics?.receivedFault("truncated")
            throw NodeError(.protocolViolation, "\(name) ended chunk \(id.short) after \(body.count) of the \(expected) bytes it announced (truncated); the chunk is fetched elsewhere")
        }
        guard ChunkID.of(body) == id else {
            throw NodeError(.corrupt, "\(name) sent bytes for chunk \(id.short) that do not match its id")
        }
        return body
    }

    /// Asks the peer for its status document (JSON).
    public func status() async throws -> String {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(STOQMessage.statusRequest.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: 512 * 1024)
        decoder.handle(bytes: try await stream.readAll(limit: 512 * 1024))
        let frame = try decoder.pollFrame()
        if let frame, case .error(_, let message) = try STOQMessage.decode(frame) { throw NodeError(.refused, "\(name) refused STATUS: \(message)") }
        guard let frame, case .status(let json) = try STOQMessage.decode(frame) else {
            throw NodeError(.protocolViolation, "\(name) did not answer STATUS")
        }
        return json
    }

    /// Measures one round trip with PING/PONG.
    /// - Parameter nonce: the probe's nonce (random by default); the PONG must echo it.
    @discardableResult
    public func ping(nonce: UInt64 = UInt64.random(in: 0 ... .max)) async throws -> Duration {
        try await probe(nonce: nonce).rtt
    }

    /// Measures one round trip with PING/PONG and returns what the PONG announced (load, spare
    /// bandwidth, active transfers) beside the RTT.
    /// - Parameter nonce: the probe's nonce (random by default); the PONG must echo it.
    public func probe(nonce: UInt64 = UInt64.random(in: 0 ... .max)) async throws -> (rtt: Duration, pong: STOQMessage.Pong) {
        let start = ContinuousClock.now
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(STOQMessage.ping(nonce: nonce, sentAtMicros: 0).encoded())
        try await stream.finish()
        let reply = try await stream.readAll(limit: 1024)
        let rtt = ContinuousClock.now - start
        var decoder = FrameDecoder(maximumPayloadLength: 1024)
        decoder.handle(bytes: reply)
        guard let frame = try decoder.pollFrame(), case .pong(let pong) = try STOQMessage.decode(frame) else {
            throw NodeError(.protocolViolation, "\(name) did not answer PING with PONG")
        }
        guard pong.nonce == nonce else {
            throw NodeError(.protocolViolation, "\(name) answered PING \(nonce) with the PONG of another probe (\(pong.nonce))")
        }
        return (rtt, pong)
    }
}

/// Thread-safe counters for a server.
///
/// `@unchecked Sendable`: every access goes through `lock`.
final class ServerCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var requests = 0
    private var bytes = 0
    func add(bytes n: Int) { lock.withLock { requests += 1; bytes += n } }
    var value: (requests: Int, bytes: Int) { lock.withLock { (requests, bytes) } }
}
