import NIOCore
import STOQWire

/// What a storage node says about itself in answer to ``HyperMeshMessage/infoRequest``.
public struct StorageNodeInfo: Hashable, Sendable {
    /// The node id (SHA-256 of its key's SPKI DER, the key that signs its receipts).
    public let node: MeshNodeID
    /// Its region.
    public let region: String
    /// Bytes it can still accept.
    public let freeBytes: UInt64
    /// Shards it holds.
    public let shards: UInt64

    /// Creates an info record.
    public init(node: MeshNodeID, region: String, freeBytes: UInt64, shards: UInt64) {
        self.node = node
        self.region = region
        self.freeBytes = freeBytes
        self.shards = shards
    }
}

/// HyperMesh's requests and answers on `stoq/1` streams, frame types `0x80–0xbf` (DESIGN.md §3).
///
/// One request per bidirectional stream. Shard bytes never travel inside frames: `PUT_SHARD` is
/// followed by exactly `length` raw bytes then FIN, and a `SHARD` answer header by the shard's raw
/// bytes then FIN. Payloads are big-endian; every length is bounded before it is read, and a
/// payload with trailing bytes is refused, so each message has exactly one encoding.
///
/// | type | message | payload |
/// | --- | --- | --- |
/// | 0x80 | INFO_REQUEST | — |
/// | 0x81 | INFO | node id [32] · u16 + region (≤ 64, UTF-8) · free u64 · shards u64 |
/// | 0x82 | PUT_SHARD | block [32] · index u16 · length u32 · shard SHA-256 [32] |
/// | 0x83 | RECEIPT | a ``StorageReceipt`` in its binary form |
/// | 0x84 | GET_SHARD | block [32] · index u16 |
/// | 0x85 | SHARD | length u32 (raw bytes follow) |
/// | 0x86 | CHALLENGE | block [32] · index u16 · nonce [16] · offset u32 · length u32 |
/// | 0x87 | CHALLENGE_ANSWER | digest [32] |
/// | 0x88 | DELETE_SHARD | block [32] · index u16 |
/// | 0x89 | OK | — |
/// | 0x8a | PUT_MANIFEST | a ``BlockManifest`` in its binary form |
/// | 0x8c | GET_MANIFEST | block [32] |
/// | 0x8d | MANIFEST | a ``BlockManifest`` in its binary form |
/// | 0x8e | DELETE_MANIFEST | block [32] |
/// | 0x90 | HOLDINGS_REQUEST | block [32] |
/// | 0x91 | HOLDINGS | count u8 (≤ 64) · count × (u16 length (≤ 512) + a ``StorageReceipt``) |
/// | 0xbf | ERROR | code u16 · u16 + message (≤ 1024, UTF-8) |
public enum HyperMeshMessage: Hashable, Sendable {
    /// Ask a node for its ``StorageNodeInfo``.
    case infoRequest
    /// A node's id, region and space.
    case info(StorageNodeInfo)
    /// Store shard `index` of `block`; `length` raw bytes hashing to `hash` follow the frame.
    case putShard(block: BlockID, index: Int, length: Int, hash: Digest256)
    /// The storing node's signed receipt.
    case receipt(StorageReceipt)
    /// Read shard `index` of `block`.
    case getShard(block: BlockID, index: Int)
    /// The shard's length; its raw bytes follow.
    case shard(length: Int)
    /// Hash `nonce ‖ shard[offset ..< offset + length]`.
    case challenge(block: BlockID, index: Int, nonce: [UInt8], offset: Int, length: Int)
    /// The answer to a challenge.
    case challengeAnswer(Digest256)
    /// Delete shard `index` of `block` (rollback or move).
    case deleteShard(block: BlockID, index: Int)
    /// Done.
    case ok
    /// Keep this manifest (a metadata replica).
    case putManifest(BlockManifest)
    /// Send the manifest of `block`.
    case getManifest(block: BlockID)
    /// A manifest.
    case manifest(BlockManifest)
    /// Forget the manifest of `block`.
    case deleteManifest(block: BlockID)
    /// Which shards of `block` do you hold? (How a reader without the block's record finds its holders.)
    case holdingsRequest(block: BlockID)
    /// The answer to ``holdingsRequest(block:)``: a receipt, signed now, for each shard of the block
    /// the node holds (none when it holds none), at most ``maximumHoldings``.
    case holdings([StorageReceipt])
    /// The request failed; see ``HyperMeshErrorCode``.
    case error(code: UInt16, message: String)

    /// The frame types HyperMesh owns.
    public static let frameTypes: ClosedRange<UInt64> = 0x80...0xbf
    /// The largest request or answer frame (a manifest with 64 readers is about 37 KiB).
    public static let maximumFrameLength = 64 * 1024
    /// The longest region name.
    public static let maximumRegionLength = 64
    /// The longest error message.
    public static let maximumMessageLength = 1024
    /// Challenge nonces are 16 bytes.
    public static let nonceLength = 16
    /// The most receipts one ``holdings(_:)`` answer carries (the most shards a block has).
    public static let maximumHoldings = ErasureCoder.maximumTotalShards
    /// The longest receipt in a ``holdings(_:)`` answer (a receipt's fields allow 355 bytes).
    public static let maximumReceiptLength = 512

    /// The frame type of this message.
    public var frameType: FrameType {
        let raw: UInt64
        switch self {
        case .infoRequest: raw = 0x80
        case .info: raw = 0x81
        case .putShard: raw = 0x82
        case .receipt: raw = 0x83
        case .getShard: raw = 0x84
        case .shard: raw = 0x85
        case .challenge: raw = 0x86
        case .challengeAnswer: raw = 0x87
        case .deleteShard: raw = 0x88
        case .ok: raw = 0x89
        case .putManifest: raw = 0x8a
        case .getManifest: raw = 0x8c
        case .manifest: raw = 0x8d
        case .deleteManifest: raw = 0x8e
        case .holdingsRequest: raw = 0x90
        case .holdings: raw = 0x91
        case .error: raw = 0xbf
        }
        return FrameType(rawValue: raw)
    }

    /// The payload bytes.
    public func payload() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .infoRequest, .ok: break
        case .info(let info):
            w.raw(info.node.bytes)
            w.blob16(Array(info.region.utf8))
            w.u64(info.freeBytes)
            w.u64(info.shards)
        case .putShard(let block, let index, let length, let hash):
            w.raw(block.bytes)
            w.u16(UInt16(index))
            w.u32(UInt32(length))
            w.raw(hash.bytes)
        case .receipt(let receipt): w.raw(receipt.encoded())
        case .getShard(let block, let index), .deleteShard(let block, let index):
            w.raw(block.bytes)
            w.u16(UInt16(index))
        case .shard(let length): w.u32(UInt32(length))
        case .challenge(let block, let index, let nonce, let offset, let length):
            w.raw(block.bytes)
            w.u16(UInt16(index))
            w.raw(nonce)
            w.u32(UInt32(offset))
            w.u32(UInt32(length))
        case .challengeAnswer(let digest): w.raw(digest.bytes)
        case .putManifest(let manifest), .manifest(let manifest): w.raw(manifest.encoded())
        case .getManifest(let block), .deleteManifest(let block), .holdingsRequest(let block): w.raw(block.bytes)
        case .holdings(let receipts):
            let kept = receipts.prefix(Self.maximumHoldings)
            w.u8(UInt8(kept.count))
            for r in kept { w.blob16(r.encoded()) }
        case .error(let code, let message):
            w.u16(code)
            w.blob16(Array(message.utf8.prefix(Self.maximumMessageLength)))
        }
        return w.bytes
    }

    /// The message as a frame.
    public func frame() -> Frame { Frame(type: frameType, payload: ByteBuffer(bytes: payload())) }

    /// The message as encoded frame bytes, ready to write on a stream.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes a frame; safe on arbitrary input.
    /// - Throws: ``HyperMeshError/Code/malformedMessage`` naming the type and the bad field.
    public static func decode(_ frame: Frame) throws(HyperMeshError) -> HyperMeshMessage {
        try decode(type: frame.type.rawValue, payload: Array(frame.payload.readableBytesView))
    }

    /// Decodes a message from its type and payload; safe on arbitrary input.
    public static func decode(type: UInt64, payload: [UInt8]) throws(HyperMeshError) -> HyperMeshMessage {
        func bad(_ what: String) -> HyperMeshError {
            HyperMeshError(.malformedMessage, "HyperMesh message 0x\(String(type, radix: 16)) is malformed: \(what)")
        }
        guard payload.count <= maximumFrameLength else { throw bad("\(payload.count) bytes exceed \(maximumFrameLength)") }
        var r = ByteReader(payload)
        func index() throws(HyperMeshError) -> Int {
            guard let i = r.u16(), Int(i) < ErasureCoder.maximumTotalShards else { throw bad("shard index missing or out of range") }
            return Int(i)
        }
        let message: HyperMeshMessage
        switch type {
        case 0x80: message = .infoRequest
        case 0x81:
            guard let node = r.digest(), let region = r.blob16(max: maximumRegionLength), let free = r.u64(), let shards = r.u64() else {
                throw bad("truncated")
            }
            guard let text = String(validating: region, as: UTF8.self) else { throw bad("region is not UTF-8") }
            message = .info(StorageNodeInfo(node: node, region: text, freeBytes: free, shards: shards))
        case 0x82:
            guard let block = r.digest() else { throw bad("truncated block id") }
            let i = try index()
            guard let length = r.u32(), length >= 1, Int(length) <= BlockManifest.maximumShardSize else { throw bad("shard length out of range") }
            guard let hash = r.digest() else { throw bad("truncated shard hash") }
            message = .putShard(block: block, index: i, length: Int(length), hash: hash)
        case 0x83:
            do {
                message = .receipt(try StorageReceipt(decoding: payload))
            } catch {
                throw bad(error.reason)
            }
            return message
        case 0x84, 0x88:
            guard let block = r.digest() else { throw bad("truncated block id") }
            let i = try index()
            message = type == 0x84 ? .getShard(block: block, index: i) : .deleteShard(block: block, index: i)
        case 0x85:
            guard let length = r.u32(), Int(length) <= BlockManifest.maximumShardSize else { throw bad("shard length out of range") }
            message = .shard(length: Int(length))
        case 0x86:
            guard let block = r.digest() else { throw bad("truncated block id") }
            let i = try index()
            guard let nonce = r.take(nonceLength), let offset = r.u32(), let length = r.u32() else { throw bad("truncated") }
            guard Int(offset) <= BlockManifest.maximumShardSize, Int(length) <= BlockManifest.maximumShardSize else {
                throw bad("range out of bounds")
            }
            message = .challenge(block: block, index: i, nonce: nonce, offset: Int(offset), length: Int(length))
        case 0x87:
            guard let digest = r.digest() else { throw bad("truncated digest") }
            message = .challengeAnswer(digest)
        case 0x89: message = .ok
        case 0x8a, 0x8d:
            do {
                let manifest = try BlockManifest(decoding: payload)
                return type == 0x8a ? .putManifest(manifest) : .manifest(manifest)
            } catch {
                throw bad(error.reason)
            }
        case 0x8c, 0x8e:
            guard let block = r.digest() else { throw bad("truncated block id") }
            message = type == 0x8c ? .getManifest(block: block) : .deleteManifest(block: block)
        case 0x90:
            guard let block = r.digest() else { throw bad("truncated block id") }
            message = .holdingsRequest(block: block)
        case 0x91:
            guard let count = r.u8() else { throw bad("truncated count") }
            guard Int(count) <= maximumHoldings else { throw bad("\(count) receipts exceed \(maximumHoldings)") }
            var receipts: [StorageReceipt] = []
            for n in 0..<Int(count) {
                guard let bytes = r.blob16(max: maximumReceiptLength) else { throw bad("receipt \(n) truncated or longer than \(maximumReceiptLength) bytes") }
                do {
                    receipts.append(try StorageReceipt(decoding: bytes))
                } catch {
                    throw bad("receipt \(n): \(error.reason)")
                }
            }
            message = .holdings(receipts)
        case 0xbf:
            guard let code = r.u16(), let text = r.blob16(max: maximumMessageLength) else { throw bad("truncated") }
            guard let string = String(validating: text, as: UTF8.self) else { throw bad("message is not UTF-8") }
            message = .error(code: code, message: string)
        default:
            throw HyperMeshError(.malformedMessage, "unknown HyperMesh message type 0x\(String(type, radix: 16))")
        }
        guard r.isAtEnd else { throw bad("\(r.remaining) trailing bytes") }
        return message
    }

    /// Fuzz entry point for a libFuzzer harness: splits arbitrary bytes into frames, decodes each,
    /// and checks that what decodes re-encodes to the same payload. Traps only on a real bug.
    public static func fuzz(_ data: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: maximumFrameLength)
        decoder.handle(bytes: ByteBuffer(bytes: data))
        while let frame = try? decoder.pollFrame() {
            guard let message = try? decode(frame) else { continue }
            precondition(message.frameType == frame.type, "HyperMesh message decoded to another type")
            precondition(message.payload() == Array(frame.payload.readableBytesView), "HyperMesh message encoding is not canonical")
        }
    }
}

/// Error codes carried by ``HyperMeshMessage/error(code:message:)``.
public enum HyperMeshErrorCode {
    /// The node does not hold what was asked for.
    public static let notFound: UInt16 = 1
    /// The node holds it but its bytes no longer match their SHA-256 (disk corruption, tampering).
    public static let corrupt: UInt16 = 2
    /// The request was malformed or unexpected.
    public static let badRequest: UInt16 = 3
    /// The shard's bytes did not match the hash in the request.
    public static let hashMismatch: UInt16 = 4
    /// The node has no room.
    public static let noSpace: UInt16 = 5
    /// The node failed.
    public static let internalError: UInt16 = 6
    /// The reader no longer needs the answer (long-tail cut).
    public static let cancelled: UInt16 = 7
}
