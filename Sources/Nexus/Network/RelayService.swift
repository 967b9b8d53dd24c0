import Foundation
import NIOCore
import STOQContent
import STOQNode
import STOQTransport
import STOQWire

/// Carries a STOQ request stream to the next hop of a route (CDN relay, DESIGN.md §6): a client
/// opens a stream to this node with RELAY_OPEN naming the target, then writes its request as if to
/// the target; the relay dials the target (checking its node id against the certificate), opens a
/// stream there and pipes bytes both ways until each side finishes.
///
/// Chunks stay verifiable end to end (a chunk id is the hash of its bytes), so the relay needs no
/// keys and cannot substitute content undetected.
public final class RelayService: NodeService, @unchecked Sendable {
    // `@unchecked Sendable`: `peers` is written once by `attach(peers:)` before the node serves,
    // and read under `lock`; the counters are under `lock` too.
    private let lock = NSLock()
    private var peers: PeerSet?
    private var relayed = 0
    private var relayedBytes = 0

    /// Creates an unattached relay (it refuses requests until ``attach(peers:)``).
    public init() {}

    /// Dials next hops through `peers` (the relaying node's connections).
    public func attach(peers: PeerSet) { lock.withLock { self.peers = peers } }

    /// `relay`.
    public var name: String { "relay" }
    /// 0x50–0x5f.
    public var frameTypes: ClosedRange<UInt64> { NexusFrameType.relayRange }
    /// RELAY_OPEN is small.
    public var maximumRequestLength: Int { 256 }

    /// Pipes one stream to its target.
    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        var upstream: QUICStream?
        do {
            guard request.type.rawValue == NexusFrameType.relayOpen else {
                throw NexusError(.malformedInput, "unknown relay request \(request.type)")
            }
            var payload = request.payload
            let (target, address) = try Self.decodeOpen(payload.readBytes(length: payload.readableBytes) ?? [])
            guard let peers = lock.withLock({ self.peers }) else {
                throw NexusError(.noHealthyNode, "this node's relay is not running")
            }
            let client = try await peers.client(for: address.peerAddress)
            guard client.connection.peerNodeID?.bytes == target.bytes else {
                throw NexusError(.forgedRecord, "\(address) is not node \(target.shortHex)…; not relaying")
            }
            let next = try await client.connection.openBidirectionalStream(priority: .interactive)
            upstream = next
            // Client → target: what arrived after RELAY_OPEN, then the rest of the stream.
            let forward = Task {
                if remaining.readableBytes > 0 { try await next.write(remaining) }
                while let piece = try await stream.read() { try await next.write(piece) }
                try await next.finish()
            }
            // Target → client.
            var bytes = 0
            while let piece = try await next.read() {
                bytes += piece.readableBytes
                try await stream.write(piece)
            }
            try await stream.finish()
            try await forward.value
            lock.withLock { relayed += 1; relayedBytes += bytes }
        } catch let error as NexusError {
            if let upstream { await upstream.reset(code: ChunkErrorCode.internalError) }
            _ = try? await stream.write(nexusFrame(NexusFrameType.error, Array(error.reason.utf8.prefix(1024))))
            _ = try? await stream.finish()
        } catch {
            if let upstream { await upstream.reset(code: ChunkErrorCode.internalError) }
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    /// Streams relayed and bytes carried back.
    public func status() async -> [String: any Sendable]? {
        lock.withLock { ["streams": relayed, "bytes": relayedBytes] }
    }

    /// RELAY_OPEN's payload.
    public static func encodeOpen(target: NexusID, address: NexusAddress) -> [UInt8] {
        var w = ByteWriter(capacity: 50)
        w.hash(target)
        address.encode(&w)
        return w.bytes
    }

    /// Parses RELAY_OPEN's payload; safe on arbitrary bytes.
    public static func decodeOpen(_ bytes: [UInt8]) throws(NexusError) -> (NexusID, NexusAddress) {
        var r = ByteReader(bytes)
        let target = try r.hash("relay target")
        let address = try NexusAddress.decode(&r)
        try r.expectEnd("relay request")
        return (target, address)
    }

    /// Fuzz entry point for RELAY_OPEN.
    public static func fuzz(_ data: [UInt8]) {
        if let (t, a) = try? decodeOpen(data) { precondition(encodeOpen(target: t, address: a) == data, "relay request encoding is not canonical") }
    }
}

/// Client side of relaying and of fetching chunks along a route.
public enum RelayClient {
    /// Opens a stream to `target` through the relay at the other end of `relay`; write the request
    /// for the target on it, as on a direct stream.
    public static func openStream(via relay: Connection, to target: NexusID, at address: NexusAddress) async throws -> QUICStream {
        let stream = try await relay.openBidirectionalStream(priority: .interactive)
        try await stream.write(nexusFrame(NexusFrameType.relayOpen, RelayService.encodeOpen(target: target, address: address)))
        return stream
    }

    /// Fetches a whole chunk on `stream` (direct or relayed) and verifies it against `id`.
    public static func fetchChunk(_ id: ChunkID, on stream: QUICStream) async throws -> [UInt8] {
        try await stream.write(STOQMessage.getChunk(chunkID: WireID(id.bytes)!, offset: 0, length: 0).encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: 64 * 1024)
        decoder.handle(bytes: try await stream.readAll(limit: ChunkProtocol.maximumChunkLength + 1024))
        guard let frame = try decoder.pollFrame() else { throw NexusError(.malformedInput, "the stream closed before the chunk header") }
        if frame.type.rawValue == NexusFrameType.error {
            throw NexusError(.noHealthyNode, "the relay refused: \(String(buffer: frame.payload))")
        }
        guard case .chunkHeader(.ok, _, _, let length) = try STOQMessage.decode(frame) else {
            throw NexusError(.notFound, "the target did not serve chunk \(id.short)")
        }
        let body = decoder.takeRemainingBytes()
        guard body.readableBytes == Int(length) else {
            throw NexusError(.malformedInput, "got \(body.readableBytes) of \(length) bytes of chunk \(id.short)")
        }
        let bytes = Array(body.readableBytesView)
        guard ChunkID.of(bytes) == id else { throw NexusError(.forgedRecord, "chunk \(id.short) does not match its id") }
        return bytes
    }
}
