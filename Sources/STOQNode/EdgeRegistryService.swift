import Foundation
import Logging
import NIOCore
import STOQExchange
import STOQIdentity
import STOQRouting
import STOQTransport
import STOQWire

/// An origin's registry of its edges, kept in `STORE/edges.json` so it survives restarts
/// (docs/PROTOCOL.md, "Edge registry"). Edges register over connections they dialled; the node id
/// is the one in the connection's certificate. Wraps the sans-IO ``EdgeRegistry`` with a wall clock.
public actor EdgeDirectory {
    /// Counters for `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Registrations taken (new edges, renewals and moves).
        public var registrations = 0
        /// Edges that registered from a new address.
        public var moves = 0
        /// Registrations refused (no certificate, full registry).
        public var refused = 0
        /// EDGES requests answered.
        public var listings = 0
    }

    private var registry: EdgeRegistry
    private let path: String?
    private let clock: @Sendable () -> Double
    private let logger: Logger
    private var stats = Counters()
    private var saveScheduled = false

    /// The wall clock, seconds since 1970.
    public static let wallClock: @Sendable () -> Double = { Date().timeIntervalSince1970 }

    /// Creates the directory, loading `path` when it exists (a corrupt file is logged and ignored).
    /// - Parameters:
    ///   - path: the state file; nil: memory only.
    ///   - capacity: the most edges held.
    ///   - ttlSeconds: how long a registration lasts unless renewed.
    ///   - clock: seconds since 1970 (injected for tests).
    public init(path: String?, capacity: Int = 4096, ttlSeconds: Double = 90, clock: @escaping @Sendable () -> Double = EdgeDirectory.wallClock,
                logger: Logger = Logger(label: "stoq.edges")) {
        self.path = path
        self.clock = clock
        self.logger = logger
        let saved = path.flatMap { StateFile.load([EdgeRegistry.Entry].self, path: $0, logger: logger) } ?? []
        let restored = EdgeRegistry(restoring: saved, capacity: capacity, ttlSeconds: ttlSeconds, now: clock())
        self.registry = restored
        let live = restored.count(now: clock())
        if !saved.isEmpty { logger.info("loaded the edge registry", metadata: ["edges": "\(live)"]) }
    }

    /// The counters.
    public var counters: Counters { stats }

    /// Registration lifetime in seconds.
    public var ttlSeconds: Double { registry.ttlSeconds }

    /// Live edges.
    public var count: Int { registry.count(now: clock()) }

    /// Registers (or renews) the edge `nodeID`.
    /// - Returns: the registration lifetime in seconds.
    /// - Throws: ``NodeError`` `.refused` when the registry is full.
    public func register(nodeID: NodeID, announcement: EdgeRegistryMessage.EdgeAnnouncement, seenAt remote: String?) throws -> UInt64 {
        var host = announcement.host
        if host.isEmpty || host == "::", let remote { host = remote }
        let entry = EdgeRegistry.Entry(
            nodeID: nodeID.bytes, host: host, port: announcement.port, region: announcement.region,
            latitude: announcement.location?.latitude, longitude: announcement.location?.longitude, expiresAt: 0)
        let now = clock()
        switch registry.register(entry, now: now) {
        case .full:
            stats.refused += 1
            throw NodeError(.refused, "this origin holds \(registry.capacity) edges already; try again when a registration lapses")
        case .added:
            stats.registrations += 1
            logger.info("an edge registered", metadata: ["node": "\(nodeID)", "address": "[\(host)]:\(announcement.port)", "region": "\(announcement.region)"])
            saveNow()
        case .moved:
            stats.registrations += 1
            stats.moves += 1
            logger.info("an edge registered from a new address", metadata: ["node": "\(nodeID)", "address": "[\(host)]:\(announcement.port)"])
            saveNow()
        case .renewed:
            stats.registrations += 1
            scheduleSave()
        }
        return UInt64(registry.ttlSeconds.rounded(.up))
    }

    /// The live edges nearest to an asker, at most `limit`.
    public func nearest(region: String, location: EdgeRegistryMessage.WireLocation?, limit: Int) -> [EdgeRegistryMessage.RegisteredEdge] {
        stats.listings += 1
        let now = clock()
        let at = location.map { GeoCoordinate(latitude: Float($0.latitude), longitude: Float($0.longitude)) }
        return registry.nearest(to: at, region: region, limit: limit, now: now).compactMap { e -> EdgeRegistryMessage.RegisteredEdge? in
            guard let id = WireID(e.nodeID) else { return nil }
            var place: EdgeRegistryMessage.WireLocation?
            if let latitude = e.latitude, let longitude = e.longitude { place = EdgeRegistryMessage.WireLocation(latitude: latitude, longitude: longitude) }
            let announcement = EdgeRegistryMessage.EdgeAnnouncement(host: e.host, port: e.port, region: e.region, location: place)
            return EdgeRegistryMessage.RegisteredEdge(nodeID: id, announcement: announcement, expiresIn: UInt64(max(0, (e.expiresAt - now).rounded(.up))))
        }
    }

    /// Where the edge `nodeID` listens, while its registration lasts.
    public func address(of nodeID: [UInt8]) -> PeerAddress? {
        registry.entry(for: nodeID, now: clock()).map { PeerAddress(host: $0.host, port: Int($0.port)) }
    }

    /// Writes the registry if a save is waiting (a node that stops calls this).
    public func flush() { if saveScheduled { saveNow() } }

    private func scheduleSave() {
        guard path != nil, !saveScheduled else { return }
        saveScheduled = true
        Task { [weak self] in
            try? await Task.sleep(for: .seconds(1))
            await self?.saveNow()
        }
    }

    private func saveNow() {
        saveScheduled = false
        guard let path else { return }
        registry.expire(now: clock())
        do { try StateFile.save(registry.all, path: path) } catch {
            logger.warning("could not save the edge registry; it lasts until the node stops", metadata: ["error": "\(error)"])
        }
    }
}

/// Answers EDGE_REGISTER and EDGES_REQUEST (frame types 0x1C–0x1F) from an ``EdgeDirectory``.
public struct EdgeRegistryService: NodeService {
    /// The registry.
    public let directory: EdgeDirectory

    /// Creates the service.
    public init(directory: EdgeDirectory) { self.directory = directory }

    /// ERROR code of a refused registration (full registry, no certificate, not an origin).
    public static let refusedCode: UInt64 = 0x4

    public var name: String { "edge_registry" }
    public var frameTypes: ClosedRange<UInt64> { EdgeRegistryMessage.Types.register.rawValue...EdgeRegistryMessage.Types.edges.rawValue }
    public var maximumRequestLength: Int { 512 }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let answer: ByteBuffer
        do {
            switch try EdgeRegistryMessage.decode(request) {
            case .register(let announcement):
                if let nodeID = connection.peerNodeID {
                    do {
                        let ttl = try await directory.register(nodeID: nodeID, announcement: announcement, seenAt: connection.remoteAddress.ipAddress)
                        answer = EdgeRegistryMessage.registered(ttlSeconds: ttl).encoded()
                    } catch let error as NodeError {
                        answer = STOQMessage.error(code: Self.refusedCode, message: error.reason).encoded()
                    }
                } else {
                    answer = STOQMessage.error(code: Self.refusedCode, message: "an edge registers with a node certificate; connect with the edge's certificate").encoded()
                }
            case .edgesRequest(let region, let location, let limit):
                answer = EdgeRegistryMessage.edges(await directory.nearest(region: region, location: location, limit: Int(limit))).encoded()
            case .registered, .edges:
                answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "unexpected request \(request.type): EDGE_REGISTERED and EDGES are answers").encoded()
            }
        } catch {
            answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "malformed \(request.type) request: \((error as? WireError)?.reason ?? "\(error)"); see docs/PROTOCOL.md, \"Edge registry\"").encoded()
        }
        do {
            try await stream.write(answer)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    public func status() async -> [String: any Sendable]? {
        let c = await directory.counters
        return ["edges": await directory.count, "registrations": c.registrations, "moves": c.moves, "refused": c.refused, "listings": c.listings]
    }
}

extension PeerClient {
    /// Registers this edge with the peer (its origin).
    /// - Returns: how long the registration lasts, in seconds.
    public func registerEdge(_ announcement: EdgeRegistryMessage.EdgeAnnouncement) async throws -> UInt64 {
        switch try await registryRequest(.register(announcement)) {
        case .registered(let ttl): return ttl
        case let other: throw NodeError(.protocolViolation, "\(name) answered EDGE_REGISTER with \(other.frame().type)")
        }
    }

    /// Asks the peer (an origin) for its registered edges, nearest to `region`/`location` first.
    public func registeredEdges(region: String, location: EdgeRegistryMessage.WireLocation?, limit: Int = EdgeRegistryMessage.maximumEdges) async throws -> [EdgeRegistryMessage.RegisteredEdge] {
        let bounded = UInt64(min(max(limit, 1), EdgeRegistryMessage.maximumEdges))
        switch try await registryRequest(.edgesRequest(region: region, location: location, limit: bounded)) {
        case .edges(let list): return list
        case let other: throw NodeError(.protocolViolation, "\(name) answered EDGES_REQUEST with \(other.frame().type)")
        }
    }

    private func registryRequest(_ message: EdgeRegistryMessage) async throws -> EdgeRegistryMessage {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(message.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: EdgeRegistryMessage.maximumPayloadLength)
        decoder.handle(bytes: try await stream.readAll(limit: EdgeRegistryMessage.maximumPayloadLength + 16))
        guard let frame = try decoder.pollFrame() else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering \(message.frame().type)")
        }
        if EdgeRegistryMessage.handles(frame.type) { return try EdgeRegistryMessage.decode(frame) }
        if case .error(let code, let text) = try STOQMessage.decode(frame) {
            throw NodeError(.refused, "\(name) refused \(message.frame().type) (code \(code)): \(text)")
        }
        throw NodeError(.protocolViolation, "\(name) answered \(message.frame().type) with \(frame.type)")
    }
}

/// An edge's side of the registry: it registers with each upstream it dials, and renews at a third
/// of the lifetime the origin granted while the node runs. A registration goes out again on every
/// new connection to the upstream (a restarted origin, or an address change of this edge), and
/// each renewal carries the address the edge listens on then (after a rebind, the new one).
public actor EdgeRegistrar {
    private let currentAddress: @Sendable () -> PeerAddress
    private let region: String
    private let location: EdgeRegistryMessage.WireLocation?
    private let logger: Logger
    private var renewals: [PeerAddress: Task<Void, Never>] = [:]
    /// Registrations the upstream took.
    public private(set) var registered = 0
    /// Registrations that failed.
    public private(set) var failed = 0

    /// Creates the registrar for an edge listening at `address()` (read at each registration).
    public init(address: @escaping @Sendable () -> PeerAddress, region: String, latitude: Double?, longitude: Double?, logger: Logger = Logger(label: "stoq.edges")) {
        var location: EdgeRegistryMessage.WireLocation?
        if let latitude, let longitude { location = .init(latitude: latitude, longitude: longitude) }
        self.currentAddress = address
        self.region = region
        self.location = location
        self.logger = logger
    }

    /// What this edge says about itself now.
    public nonisolated var announcement: EdgeRegistryMessage.EdgeAnnouncement {
        let address = currentAddress()
        return .init(host: address.host, port: UInt16(clamping: address.port), region: region, location: location)
    }

    /// Registers over `connection` (dialled to the upstream `address`) and keeps renewing while it
    /// stays open. A refusal stops the renewals on this connection (logged).
    public func dialled(_ connection: Connection, upstream address: PeerAddress) {
        renewals[address]?.cancel()
        let task = Task { [weak self, logger] in
            let client = PeerClient(connection: connection, name: address.description)
            while !Task.isCancelled {
                var wait: UInt64 = 5
                guard let announcement = self?.announcement else { return }
                do {
                    let ttl = try await client.registerEdge(announcement)
                    await self?.note(success: true)
                    wait = max(1, ttl / 3)
                } catch {
                    await self?.note(success: false)
                    logger.info("the upstream did not take this edge's registration", metadata: ["peer": "\(address)", "error": "\(error)"])
                    if (error as? NodeError)?.code == .refused { return }
                }
                do { try await Task.sleep(for: .seconds(Int64(wait))) } catch { return }
            }
        }
        renewals[address] = task
        // The renewals end with the connection; the next connection to the upstream registers again.
        Task { _ = await connection.closed(); task.cancel() }
    }

    private func note(success: Bool) { if success { registered += 1 } else { failed += 1 } }
}
