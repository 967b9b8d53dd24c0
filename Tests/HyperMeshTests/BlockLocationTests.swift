import Crypto
import Foundation
import STOQNode
import STOQSimulation
import Testing

@testable import HyperMesh

/// Finding a block without its record (sans-IO): which manifest and holders a reader trusts.
@Suite struct BlockLocationTests {
    struct Holder {
        let key = P256.Signing.PrivateKey()
        let address: PeerAddress
        var node: MeshNodeID { MeshNodeID(nodeKey: key.publicKey) }
    }

    static func block(seed: UInt64) throws -> EncodedBlock {
        let codec = BlockCodec(coder: try ErasureCoder(dataShards: 10, parityShards: 4), compressor: NoCompression())
        return try codec.encode(randomBytes(20_000, seed: seed), readers: [P256.KeyAgreement.PrivateKey().publicKey])
    }

    static func holders(_ n: Int) -> [Holder] {
        (0..<n).map { Holder(address: PeerAddress("[::1]:\(4100 + $0)")!) }
    }

    /// Node i holds shard i (and keeps the manifest when `replica` says so).
    static func answers(_ manifest: BlockManifest, _ holders: [Holder], replicas: Set<Int> = [0, 5, 9]) throws -> [HoldingsAnswer] {
        try holders.enumerated().map { i, h in
            let receipts = i < manifest.totalShards
                ? [try StorageReceipt.sign(blockID: manifest.blockID, shardIndex: i, shardHash: manifest.shardHashes[i], key: h.key)] : []
            return HoldingsAnswer(address: h.address, node: h.node, manifest: replicas.contains(i) ? manifest : nil, receipts: receipts)
        }
    }

    @Test func honestNodesGiveTheManifestAndEveryHolder() throws {
        let encoded = try Self.block(seed: 1)
        let holders = Self.holders(16)
        let found = try BlockLocation.choose(block: encoded.manifest.blockID, answers: try Self.answers(encoded.manifest, holders), asked: 16)
        #expect(found.count == 1)
        #expect(found[0].manifest == encoded.manifest)
        #expect(found[0].shardsFound == 14)
        #expect(found[0].manifestReplicas.count == 3)
        #expect(found[0].holders.allSatisfy { h in holders[h.shard].node == h.node && holders[h.shard].address == h.address })
    }

    @Test func receiptsThatDoNotVerifyAreIgnored() throws {
        let encoded = try Self.block(seed: 2)
        let m = encoded.manifest
        let holders = Self.holders(14)
        var answers = try Self.answers(m, holders)
        // Node 3 sends a receipt signed by another key (not the node the handshake authenticated);
        // node 4 one for a hash that is not the manifest's; node 5 one for another block.
        let stranger = P256.Signing.PrivateKey()
        answers[3] = HoldingsAnswer(address: holders[3].address, node: holders[3].node, manifest: nil, receipts: [
            try StorageReceipt.sign(blockID: m.blockID, shardIndex: 3, shardHash: m.shardHashes[3], key: stranger)])
        answers[4] = HoldingsAnswer(address: holders[4].address, node: holders[4].node, manifest: nil, receipts: [
            try StorageReceipt.sign(blockID: m.blockID, shardIndex: 4, shardHash: m.shardHashes[0], key: holders[4].key)])
        answers[5] = HoldingsAnswer(address: holders[5].address, node: holders[5].node, manifest: m, receipts: [
            try StorageReceipt.sign(blockID: m.shardHashes[5], shardIndex: 5, shardHash: m.shardHashes[5], key: holders[5].key)])
        let found = try BlockLocation.choose(block: m.blockID, answers: answers, asked: 14)
        #expect(found[0].shardsFound == 11)
        #expect(!found[0].holders.contains { [3, 4, 5].contains($0.shard) })
    }

    @Test func aForgedManifestComesAfterTheOneHonestHoldersSigned() throws {
        let real = try Self.block(seed: 3).manifest
        let other = try Self.block(seed: 4).manifest
        // A hostile replica sends a manifest under the real block id with its own shard hashes,
        // and signs receipts for all 14 of them itself.
        let forged = try BlockManifest(
            blockID: real.blockID, dataShards: 10, parityShards: 4, shardSize: other.shardSize, sealedLength: other.sealedLength,
            plainLength: other.plainLength, compression: other.compression, shardHashes: other.shardHashes, readers: other.readers)
        let holders = Self.holders(15)
        var answers = try Self.answers(real, Array(holders.prefix(14)))
        let liar = holders[14]
        answers.append(HoldingsAnswer(address: liar.address, node: liar.node, manifest: forged, receipts: try (0..<14).map {
            try StorageReceipt.sign(blockID: real.blockID, shardIndex: $0, shardHash: forged.shardHashes[$0], key: liar.key)
        }))
        let found = try BlockLocation.choose(block: real.blockID, answers: answers, asked: 15)
        #expect(found.first?.manifest == real, "the manifest 14 distinct honest holders signed for is tried first")
        // The forged one covers 14 shards too, from one node: it comes second, and its read fails
        // at the block id check (the rebuilt bytes do not hash to the id).
        #expect(found.count == 2 && found[1].manifest == forged)
        #expect(found[0].holders.count == 14 && found[0].manifestReplicas.count == 3)
    }

    @Test func clearErrorsWhenNothingOrTooLittleIsFound() throws {
        let encoded = try Self.block(seed: 5)
        let m = encoded.manifest
        let holders = Self.holders(16)
        // Nobody keeps the manifest.
        do {
            _ = try BlockLocation.choose(block: m.blockID, answers: try Self.answers(m, holders, replicas: []), asked: 16)
            Issue.record("no manifest: should fail")
        } catch let error as HyperMeshError {
            #expect(error.code == .notFound)
            #expect(error.reason.contains("none of the 16 storage nodes asked"), "\(error.reason)")
        }
        // A manifest naming another block is not taken.
        let stray = try Self.block(seed: 6).manifest
        let strayAnswers = [HoldingsAnswer(address: holders[0].address, node: holders[0].node, manifest: stray, receipts: [])]
        #expect(throws: HyperMeshError.self) { try BlockLocation.choose(block: m.blockID, answers: strayAnswers, asked: 1) }
        // Holders of only 9 shards among the nodes asked (10 needed).
        do {
            _ = try BlockLocation.choose(block: m.blockID, answers: Array(try Self.answers(m, holders).prefix(9)), asked: 9)
            Issue.record("9 shards: should fail")
        } catch let error as HyperMeshError {
            #expect(error.code == .notEnoughShards)
            #expect(error.reason.contains("only 9 of its 14 shards (10 needed)"), "\(error.reason)")
        }
    }
}
