import Crypto
import NIOCore
import STOQSimulation
import STOQWire
import STOQSimulation
import Testing

@testable import HyperMesh

/// HyperMesh wire messages and the audit log file format: seeded round trips and garbage.
@Suite struct NetworkCodecTests {
    static func digest(_ rng: inout SplitMix64) -> Digest256 {
        Digest256(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })!
    }

    static func sampleMessages(_ rng: inout SplitMix64) throws -> [HyperMeshMessage] {
        let key = P256.Signing.PrivateKey()
        let block = digest(&rng)
        let receipt = try StorageReceipt.sign(blockID: block, shardIndex: Int.random(in: 0..<14, using: &rng), shardHash: digest(&rng), key: key)
        let last = try StorageReceipt.sign(blockID: block, shardIndex: 63, shardHash: digest(&rng), key: key)
        let codec = BlockCodec(coder: try ErasureCoder(dataShards: 4, parityShards: 2), compressor: NoCompression())
        let encoded = try codec.encode((0..<Int.random(in: 0..<5000, using: &rng)).map { UInt8(truncatingIfNeeded: $0) },
                                       readers: [P256.KeyAgreement.PrivateKey().publicKey])
        return [
            .infoRequest,
            .info(StorageNodeInfo(node: digest(&rng), region: "eu-west-\(Int.random(in: 0..<99, using: &rng))", freeBytes: rng.next(), shards: rng.next())),
            .putShard(block: block, index: Int.random(in: 0..<64, using: &rng), length: Int.random(in: 1...(64 << 20), using: &rng), hash: digest(&rng)),
            .receipt(receipt),
            .getShard(block: block, index: Int.random(in: 0..<64, using: &rng)),
            .shard(length: Int.random(in: 0...(64 << 20), using: &rng)),
            .challenge(block: block, index: 3, nonce: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) },
                       offset: Int.random(in: 0..<1_000_000, using: &rng), length: Int.random(in: 0..<4096, using: &rng)),
            .challengeAnswer(digest(&rng)),
            .deleteShard(block: block, index: 13),
            .ok,
            .putManifest(encoded.manifest),
            .getManifest(block: block),
            .manifest(encoded.manifest),
            .deleteManifest(block: block),
            .holdingsRequest(block: block),
            .holdings([]),
            .holdings([receipt, last]),
            .error(code: UInt16.random(in: 0...9, using: &rng), message: "shard 3 is corrupt — ünïcode"),
        ]
    }

    @Test func messagesRoundTripSeeded() throws {
        for seed in UInt64(1)...8 {
            var rng = SplitMix64(seed: seed)
            for message in try Self.sampleMessages(&rng) {
                var decoder = FrameDecoder(maximumPayloadLength: HyperMeshMessage.maximumFrameLength)
                decoder.handle(bytes: message.encoded())
                let frame = try #require(try decoder.pollFrame(), "seed \(seed)")
                #expect(HyperMeshMessage.frameTypes.contains(frame.type.rawValue))
                #expect(try HyperMeshMessage.decode(frame) == message, "seed \(seed): \(message.frameType)")
                HyperMeshMessage.fuzz(Array(message.encoded().readableBytesView))
            }
        }
    }

    @Test func messageDecoderRefusesBadInput() throws {
        var rng = SplitMix64(seed: 42)
        let messages = try Self.sampleMessages(&rng)
        for message in messages {
            let payload = message.payload()
            // Trailing bytes and truncations are refused, never trapped on.
            #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: message.frameType.rawValue, payload: payload + [0]) }
            if !payload.isEmpty {
                #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: message.frameType.rawValue, payload: Array(payload.dropLast())) }
            }
        }
        #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: 0x8b, payload: []) }
        // Shard index beyond the 64-shard limit, zero-length PUT_SHARD, oversized SHARD.
        var w = ByteWriter()
        w.raw([UInt8](repeating: 1, count: 32)); w.u16(64)
        #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: 0x84, payload: w.bytes) }
        #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: 0x85, payload: [0x05, 0, 0, 0]) }
    }

    @Test func holdingsAreBounded() throws {
        let key = P256.Signing.PrivateKey()
        var rng = SplitMix64(seed: 9)
        let block = Self.digest(&rng)
        let receipt = try StorageReceipt.sign(blockID: block, shardIndex: 1, shardHash: Self.digest(&rng), key: key)
        // 64 receipts: the most a block has shards, and within the 64 KiB frame.
        let full = HyperMeshMessage.holdings(Array(repeating: receipt, count: HyperMeshMessage.maximumHoldings))
        #expect(full.payload().count <= HyperMeshMessage.maximumFrameLength)
        #expect(try HyperMeshMessage.decode(type: 0x91, payload: full.payload()) == full)
        // 65 announced: refused before any receipt is read.
        var w = ByteWriter()
        w.u8(65)
        #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: 0x91, payload: w.bytes) }
        // A receipt longer than 512 bytes, and one that does not decode: refused, naming it.
        w = ByteWriter()
        w.u8(1)
        w.blob16([UInt8](repeating: 0, count: 513))
        #expect(throws: HyperMeshError.self) { try HyperMeshMessage.decode(type: 0x91, payload: w.bytes) }
        w = ByteWriter()
        w.u8(1)
        w.blob16([UInt8](repeating: 7, count: 40))
        do {
            _ = try HyperMeshMessage.decode(type: 0x91, payload: w.bytes)
            Issue.record("a malformed receipt in HOLDINGS was accepted")
        } catch {
            #expect(error.reason.contains("receipt 0"), "\(error.reason)")
        }
    }

    @Test func messageFuzzEntryOnGarbage() {
        let seed = UInt64.random(in: 0 ... .max)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<3000 {
            let length = Int.random(in: 0..<200, using: &rng)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if !bytes.isEmpty { bytes[0] = UInt8.random(in: 0x80...0xbf, using: &rng) }  // aim at HyperMesh types
            HyperMeshMessage.fuzz(bytes)
            AuditLog.fuzz(bytes)
        }
        print("messageFuzzEntryOnGarbage seed \(seed)")
    }

    @Test func auditLogFileRoundTripAndTamper() throws {
        var rng = SplitMix64(seed: 7)
        var log = AuditLog()
        for i in 0..<20 {
            let block = Self.digest(&rng)
            switch i % 3 {
            case 0: log.append(.commit(block: block, receipts: 12 + i % 3), now: .seconds(i))
            case 1: log.append(.transfer(block: block, shard: i % 14, from: i % 2 == 0 ? nil : Self.digest(&rng), to: Self.digest(&rng)), now: .milliseconds(i * 1500))
            default: log.append(.shardLost(block: block, shard: 2, node: Self.digest(&rng), reason: "wrong hash"), now: .seconds(i))
            }
        }
        let bytes = log.encoded()
        let loaded = try AuditLog(decoding: bytes)
        #expect(loaded == log)
        #expect(loaded.verify() == .intact)
        AuditLog.fuzz(bytes)
        // Changing one byte of an event breaks the chain (or the file format).
        var tampered = bytes
        tampered[tampered.count - 3] ^= 0x01
        if let broken = try? AuditLog(decoding: tampered) {
            #expect(broken.verify() != .intact)
        }
        #expect(throws: HyperMeshError.self) { try AuditLog(decoding: Array(bytes.dropLast())) }
    }
}
