import Crypto
import Foundation
import Testing
@testable import Nexus

func tempDir() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nexus-test-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func fakeCert(_ i: Int) -> [UInt8] { [0x30, 0x82] + Array("certificate number \(i)".utf8) }

@Suite struct TransparencyLogTests {
    @Test func appendProveAndVerifyAgainstReference() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = P256.Signing.PrivateKey()
        let log = try TransparencyLog(path: dir + "/log.sqlite", signingKey: key)
        var mirror = MerkleTree()
        var heads: [SignedTreeHead] = []
        for i in 0..<77 {
            let receipt = try log.append(fakeCert(i), now: 1_000 + UInt64(i))
            #expect(receipt.index == UInt64(i))
            try receipt.verify(publicKey: key.publicKey)
            mirror.append(entry: fakeCert(i))
            if i % 10 == 3 || i == 76 { heads.append(try log.signedTreeHead(now: 2_000 + UInt64(i))) }
        }
        #expect(try log.size() == 77)
        // Re-appending returns the same index.
        #expect(try log.append(fakeCert(5), now: 9_999).index == 5)
        for h in heads {
            try h.verify(publicKey: key.publicKey)
            #expect(h.rootHash == (try mirror.rootHash(size: h.treeSize)))
            for m in 0..<h.treeSize {
                let b = try log.inclusionBundle(index: m, head: h)
                #expect(b.proof == (try mirror.inclusionProof(index: m, size: h.treeSize)))
                try b.verify(entry: fakeCert(Int(m)), publicKey: key.publicKey)
            }
        }
        for (a, b) in zip(heads, heads.dropFirst()) {
            let bundle = ConsistencyBundle(old: a, new: b, proof: try log.consistencyProof(old: a.treeSize, new: b.treeSize))
            try bundle.verify(publicKey: key.publicKey)
        }
        #expect(try log.verifyIntegrity() == 77)
        // Reopen: state persists.
        let again = try TransparencyLog(path: dir + "/log.sqlite", signingKey: key)
        #expect(try again.latestHead() == heads.last)
        let bundle = try again.proveLogged(fakeCert(42), now: 5_000)
        try bundle.verify(publicKey: key.publicKey)
        let e = #expect(throws: NexusError.self) { try again.proveLogged(fakeCert(1000), now: 5_000) }
        #expect(e?.code == .notLogged)
        // A different key cannot open the log or vouch for its heads.
        let other = P256.Signing.PrivateKey()
        #expect(throws: NexusError.self) { try TransparencyLog(path: dir + "/log.sqlite", signingKey: other) }
        #expect(throws: NexusError.self) { try heads[0].verify(publicKey: other.publicKey) }
    }

    @Test func tamperedNodeMakesProofsFailAndSigningRefuse() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = P256.Signing.PrivateKey()
        let log = try TransparencyLog(path: dir + "/log.sqlite", signingKey: key)
        for i in 0..<20 { _ = try log.append(fakeCert(i), now: UInt64(i)) }
        let head = try log.signedTreeHead(now: 100)
        // A changed node below a stored ancestor is not used by proofs, but the integrity check sees it.
        try log._unsafeExecute(sql: "UPDATE nodes SET hash = ? WHERE level = 3 AND idx = 0", arguments: [Data(repeating: 0xAB, count: 32)])
        #expect(#expect(throws: NexusError.self) { try log.verifyIntegrity() }?.code == .logTampered)
        // Change the node over leaves 0-15, which proofs for later leaves use.
        try log._unsafeExecute(sql: "UPDATE nodes SET hash = ? WHERE level = 4 AND idx = 0", arguments: [Data(repeating: 0xCD, count: 32)])
        let bundle = try log.inclusionBundle(index: 17, head: head)
        let e = #expect(throws: NexusError.self) { try bundle.verify(publicKey: key.publicKey) }
        #expect(e?.code == .rootMismatch)
        let e2 = #expect(throws: NexusError.self) { try log.verifyIntegrity() }
        #expect(e2?.code == .logTampered)
        _ = try log.append(fakeCert(99), now: 200)
        let e3 = #expect(throws: NexusError.self) { try log.signedTreeHead(now: 300) }
        #expect(e3?.code == .logTampered)
    }

    @Test func tamperedLeafIsDetected() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = P256.Signing.PrivateKey()
        let log = try TransparencyLog(path: dir + "/log.sqlite", signingKey: key)
        for i in 0..<9 { _ = try log.append(fakeCert(i), now: UInt64(i)) }
        let head = try log.signedTreeHead(now: 100)
        // Swap the certificate bytes of entry 4: its stored leaf hash no longer matches.
        try log._unsafeExecute(sql: "UPDATE leaves SET entry = ? WHERE idx = 4", arguments: [Data(fakeCert(1234))])
        #expect((try? log.entry(at: 4)) == nil)
        let e = #expect(throws: NexusError.self) { try log.verifyIntegrity() }
        #expect(e?.code == .logTampered)
        // Rewrite the leaf hash as well: proofs for that entry stop matching the signed head.
        try log._unsafeExecute(sql: "UPDATE leaves SET leaf_hash = ? WHERE idx = 4", arguments: [Data(Merkle.leafHash(fakeCert(1234)).bytes)])
        let b = try log.inclusionBundle(index: 4, head: head)
        let e2 = #expect(throws: NexusError.self) { try b.verify(publicKey: key.publicKey) }
        #expect(e2?.code == .rootMismatch)
        // A forged signature on a head.
        var forged = head; forged.signature[forged.signature.count - 1] ^= 1
        let e3 = #expect(throws: NexusError.self) { try forged.verify(publicKey: key.publicKey) }
        #expect(e3?.code == .badSignature)
    }
}
