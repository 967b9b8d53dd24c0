import Crypto
import Foundation
import STOQIdentity
import Testing

@testable import HyperMesh
import STOQSimulation

@Suite struct ReceiptAuditChallengeTests {
    let reader = P256.KeyAgreement.PrivateKey()

    @Test func receiptsVerifyAndForgeriesAreRefused() throws {
        let block = try BlockCodec(coder: try ErasureCoder(), compressor: NoCompression()).encode((0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }, readers: [reader.publicKey])
        #expect(Set(block.manifest.shardHashes).count == 14)
        let m = block.manifest
        let nodeKey = P256.Signing.PrivateKey()
        let node = MeshNodeID(nodeKey: nodeKey.publicKey)
        let good = try StorageReceipt.sign(blockID: m.blockID, shardIndex: 4, shardHash: m.shardHashes[4], key: nodeKey)
        #expect(good.node == node)
        #expect(good.verify(against: m, expectedNode: node) == .valid)
        #expect(try StorageReceipt(decoding: good.encoded()) == good)

        // Another key signs, claiming to be `node`'s shard: wrong signer.
        let forger = P256.Signing.PrivateKey()
        let forged = try StorageReceipt.sign(blockID: m.blockID, shardIndex: 4, shardHash: m.shardHashes[4], key: forger)
        #expect(forged.verify(against: m, expectedNode: node) != .valid)
        // The forger pastes node's public key over its own signature.
        let pasted = StorageReceipt(blockID: m.blockID, shardIndex: 4, shardHash: m.shardHashes[4], nodeKey: good.nodeKey, signature: forged.signature)
        guard case .invalid(let reason) = pasted.verify(against: m, expectedNode: node) else {
            Issue.record("pasted key accepted")
            return
        }
        #expect(reason.contains("signature"))
        // Right signer, wrong shard hash or index.
        let wrongHash = try StorageReceipt.sign(blockID: m.blockID, shardIndex: 4, shardHash: m.shardHashes[5], key: nodeKey)
        #expect(wrongHash.verify(against: m) != .valid)
        let moved = StorageReceipt(blockID: m.blockID, shardIndex: 5, shardHash: m.shardHashes[5], nodeKey: good.nodeKey, signature: good.signature)
        #expect(moved.verify(against: m) != .valid)
    }

    /// Receipts signed through a signer (a key in a token) verify like those of a key in memory,
    /// and a storage service built on one signs its receipts there.
    @Test func receiptsSignedThroughAnOpaqueSignerVerify() throws {
        let block = try BlockCodec(coder: try ErasureCoder()).encode([1, 2, 3], readers: [reader.publicKey])
        let m = block.manifest
        let signer: any CertificateSigner = SoftwareSigner(P256.Signing.PrivateKey())
        let node = MeshNodeID(nodeKey: try #require(signer.p256PublicKey))
        let receipt = try StorageReceipt.sign(blockID: m.blockID, shardIndex: 2, shardHash: m.shardHashes[2], key: signer)
        #expect(receipt.node == node)
        #expect(receipt.verify(against: m, expectedNode: node) == .valid)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("receipt-signer-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let service = try StorageService(store: try ShardStore(directory: directory), signer: signer, region: "r")
        #expect(service.node == node)
    }

    @Test func proofNeedsKPlusTwoDistinctVerifiedReceipts() throws {
        let block = try BlockCodec(coder: try ErasureCoder()).encode([9, 9], readers: [reader.publicKey])
        let m = block.manifest
        let keys = (0..<14).map { _ in P256.Signing.PrivateKey() }
        let receipts = try (0..<14).map { try StorageReceipt.sign(blockID: m.blockID, shardIndex: $0, shardHash: m.shardHashes[$0], key: keys[$0]) }
        #expect(BlockProof(blockID: m.blockID, receipts: Array(receipts.prefix(12))).verify(against: m))
        #expect(!BlockProof(blockID: m.blockID, receipts: Array(receipts.prefix(11))).verify(against: m))
        // Duplicates of one shard do not count twice.
        #expect(!BlockProof(blockID: m.blockID, receipts: Array(receipts.prefix(11)) + [receipts[0]]).verify(against: m))
    }

    @Test func auditLogDetectsAnyChange() {
        var log = AuditLog()
        let b = BlockID.hashing([1])
        let n1 = MeshNodeID.hashing([2]), n2 = MeshNodeID.hashing([3])
        log.append(.transfer(block: b, shard: 0, from: nil, to: n1), now: .seconds(1))
        log.append(.commit(block: b, receipts: 12), now: .seconds(2))
        log.append(.shardLost(block: b, shard: 0, node: n1, reason: "challenge failed"), now: .seconds(3))
        log.append(.transfer(block: b, shard: 0, from: n1, to: n2), now: .seconds(4))
        #expect(log.verify() == .intact)
        #expect(log.head == log.entries[3].hash)

        var entries = log.entries
        let e = entries[1]
        entries[1] = AuditEntry(sequence: e.sequence, time: e.time, event: .commit(block: b, receipts: 14), previous: e.previous, hash: e.hash)
        #expect(AuditLog(entries: entries).verify() == .broken(at: 1, reason: "entry content does not match its hash"))

        // Rewriting an entry with a fresh hash breaks the next link.
        entries = log.entries
        let fresh = AuditEntry.computeHash(sequence: 1, time: e.time, event: .commit(block: b, receipts: 14), previous: e.previous)
        entries[1] = AuditEntry(sequence: 1, time: e.time, event: .commit(block: b, receipts: 14), previous: e.previous, hash: fresh)
        guard case .broken(at: 2, _) = AuditLog(entries: entries).verify() else {
            Issue.record("rewrite not detected")
            return
        }
        // Removing an entry is detected.
        entries = log.entries
        entries.remove(at: 2)
        #expect(AuditLog(entries: entries).verify() != .intact)
    }

    @Test func challengesPassOrMarkTheShardLost() {
        var rng = SplitMix64(seed: 42)
        let shard = (0..<10_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let b = BlockID.hashing([7])
        let node = MeshNodeID.hashing([8])
        var tracker = ChallengeTracker(timeout: .seconds(10))
        let c = (0..<4).map { StorageChallenge.prepare(id: UInt64($0), blockID: b, shardIndex: 2, node: node, shard: shard, using: &rng) }
        for ch in c { tracker.handleSent(ch, now: .zero) }
        // Honest holder.
        tracker.handleAnswer(id: 0, digest: StorageChallenge.answer(nonce: c[0].nonce, offset: c[0].offset, length: c[0].length, shard: shard), now: .seconds(1))
        #expect(tracker.pollEvent() == .passed(block: b, shard: 2, node: node))
        // Holder with a corrupted copy.
        var bad = shard
        for i in c[1].offset..<(c[1].offset + c[1].length) { bad[i] ^= 1 }
        tracker.handleAnswer(id: 1, digest: StorageChallenge.answer(nonce: c[1].nonce, offset: c[1].offset, length: c[1].length, shard: bad), now: .seconds(1))
        guard case .shardLost(_, 2, node, let reason)? = tracker.pollEvent() else {
            Issue.record("wrong answer not reported")
            return
        }
        #expect(reason.contains("wrong hash"))
        // "I do not have it".
        tracker.handleAnswer(id: 2, digest: nil, now: .seconds(2))
        guard case .shardLost? = tracker.pollEvent() else {
            Issue.record("missing answer not reported")
            return
        }
        // No answer at all.
        #expect(tracker.nextDeadline == .seconds(10))
        tracker.handleTimeout(now: .seconds(11))
        guard case .shardLost(_, _, _, let r)? = tracker.pollEvent() else {
            Issue.record("timeout not reported")
            return
        }
        #expect(r.contains("no answer"))
        #expect(tracker.pollEvent() == nil)
    }
}
