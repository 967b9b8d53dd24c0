import Crypto
import Testing

@testable import HyperMesh
import STOQSimulation

/// A test compressor that is not the identity (run-length of zero bytes), to exercise the hook.
struct ZeroRunCompressor: BlockCompressor {
    var id: UInt8 { 200 }
    func compress(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0 {
                var run = 0
                while i < bytes.count, bytes[i] == 0, run < 255 { run += 1; i += 1 }
                out += [0, UInt8(run)]
            } else {
                out.append(bytes[i]); i += 1
            }
        }
        return out
    }
    func decompress(_ bytes: [UInt8], originalLength: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0 { out += [UInt8](repeating: 0, count: Int(bytes[i + 1])); i += 2 } else { out.append(bytes[i]); i += 1 }
        }
        return out
    }
}

@Suite struct BlockCodecTests {
    let reader = P256.KeyAgreement.PrivateKey()

    func codec() throws -> BlockCodec { BlockCodec(coder: try ErasureCoder()) }

    @Test func seededRoundTripsWithLosses() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        let codec = try codec()
        for round in 0..<12 {
            let length = Int.random(in: 0...50_000, using: &rng)
            let content = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let block = try codec.encode(content, readers: [reader.publicKey])
            #expect(block.shards.count == 14)
            #expect(block.manifest.shardSize % BlockCodec.shardAlignment == 0)
            var slots: [[UInt8]?] = block.shards
            for i in Array(0..<14).shuffled(using: &rng).prefix(Int.random(in: 0...4, using: &rng)) { slots[i] = nil }
            let back = try codec.decode(manifest: block.manifest, shards: slots, reader: reader)
            #expect(back == content, "seed \(seed) round \(round) length \(length)")
        }
    }

    @Test func compressionHookIsApplied() throws {
        let codec = BlockCodec(coder: try ErasureCoder(), compressor: ZeroRunCompressor())
        let content = [UInt8](repeating: 0, count: 100_000) + [1, 2, 3]
        let block = try codec.encode(content, readers: [reader.publicKey])
        #expect(block.manifest.compression == 200)
        #expect(block.manifest.sealedLength < 2_000)
        #expect(try codec.decode(manifest: block.manifest, shards: block.shards, reader: reader) == content)
    }

    @Test func tamperedShardIsDetectedAndIgnored() throws {
        let codec = try codec()
        let content = Array("the quick brown fox".utf8) + [UInt8](repeating: 7, count: 9000)
        let block = try codec.encode(content, readers: [reader.publicKey])
        var slots: [[UInt8]?] = block.shards
        slots[2]![17] ^= 0x40
        #expect(!BlockCodec.verifyShard(slots[2]!, index: 2, of: block.manifest))
        // Ignored as missing: with 4 others gone too, the error names the corrupt shard.
        #expect(try codec.decode(manifest: block.manifest, shards: slots, reader: reader) == content)
        for i in [0, 5, 9, 13] { slots[i] = nil }
        let error = #expect(throws: HyperMeshError.self) {
            try codec.decode(manifest: block.manifest, shards: slots, reader: reader)
        }
        #expect(error?.code == .notEnoughShards)
        #expect(error?.reason.contains("5 of 14 shards are missing") == true)
        #expect(error?.reason.contains("[2] failed their SHA-256 check") == true)
    }

    @Test func onlySealedReadersCanOpen() throws {
        let codec = try codec()
        let other = P256.KeyAgreement.PrivateKey()
        let second = P256.KeyAgreement.PrivateKey()
        let block = try codec.encode([1, 2, 3], readers: [reader.publicKey, second.publicKey])
        #expect(try codec.decode(manifest: block.manifest, shards: block.shards, reader: second) == [1, 2, 3])
        let e = #expect(throws: HyperMeshError.self) { try codec.decode(manifest: block.manifest, shards: block.shards, reader: other) }
        #expect(e?.code == .noReaderKey)
        // A sealed key moved onto another block does not open there.
        let b2 = try codec.encode([4, 5, 6], readers: [other.publicKey])
        let swapped = try BlockManifest(
            blockID: b2.manifest.blockID, dataShards: 10, parityShards: 4, shardSize: b2.manifest.shardSize,
            sealedLength: b2.manifest.sealedLength, plainLength: 3, compression: 0, shardHashes: b2.manifest.shardHashes,
            readers: [block.manifest.readers[0]]
        )
        let e2 = #expect(throws: HyperMeshError.self) { try codec.decode(manifest: swapped, shards: b2.shards, reader: reader) }
        #expect(e2?.code == .decryptionFailed)
    }

    @Test func manifestRoundTripsAndRejectsTruncation() throws {
        let block = try codec().encode(Array(repeating: 9, count: 5000), readers: [reader.publicKey])
        let bytes = block.manifest.encoded()
        #expect(try BlockManifest(decoding: bytes) == block.manifest)
        for cut in [0, 3, 5, 40, bytes.count - 1] {
            #expect(throws: HyperMeshError.self) { try BlockManifest(decoding: Array(bytes[0..<cut])) }
        }
        #expect(throws: HyperMeshError.self) { try BlockManifest(decoding: bytes + [0]) }
        var badVersion = bytes
        badVersion[4] = 9
        let e = #expect(throws: HyperMeshError.self) { try BlockManifest(decoding: badVersion) }
        #expect(e?.reason.contains("unsupported version 9") == true)
    }

    @Test func decodersSurviveSeededGarbage() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        let valid = try codec().encode([1, 2, 3], readers: [reader.publicKey]).manifest.encoded()
        let receipt = try StorageReceipt.sign(
            blockID: .hashing([1]), shardIndex: 3, shardHash: .hashing([2]), key: P256.Signing.PrivateKey()
        ).encoded()
        for _ in 0..<3000 {
            let n = Int.random(in: 0...400, using: &rng)
            let garbage = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            BlockManifest.fuzz(garbage)
            StorageReceipt.fuzz(garbage)
            // Mutations of valid inputs reach deeper.
            for base in [valid, receipt] {
                var mutated = base
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    mutated[Int.random(in: 0..<mutated.count, using: &rng)] = UInt8(truncatingIfNeeded: rng.next())
                }
                if Bool.random(using: &rng) { mutated = Array(mutated.prefix(Int.random(in: 0...mutated.count, using: &rng))) }
                BlockManifest.fuzz(mutated)
                StorageReceipt.fuzz(mutated)
            }
        }
        BlockManifest.fuzz(valid)
        StorageReceipt.fuzz(receipt)
        print("garbage seed \(seed)")
    }
}

@Suite struct ZstdBlockTests {
    let reader = P256.KeyAgreement.PrivateKey()

    @Test func zstdIsTheDefaultStepAndShrinksRedundantBlocks() throws {
        let codec = BlockCodec(coder: try ErasureCoder())
        let content = Array(String(repeating: "HyperMesh block ", count: 10_000).utf8)
        let block = try codec.encode(content, readers: [reader.publicKey])
        #expect(block.manifest.compression == BlockCompressionID.zstd)
        #expect(block.manifest.sealedLength < content.count / 20)
        var slots: [[UInt8]?] = block.shards
        for i in [0, 4, 8, 12] { slots[i] = nil }
        #expect(try codec.decode(manifest: block.manifest, shards: slots, reader: reader) == content)
        for empty in [[UInt8](), [42]] {
            let b = try codec.encode(empty, readers: [reader.publicKey])
            #expect(try codec.decode(manifest: b.manifest, shards: b.shards, reader: reader) == empty)
        }
    }

    @Test func aZstdCodecReadsUncompressedBlocksAndViceVersa() throws {
        let plain = BlockCodec(coder: try ErasureCoder(), compressor: NoCompression())
        let zstd = BlockCodec(coder: try ErasureCoder())
        let content = (0..<3000).map { UInt8($0 % 7) }
        let a = try plain.encode(content, readers: [reader.publicKey])
        let b = try zstd.encode(content, readers: [reader.publicKey])
        #expect(try zstd.decode(manifest: a.manifest, shards: a.shards, reader: reader) == content)
        #expect(try plain.decode(manifest: b.manifest, shards: b.shards, reader: reader) == content)
    }
}
