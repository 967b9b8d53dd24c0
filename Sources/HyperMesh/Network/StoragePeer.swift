import Foundation
import NIOCore
import STOQNode
import STOQTransport
import STOQWire

/// A HyperMesh client for one storage node over an established `stoq/1` connection: one
/// request per bidirectional stream (see ``HyperMeshMessage``).
///
/// Every failure is a ``HyperMeshError``: `.notFound` when the node does not hold the thing,
/// `.shardCorrupted` when it reports its copy corrupt, `.peerFailed` for a refusal or an answer
/// out of protocol, `.unreachable` for a transport failure.
public struct StoragePeer: Sendable {
    /// The connection.
    public let connection: Connection
    /// A name for messages (usually its address).
    public let name: String

    /// Wraps a connection.
    public init(connection: Connection, name: String) {
        self.connection = connection
        self.name = name
    }

    /// The node id of the peer's certificate key (receipts must be signed by it).
    public var node: MeshNodeID? { connection.peerNodeID.flatMap { MeshNodeID(bytes: $0.bytes) } }

    /// Asks for the node's id, region and space.
    public func info() async throws(HyperMeshError) -> StorageNodeInfo {
        guard case .info(let info) = try await request(.infoRequest) else { throw unexpected("INFO_REQUEST") }
        return info
    }

    /// Stores a shard and returns the node's receipt (not yet verified).
    public func putShard(block: BlockID, index: Int, bytes: [UInt8], hash: Digest256) async throws(HyperMeshError) -> StorageReceipt {
        var out = HyperMeshMessage.putShard(block: block, index: index, length: bytes.count, hash: hash).encoded()
        out.writeBytes(bytes)
        guard case .receipt(let receipt) = try await request(out, priority: .bulk) else { throw unexpected("PUT_SHARD") }
        return receipt
    }

    /// Reads a shard (not verified here: the caller checks it against the manifest).
    /// - Parameters:
    ///   - maximumLength: the longest shard accepted (the manifest's shard size).
    ///   - handle: receives the stream as soon as it is open, so the caller can cancel the read.
    public func getShard(block: BlockID, index: Int, maximumLength: Int, handle: StreamHandle? = nil) async throws(HyperMeshError) -> [UInt8] {
        try await transport {
            let stream = try await connection.openBidirectionalStream(priority: .bulk)
            handle?.set(stream)
            try await stream.write(HyperMeshMessage.getShard(block: block, index: index).encoded())
            try await stream.finish()
            var decoder = FrameDecoder(maximumPayloadLength: HyperMeshMessage.maximumFrameLength)
            var body = [UInt8]()
            var expected: Int?
            while let piece = try await stream.read() {
                if expected != nil {
                    body.append(contentsOf: piece.readableBytesView)
                } else {
                    decoder.handle(bytes: piece)
                    guard let frame = try decoder.pollFrame() else { continue }
                    switch try HyperMeshMessage.decode(frame) {
                    case .shard(let length):
                        guard length <= maximumLength else {
                            throw HyperMeshError(.peerFailed, "\(name) announced a \(length)-byte shard; the block's shards are \(maximumLength) bytes")
                        }
                        expected = length
                        body.reserveCapacity(length)
                        body.append(contentsOf: decoder.takeRemainingBytes().readableBytesView)
                    case .error(let code, let message): throw Self.error(code: code, message: message, from: name)
                    default: throw unexpected("GET_SHARD")
                    }
                }
                if let expected, body.count > expected {
                    throw HyperMeshError(.peerFailed, "\(name) sent more than the \(expected) bytes it announced")
                }
            }
            guard let expected, body.count == expected else {
                throw HyperMeshError(.peerFailed, "\(name) ended shard \(index) of \(block.short) early (\(body.count) bytes)")
            }
            return body
        }
    }

    /// Asks the node to hash a range of a shard; nil when it says it does not hold it (or holds it corrupt).
    public func challenge(block: BlockID, index: Int, nonce: [UInt8], offset: Int, length: Int) async throws(HyperMeshError) -> (Digest256?, String?) {
        do throws(HyperMeshError) {
            guard case .challengeAnswer(let digest) = try await request(.challenge(block: block, index: index, nonce: nonce, offset: offset, length: length)) else {
                throw unexpected("CHALLENGE")
            }
            return (digest, nil)
        } catch where error.code == .notFound || error.code == .shardCorrupted {
            return (nil, error.reason)
        }
    }

    /// Asks the node to delete a shard.
    public func deleteShard(block: BlockID, index: Int) async throws(HyperMeshError) {
        guard case .ok = try await request(.deleteShard(block: block, index: index)) else { throw unexpected("DELETE_SHARD") }
    }

    /// Stores a manifest replica.
    public func putManifest(_ manifest: BlockManifest) async throws(HyperMeshError) {
        guard case .ok = try await request(.putManifest(manifest)) else { throw unexpected("PUT_MANIFEST") }
    }

    /// Reads a manifest replica.
    public func manifest(block: BlockID) async throws(HyperMeshError) -> BlockManifest {
        guard case .manifest(let m) = try await request(.getManifest(block: block)), m.blockID == block else { throw unexpected("GET_MANIFEST") }
        return m
    }

    /// Forgets a manifest replica.
    public func deleteManifest(block: BlockID) async throws(HyperMeshError) {
        guard case .ok = try await request(.deleteManifest(block: block)) else { throw unexpected("DELETE_MANIFEST") }
    }

    /// Asks which shards of `block` the node holds: its receipts for them, signed now (not yet
    /// verified here: the caller checks them against the manifest and the node's certificate).
    public func holdings(block: BlockID) async throws(HyperMeshError) -> [StorageReceipt] {
        guard case .holdings(let receipts) = try await request(.holdingsRequest(block: block)) else { throw unexpected("HOLDINGS_REQUEST") }
        return receipts
    }

    private func request(_ message: HyperMeshMessage) async throws(HyperMeshError) -> HyperMeshMessage {
        try await request(message.encoded(), priority: .interactive)
    }

    private func request(_ bytes: ByteBuffer, priority: StreamPriority) async throws(HyperMeshError) -> HyperMeshMessage {
        let answer = try await transport {
            let stream = try await connection.openBidirectionalStream(priority: priority)
            try await stream.write(bytes)
            try await stream.finish()
            let reply = try await stream.readAll(limit: HyperMeshMessage.maximumFrameLength + 16)
            var decoder = FrameDecoder(maximumPayloadLength: HyperMeshMessage.maximumFrameLength)
            decoder.handle(bytes: reply)
            guard let frame = try decoder.pollFrame(), !decoder.hasPartialFrame else {
                throw HyperMeshError(.peerFailed, "\(name) sent an incomplete answer")
            }
            return try HyperMeshMessage.decode(frame)
        }
        if case .error(let code, let message) = answer { throw Self.error(code: code, message: message, from: name) }
        return answer
    }

    private func transport<T>(_ body: () async throws -> T) async throws(HyperMeshError) -> T {
        do {
            return try await body()
        } catch let error as HyperMeshError {
            throw error
        } catch let error as WireError {
            throw HyperMeshError(.peerFailed, "\(name) sent a malformed answer: \(describe(error))")
        } catch {
            throw HyperMeshError(.unreachable, "\(name): \(describe(error))")
        }
    }

    private func unexpected(_ request: String) -> HyperMeshError {
        HyperMeshError(.peerFailed, "\(name) answered \(request) out of protocol")
    }

    static func error(code: UInt16, message: String, from name: String) -> HyperMeshError {
        switch code {
        case HyperMeshErrorCode.notFound: HyperMeshError(.notFound, "\(name): \(message)")
        case HyperMeshErrorCode.corrupt: HyperMeshError(.shardCorrupted, "\(name): \(message)")
        default: HyperMeshError(.peerFailed, "\(name) refused: \(message)")
        }
    }
}

/// Holds a request's stream once it is open so that another task can cancel the request
/// (STOP_SENDING and RESET_STREAM) — how a read cuts its long tail.
///
/// `@unchecked Sendable`: every access goes through `lock`.
public final class StreamHandle: @unchecked Sendable {
    private let lock = NSLock()
    private var stream: QUICStream?
    private var cancelled = false

    /// An empty handle.
    public init() {}

    func set(_ stream: QUICStream) {
        let cancelNow = lock.withLock { () -> Bool in
            self.stream = stream
            return cancelled
        }
        if cancelNow { Task { await Self.abort(stream) } }
    }

    /// Cancels the request: the peer stops sending and the stream is reset.
    public func cancel() async {
        let stream = lock.withLock { () -> QUICStream? in
            cancelled = true
            return self.stream
        }
        if let stream { await Self.abort(stream) }
    }

    private static func abort(_ stream: QUICStream) async {
        await stream.stopSending(code: UInt64(HyperMeshErrorCode.cancelled))
        await stream.reset(code: UInt64(HyperMeshErrorCode.cancelled))
    }
}
