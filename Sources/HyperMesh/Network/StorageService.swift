import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import STOQIdentity
import STOQNode
import STOQTransport
import STOQWire

/// The storage role of a node: a ``NodeService`` that answers HyperMesh requests (frame types
/// `0x80–0xbf`, see ``HyperMeshMessage``) on the node's streams.
///
/// It keeps shards in a ``ShardStore`` (verified by SHA-256 on the way in and on every read),
/// returns receipts signed with the node key over (block id, shard index, shard hash), serves
/// shards, answers storage challenges by hashing the asked range of a shard it re-verified, and
/// keeps manifest replicas. A shard whose bytes changed on disk is never served: the node answers
/// `corrupt`, so readers and challengers count it as lost.
public struct StorageService: NodeService {
    /// The shard store.
    public let store: ShardStore
    /// The region this node reports.
    public let region: String
    /// This node's id (SHA-256 of the signing key's SPKI DER; equals the STOQ node id of its certificate).
    public let node: MeshNodeID
    private let key: any CertificateSigner
    private let counters = StorageCounters()
    private let logger: Logger

    /// Creates the service.
    /// - Parameters:
    ///   - store: where shards go.
    ///   - signingKey: the node key (the key of its certificate), which signs receipts.
    ///   - region: the region it reports for placement.
    public init(store: ShardStore, signingKey: P256.Signing.PrivateKey, region: String, logger: Logger = Logger(label: "stoq.hypermesh")) {
        self.init(store: store, key: SoftwareSigner(signingKey), publicKey: signingKey.publicKey, region: region, logger: logger)
    }

    /// Creates the service with the node key wherever it is: in memory, or in a PKCS#11 token
    /// (`TokenKey`: receipts are then signed in the token).
    /// - Throws: ``HyperMeshError`` `.invalidParameters` when the key is not P-256.
    public init(store: ShardStore, signer: any CertificateSigner, region: String, logger: Logger = Logger(label: "stoq.hypermesh")) throws(HyperMeshError) {
        guard let publicKey = signer.p256PublicKey else {
            throw HyperMeshError(.invalidParameters, "the node key is not a P-256 key; storage receipts are signed with P-256")
        }
        self.init(store: store, key: signer, publicKey: publicKey, region: region, logger: logger)
    }

    private init(store: ShardStore, key: any CertificateSigner, publicKey: P256.Signing.PublicKey, region: String, logger: Logger) {
        self.store = store
        self.key = key
        self.region = region
        self.node = MeshNodeID(nodeKey: publicKey)
        self.logger = logger
    }

    /// Creates the service for a node from its key file (PEM, PKCS#8 or SEC 1) or the `pkcs11:`
    /// URI of its key in a token (receipts are then signed in the token).
    /// - Parameters:
    ///   - directory: the shard directory.
    ///   - keyPath: the node's private key, the one its certificate holds.
    ///   - region: the region it reports.
    public static func load(directory: String, keyPath: String, region: String) throws(HyperMeshError) -> StorageService {
        let signer: any CertificateSigner
        do { signer = try KeySigner.open(keyPath) } catch {
            throw HyperMeshError(.invalidParameters, "cannot use the node key \(PKCS11URI.redacted(keyPath)) to sign storage receipts: \(error.reason)")
        }
        return try StorageService(store: try ShardStore(directory: directory), signer: signer, region: region)
    }

    public var name: String { "hypermesh" }
    public var frameTypes: ClosedRange<UInt64> { HyperMeshMessage.frameTypes }
    public var maximumRequestLength: Int { HyperMeshMessage.maximumFrameLength }

    public func status() async -> [String: any Sendable]? {
        let s = store.stats()
        let c = counters.value
        return [
            "node": node.hex, "region": region, "shards": s.shards, "shard_bytes": s.bytes, "corrupt_found": s.corruptFound,
            "receipts_signed": c.receipts, "shards_served": c.served, "challenges_answered": c.challenges,
        ]
    }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        do {
            let reply: Reply
            switch Result(catching: { () throws(HyperMeshError) in try HyperMeshMessage.decode(request) }) {
            case .success(let message): reply = try await handle(message, remaining: remaining, stream: stream)
            case .failure(let error): reply = Reply(.error(code: HyperMeshErrorCode.badRequest, message: error.reason))
            }
            var out = reply.message.encoded()
            if let body = reply.body {
                out.writeBytes(body)
                counters.served()
            }
            try await stream.write(out)
            try await stream.finish()
        } catch {
            logger.debug("hypermesh request failed", metadata: ["error": "\(error)"])
            await stream.reset(code: UInt64(HyperMeshErrorCode.internalError))
        }
    }

    /// An answer frame, and the raw shard bytes that follow it for `SHARD`.
    private struct Reply {
        let message: HyperMeshMessage
        let body: [UInt8]?
        init(_ message: HyperMeshMessage, body: [UInt8]? = nil) {
            self.message = message
            self.body = body
        }
    }

    private func receive(
        block: BlockID, index: Int, length: Int, hash: Digest256, remaining: ByteBuffer, stream: QUICStream
    ) async throws -> Reply {
        var body = [UInt8]()
        body.reserveCapacity(length)
        body.append(contentsOf: remaining.readableBytesView)
        while body.count <= length, let more = try await stream.read() {
            body.append(contentsOf: more.readableBytesView)
        }
        guard body.count == length else {
            return Reply(.error(code: HyperMeshErrorCode.badRequest, message: "PUT_SHARD announced \(length) bytes but \(body.count) arrived"))
        }
        guard Digest256.hashing(body) == hash else {
            return Reply(.error(code: HyperMeshErrorCode.hashMismatch, message: "shard \(index) of \(block.short) does not hash to \(hash.short)"))
        }
        try store.put(block: block, index: index, bytes: body, hash: hash)
        counters.receipt()
        return Reply(.receipt(try StorageReceipt.sign(blockID: block, shardIndex: index, shardHash: hash, key: key)))
    }

    private func handle(_ message: HyperMeshMessage, remaining: ByteBuffer, stream: QUICStream) async throws -> Reply {
        switch message {
        case .infoRequest:
            return Reply(.info(StorageNodeInfo(node: node, region: region, freeBytes: store.freeBytes(), shards: UInt64(store.stats().shards))))
        case .putShard(let block, let index, let length, let hash):
            return try await receive(block: block, index: index, length: length, hash: hash, remaining: remaining, stream: stream)
        case .getShard(let block, let index):
            switch store.read(block: block, index: index) {
            case .found(let bytes): return Reply(.shard(length: bytes.count), body: bytes)
            case .missing: return Reply(.error(code: HyperMeshErrorCode.notFound, message: "no shard \(index) of block \(block.short) here"))
            case .corrupt(let expected, let actual):
                logger.warning("corrupt shard refused", metadata: ["block": "\(block.short)", "shard": "\(index)"])
                return Reply(.error(code: HyperMeshErrorCode.corrupt, message: "shard \(index) of block \(block.short) is corrupt on disk (hashes to \(actual.short), stored as \(expected.short))"))
            }
        case .challenge(let block, let index, let nonce, let offset, let length):
            switch store.read(block: block, index: index) {
            case .found(let bytes):
                guard let digest = StorageChallenge.answer(nonce: nonce, offset: offset, length: length, shard: bytes) else {
                    return Reply(.error(code: HyperMeshErrorCode.badRequest, message: "range \(offset)+\(length) is outside the \(bytes.count)-byte shard"))
                }
                counters.challenge()
                return Reply(.challengeAnswer(digest))
            case .missing: return Reply(.error(code: HyperMeshErrorCode.notFound, message: "no shard \(index) of block \(block.short) here"))
            case .corrupt:
                return Reply(.error(code: HyperMeshErrorCode.corrupt, message: "shard \(index) of block \(block.short) is corrupt on disk"))
            }
        case .deleteShard(let block, let index):
            store.delete(block: block, index: index)
            return Reply(.ok)
        case .putManifest(let manifest):
            try store.putManifest(manifest)
            return Reply(.ok)
        case .getManifest(let block):
            guard let manifest = store.manifest(block: block) else {
                return Reply(.error(code: HyperMeshErrorCode.notFound, message: "no manifest of block \(block.short) here"))
            }
            return Reply(.manifest(manifest))
        case .deleteManifest(let block):
            store.deleteManifest(block: block)
            return Reply(.ok)
        case .holdingsRequest(let block):
            // A receipt per shard held, signed now over the hash the shard was stored under (the
            // bytes are re-hashed when a shard is read or challenged, not here: a claim only
            // tells the reader whom to ask).
            let held = store.held(block: block).prefix(HyperMeshMessage.maximumHoldings)
            return Reply(.holdings(try held.map { try StorageReceipt.sign(blockID: block, shardIndex: $0.index, shardHash: $0.hash, key: key) }))
        case .info, .receipt, .shard, .challengeAnswer, .ok, .manifest, .holdings, .error:
            return Reply(.error(code: HyperMeshErrorCode.badRequest, message: "\(message.frameType) is an answer, not a request"))
        }
    }
}

/// Counters of a storage service (checked `Sendable`: they live in a locked box).
final class StorageCounters: Sendable {
    private let counts = NIOLockedValueBox((receipts: 0, served: 0, challenges: 0))
    func receipt() { counts.withLockedValue { $0.receipts += 1 } }
    func served() { counts.withLockedValue { $0.served += 1 } }
    func challenge() { counts.withLockedValue { $0.challenges += 1 } }
    var value: (receipts: Int, served: Int, challenges: Int) { counts.withLockedValue { $0 } }
}
