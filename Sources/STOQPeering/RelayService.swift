import Foundation
import NIOCore
import NIOPosix
import STOQExchange
import STOQTransport
import STOQWire

/// Carries STOQ request streams to the next hop of a route (CDN relay, DESIGN.md §6).
///
/// A requester opens a stream to this node with RELAY_OPEN naming the target's address (and,
/// optionally, its node id), then writes its request for the target on the same stream, as on a
/// direct one. The relay dials the target through its ``PeerSet`` (mutual TLS, the node's own
/// trust roots: the target must hold a certificate of the network), opens a stream there and
/// pipes bytes both ways until each side finishes.
///
/// A relay carries STOQ traffic to STOQ nodes only (``refusal(target:own:localAddresses:)``): no
/// unspecified, multicast, IPv4-embedded, documentation or discard address, no port 0, not
/// itself, and only targets of its own scope (a relay on loopback reaches loopback; a relay on a
/// ULA or global address reaches ULA and global addresses, never loopback or link-local). A
/// relayed stream cannot be relayed again. Slots are bounded in all and per requesting connection,
/// and a slot is freed as soon as either side goes away, the relayed request is not complete within
/// ``requestTimeout``, or nothing moves for ``idleTimeout``.
///
/// Chunks stay verifiable end to end (a chunk id is the hash of its bytes), so the relay needs no
/// content keys and cannot substitute content undetected.
public final class RelayService: NodeService, @unchecked Sendable {
    // `@unchecked Sendable`: the counters are only touched under `lock`; the rest is immutable.
    private let peers: PeerSet
    private let authorize: (@Sendable (Connection) async -> String?)?
    private let lock = NSLock()
    private var active = 0
    private var activePerConnection: [ObjectIdentifier: Int] = [:]
    private var relayed = 0
    private var refused = 0
    private var relayedBytes = 0

    /// The most streams relayed at once; more are refused with a clear error (default 512).
    public let maximumConcurrentStreams: Int
    /// The most streams one requesting connection has relayed at once (default 64), so one
    /// client cannot take every slot.
    public let maximumStreamsPerConnection: Int
    /// The relayed request (everything the requester sends) must be complete within this long
    /// (default 10 s, as a direct request).
    public let requestTimeout: Duration
    /// A relayed stream on which no byte moved either way for this long is reset (default 60 s).
    public let idleTimeout: Duration
    /// The relay's own listening address: it decides the scope of the targets it dials.
    public let ownAddress: SocketAddress?

    /// A relay dialling next hops through `peers` (the relaying node's connections).
    /// - Parameters:
    ///   - ownAddress: where the relay listens (its scope bounds the targets; nil: any scope but
    ///     the checks that need no address).
    ///   - maximumConcurrentStreams: slots in all.
    ///   - maximumStreamsPerConnection: slots one requesting connection may hold.
    ///   - requestTimeout: time for the requester to send its whole relayed request.
    ///   - idleTimeout: time a relayed stream may carry nothing before it is reset.
    ///   - authorize: why a requesting connection may not relay (nil: it may); sent as ERROR 7.
    public init(
        peers: PeerSet, authorize: (@Sendable (Connection) async -> String?)? = nil, ownAddress: SocketAddress? = nil, maximumConcurrentStreams: Int = 512, maximumStreamsPerConnection: Int = 64,
        requestTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60)
    ) {
        self.peers = peers
        self.authorize = authorize
        self.ownAddress = ownAddress
        self.maximumConcurrentStreams = maximumConcurrentStreams
        self.maximumStreamsPerConnection = maximumStreamsPerConnection
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }

    /// `relay`.
    public var name: String { "relay" }
    /// RELAY_OPEN (0x12).
    public var frameTypes: ClosedRange<UInt64> { STOQMessage.Types.relayOpen.rawValue...STOQMessage.Types.relayOpen.rawValue }
    /// RELAY_OPEN is small.
    public var maximumRequestLength: Int { 512 }

    /// Why a relay listening on `own` must not dial `target`, or nil when it may.
    /// - Parameters:
    ///   - target: the address RELAY_OPEN names.
    ///   - own: the relay's listening address (nil: unknown).
    ///   - localAddresses: this host's interface addresses (for a relay listening on `::`).
    public static func refusal(target: SocketAddress, own: SocketAddress?, localAddresses: [SocketAddress] = []) -> String? {
        guard let kind = target.ipv6Kind else { return "the target is not an IPv6 address (STOQ is IPv6-only)" }
        guard let port = target.port, port != 0 else { return "port 0 is no STOQ node's port" }
        guard kind.isUnicastPeer else { return "the target is \(kind); a relay dials STOQ nodes only" }
        guard let own, let ownKind = own.ipv6Kind else { return nil }
        let sameHostAndPort = { (a: SocketAddress) in a.ipAddress == target.ipAddress && port == own.port }
        if sameHostAndPort(own) || (ownKind == .unspecified && ((kind == .loopback && port == own.port) || localAddresses.contains(where: sameHostAndPort))) {
            return "the target is this relay itself"
        }
        switch ownKind {
        case .loopback:
            guard kind == .loopback else { return "a relay listening on loopback dials loopback nodes only, not a \(kind) address" }
        case .linkLocal:
            guard kind == .linkLocal else { return "a relay listening on a link-local address dials that link only, not a \(kind) address" }
        default:
            guard !kind.isHostOrLinkScoped else {
                return "a relay listening on a \(ownKind) address does not dial \(kind) addresses (they are not reachable from where its requesters are)"
            }
        }
        return nil
    }

    /// Pipes one stream to its target.
    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        var upstream: QUICStream?
        var admitted = false
        let requester = ObjectIdentifier(connection)
        let pipe = RelayPipe()
        pipe.arm(stream: stream, upstream: nil)
        let timer = Task { [requestTimeout, idleTimeout] in
            await pipe.watch(requestTimeout: requestTimeout, idleTimeout: idleTimeout)
        }
        do {
            guard case .relayOpen(let targetID, let host, let port)? = try STOQMessage.decode(request) else {
                throw NodeError(.protocolViolation, "expected RELAY_OPEN, got \(request.type)")
            }
            guard connection.isServer else {
                throw NodeError(.refused, "a relay carries only streams its requesters open to it, not streams on a connection it dialled")
            }
            if let authorize, let why = await authorize(connection) {
                lock.withLock { refused += 1 }
                throw RelayDenied(reason: why)
            }
            admitted = lock.withLock {
                guard active < maximumConcurrentStreams, activePerConnection[requester, default: 0] < maximumStreamsPerConnection else {
                    refused += 1
                    return false
                }
                active += 1
                activePerConnection[requester, default: 0] += 1
                return true
            }
            guard admitted else {
                throw NodeError(.refused, "this relay carries its maximum of streams (\(maximumConcurrentStreams) in all, \(maximumStreamsPerConnection) per connection); try another route or later")
            }
            guard let target = try? SocketAddress(ipAddress: host, port: Int(port)) else {
                throw NodeError(.refused, "RELAY_OPEN names '\(host)', which is not a numeric IPv6 address; a relay does not resolve names")
            }
            let own = ownAddress
            let locals = own?.ipv6Kind == .unspecified ? Self.localAddresses() : []
            if let why = Self.refusal(target: target, own: own, localAddresses: locals) {
                throw NodeError(.refused, "not relaying to \(PeerAddress(host: target.ipAddress ?? host, port: Int(port))): \(why)")
            }
            // The relayed request must not be RELAY_OPEN again: read until its type is known.
            var head = remaining
            while true {
                var view = head
                if let type = VarInt.read(from: &view) {
                    guard type != STOQMessage.Types.relayOpen.rawValue else {
                        throw NodeError(.refused, "a relayed stream cannot be relayed again (RELAY_OPEN inside RELAY_OPEN)")
                    }
                    // Routing gossip counts for the connection it arrives on, which here would be
                    // this relay's: a relay never carries it (signed adverts make it useless anyway).
                    guard type != STOQMessage.Types.routingGossip.rawValue, type != RoutingAdvertMessage.type.rawValue else {
                        throw NodeError(.refused, "a relay does not carry routing gossip: it is exchanged only between directly connected peers")
                    }
                    break
                }
                guard var piece = try await stream.read() else {
                    throw NodeError(.protocolViolation, "the stream ended before the request to relay")
                }
                pipe.touch()
                head.writeBuffer(&piece)
            }
            let address = PeerAddress(host: target.ipAddress ?? host, port: Int(port))
            let client: PeerClient
            do {
                client = try await peers.client(for: address)
            } catch {
                throw NodeError(.unavailable, "the relay cannot reach \(address): \(error)")
            }
            guard let presented = client.connection.peerNodeID else {
                throw NodeError(.refused, "\(address) presented no certificate; not relaying")
            }
            if let targetID, presented.bytes != targetID.bytes {
                throw NodeError(.refused, "\(address) is not the node the requester named; not relaying")
            }
            let next = try await client.connection.openBidirectionalStream(priority: .interactive)
            upstream = next
            pipe.arm(stream: stream, upstream: next)
            let first = head
            let bytes = try await withThrowingTaskGroup(of: Int.self) { group in
                // Requester → target: what arrived after RELAY_OPEN, then the rest of the stream.
                group.addTask {
                    if first.readableBytes > 0 { try await next.write(first) }
                    while let piece = try await stream.read() {
                        pipe.touch()
                        try await next.write(piece)
                    }
                    try await next.finish()
                    pipe.requestComplete()
                    return 0
                }
                // Target → requester.
                group.addTask {
                    var bytes = 0
                    while let piece = try await next.read() {
                        pipe.touch()
                        bytes += piece.readableBytes
                        try await stream.write(piece)
                    }
                    try await stream.finish()
                    return bytes
                }
                var total = 0
                do {
                    while let n = try await group.next() { total += n }
                } catch {
                    // One side broke: abort both, so the other direction's read or write ends too.
                    await next.abort(code: ChunkErrorCode.internalError)
                    await stream.abort(code: ChunkErrorCode.internalError)
                    throw error
                }
                return total
            }
            lock.withLock { relayed += 1; relayedBytes += bytes }
        } catch let error as NodeError {
            if let upstream { await upstream.abort(code: ChunkErrorCode.internalError) }
            if !pipe.hasTimedOut {
                _ = try? await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: error.reason).encoded())
                _ = try? await stream.finish()
            }
        } catch let error as RelayDenied {
            // ERROR 7 (no grant), as STATUS and PURGE refuse: the requester needs the relay right.
            _ = try? await stream.write(STOQMessage.error(code: 7, message: String(error.reason.prefix(1000))).encoded())
            _ = try? await stream.finish()
        } catch let error as WireError {
            _ = try? await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: "malformed RELAY_OPEN: \(error)").encoded())
            _ = try? await stream.finish()
        } catch {
            // A broken pipe on either side, or a timeout: reset both, so neither end waits.
            if let upstream { await upstream.abort(code: ChunkErrorCode.internalError) }
            await stream.abort(code: ChunkErrorCode.internalError)
        }
        timer.cancel()
        if admitted {
            lock.withLock {
                active -= 1
                let left = activePerConnection[requester, default: 1] - 1
                activePerConnection[requester] = left > 0 ? left : nil
            }
        }
    }

    /// This host's interface addresses (IPv6).
    static func localAddresses() -> [SocketAddress] {
        ((try? System.enumerateDevices()) ?? []).compactMap(\.address).filter { $0.ipv6Kind != nil }
    }

    /// Streams carried, refused and bytes carried back.
    public func status() async -> [String: any Sendable]? {
        lock.withLock { ["streams": relayed, "active": active, "refused": refused, "bytes": relayedBytes] }
    }
}

/// A requester without the relay right (answered with ERROR 7).
struct RelayDenied: Error {
    let reason: String
}

/// The timers of one relayed stream: the relayed request must be complete within the request
/// timeout, and some byte must move every idle timeout; otherwise both streams are aborted.
///
/// `@unchecked Sendable`: state behind `lock`.
final class RelayPipe: @unchecked Sendable {
    private let lock = NSLock()
    private var streams: [QUICStream] = []
    private var lastActivity = ContinuousClock.now
    private let started = ContinuousClock.now
    private var requestDone = false
    private var timedOut = false

    /// Whether a timer aborted the streams.
    var hasTimedOut: Bool { lock.withLock { timedOut } }

    /// The streams to abort when a timer fires.
    func arm(stream: QUICStream, upstream: QUICStream?) {
        lock.withLock { streams = [stream] + (upstream.map { [$0] } ?? []) }
    }

    /// A byte moved.
    func touch() { lock.withLock { lastActivity = .now } }

    /// The requester finished its relayed request.
    func requestComplete() { lock.withLock { requestDone = true; lastActivity = .now } }

    /// Checks the timers every quarter of the shorter one (at most 1 s) until cancelled.
    func watch(requestTimeout: Duration, idleTimeout: Duration) async {
        let tick = min(.seconds(1), min(requestTimeout, idleTimeout) / 4)
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            let victims = lock.withLock { () -> [QUICStream] in
                let now = ContinuousClock.now
                guard (!requestDone && now - started >= requestTimeout) || now - lastActivity >= idleTimeout else { return [] }
                timedOut = true
                return streams
            }
            if !victims.isEmpty {
                for s in victims { await s.abort(code: ChunkErrorCode.limitExceeded) }
                return
            }
        }
    }
}
