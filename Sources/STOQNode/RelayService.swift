import Foundation
import NIOCore
import STOQTransport
import STOQWire

/// Carries STOQ request streams to the next hop of a route (CDN relay, DESIGN.md §6).
///
/// A requester opens a stream to this node with RELAY_OPEN naming the target's address (and,
/// optionally, its node id), then writes its request for the target on the same stream, as on a
/// direct one. The relay dials the target through its ``PeerSet`` (mutual TLS, the node's own
/// trust roots), opens a stream there and pipes bytes both ways until each side finishes.
///
/// Chunks stay verifiable end to end (a chunk id is the hash of its bytes), so the relay needs no
/// content keys and cannot substitute content undetected. A node relays when it has the `relay`
/// role; relayed streams at once are bounded by ``maximumConcurrentStreams``.
public final class RelayService: NodeService, @unchecked Sendable {
    // `@unchecked Sendable`: the counters are only touched under `lock`; `peers` is immutable.
    private let peers: PeerSet
    private let lock = NSLock()
    private var active = 0
    private var relayed = 0
    private var refused = 0
    private var relayedBytes = 0

    /// The most streams relayed at once; more are refused with a clear error.
    public let maximumConcurrentStreams: Int

    /// A relay dialling next hops through `peers` (the relaying node's connections).
    public init(peers: PeerSet, maximumConcurrentStreams: Int = 512) {
        self.peers = peers
        self.maximumConcurrentStreams = maximumConcurrentStreams
    }

    /// `relay`.
    public var name: String { "relay" }
    /// RELAY_OPEN (0x12).
    public var frameTypes: ClosedRange<UInt64> { STOQMessage.Types.relayOpen.rawValue...STOQMessage.Types.relayOpen.rawValue }
    /// RELAY_OPEN is small.
    public var maximumRequestLength: Int { 512 }

    /// Pipes one stream to its target.
    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        var upstream: QUICStream?
        var admitted = false
        do {
            guard case .relayOpen(let target, let host, let port)? = try STOQMessage.decode(request) else {
                throw NodeError(.protocolViolation, "expected RELAY_OPEN, got \(request.type)")
            }
            admitted = lock.withLock {
                guard active < maximumConcurrentStreams else { refused += 1; return false }
                active += 1
                return true
            }
            guard admitted else {
                throw NodeError(.refused, "this relay already carries its maximum of \(maximumConcurrentStreams) streams; try another route or later")
            }
            let address = PeerAddress(host: host, port: Int(port))
            let client: PeerClient
            do {
                client = try await peers.client(for: address)
            } catch {
                throw NodeError(.unavailable, "the relay cannot reach \(address): \(error)")
            }
            if let target, client.connection.peerNodeID?.bytes != target.bytes {
                throw NodeError(.refused, "\(address) is not the node the requester named; not relaying")
            }
            let next = try await client.connection.openBidirectionalStream(priority: .interactive)
            upstream = next
            // Requester → target: what arrived after RELAY_OPEN, then the rest of the stream.
            let forward = Task {
                if remaining.readableBytes > 0 { try await next.write(remaining) }
                while let piece = try await stream.read() { try await next.write(piece) }
                try await next.finish()
            }
            // Target → requester.
            var bytes = 0
            do {
                while let piece = try await next.read() {
                    bytes += piece.readableBytes
                    try await stream.write(piece)
                }
                try await stream.finish()
                try await forward.value
            } catch {
                forward.cancel()
                throw error
            }
            lock.withLock { relayed += 1; relayedBytes += bytes }
        } catch let error as NodeError {
            if let upstream { await upstream.reset(code: ChunkErrorCode.internalError) }
            _ = try? await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: error.reason).encoded())
            _ = try? await stream.finish()
        } catch let error as WireError {
            _ = try? await stream.write(STOQMessage.error(code: ChunkErrorCode.badRequest, message: "malformed RELAY_OPEN: \(error)").encoded())
            _ = try? await stream.finish()
        } catch {
            // A broken pipe on either side: reset both, so neither end waits for the other.
            if let upstream { await upstream.reset(code: ChunkErrorCode.internalError) }
            await stream.reset(code: ChunkErrorCode.internalError)
        }
        if admitted { lock.withLock { active -= 1 } }
    }

    /// Streams carried, refused and bytes carried back.
    public func status() async -> [String: any Sendable]? {
        lock.withLock { ["streams": relayed, "active": active, "refused": refused, "bytes": relayedBytes] }
    }
}
