import Testing
@testable import Nexus
import STOQSimulation

/// Straight from the definitions of RFC 9162 §2.1.1–2.1.4, on an array of leaf hashes.
enum ReferenceMerkle {
    static func k(_ n: Int) -> Int { var k = 1; while k * 2 < n { k *= 2 }; return k }
    static func mth(_ d: ArraySlice<NexusHash>) -> NexusHash {
        if d.isEmpty { return Merkle.emptyRoot }
        if d.count == 1 { return d.first! }
        let s = d.startIndex, kk = k(d.count)
        return Merkle.nodeHash(mth(d[s..<s + kk]), mth(d[(s + kk)...]))
    }
    static func path(_ m: Int, _ d: ArraySlice<NexusHash>) -> [NexusHash] {
        if d.count <= 1 { return [] }
        let s = d.startIndex, kk = k(d.count)
        if m < kk { return path(m, d[s..<s + kk]) + [mth(d[(s + kk)...])] }
        return path(m - kk, d[(s + kk)...]) + [mth(d[s..<s + kk])]
    }
    static func subproof(_ m: Int, _ d: ArraySlice<NexusHash>, _ b: Bool) -> [NexusHash] {
        let n = d.count, s = d.startIndex
        if m == n { return b ? [] : [mth(d)] }
        let kk = k(n)
        if m <= kk { return subproof(m, d[s..<s + kk], b) + [mth(d[(s + kk)...])] }
        return subproof(m - kk, d[(s + kk)...], false) + [mth(d[s..<s + kk])]
    }
}

func randomTree(_ rng: inout SplitMix64, size: Int) -> (MerkleTree, [NexusHash]) {
    var t = MerkleTree(), leaves: [NexusHash] = []
    for _ in 0..<size {
        let entry = (0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        leaves.append(Merkle.leafHash(entry)); t.append(entry: entry)
    }
    return (t, leaves)
}

func flipBit(_ h: NexusHash, _ bit: Int) -> NexusHash { h.flippingBit(bit % 256) }

@Suite struct MerkleTests {
    @Test func rfc6962TestVectors() throws {
        // The leaves and roots of the certificate-transparency reference tests (RFC 6962 / 9162).
        let inputs: [[UInt8]] = [[], [0x00], [0x10], [0x20, 0x21], [0x30, 0x31], [0x40, 0x41, 0x42, 0x43],
                                 [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57], Array(0x60...0x6f)]
        let roots = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                     "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                     "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                     "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                     "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                     "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                     "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                     "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
        var t = MerkleTree()
        #expect(try t.rootHash() == NexusHash(hex: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
        for (i, e) in inputs.enumerated() {
            t.append(entry: e)
            #expect(try t.rootHash().hex == roots[i], "size \(i + 1)")
        }
    }

    @Test(arguments: [1 as UInt64, 2, 3, 4])
    func proofsMatchReferenceAndVerify(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let size = seed == 4 ? 300 : Int(1 + rng.next() % 130)
        let (tree, leaves) = randomTree(&rng, size: size)
        let root = try tree.rootHash()
        #expect(root == ReferenceMerkle.mth(leaves[...]), "seed \(seed)")
        for n in 1...size where seed == 4 ? n % 37 == 0 || n == size : true {
            let rootN = try tree.rootHash(size: UInt64(n))
            #expect(rootN == ReferenceMerkle.mth(leaves[0..<n]), "seed \(seed) n \(n)")
            for m in 0..<n {
                let proof = try tree.inclusionProof(index: UInt64(m), size: UInt64(n))
                #expect(proof == ReferenceMerkle.path(m, leaves[0..<n]), "seed \(seed) PATH(\(m), \(n))")
                try Merkle.verifyInclusion(leafHash: leaves[m], index: UInt64(m), size: UInt64(n), proof: proof, root: rootN)
            }
            for m in 1...n {
                let proof = try tree.consistencyProof(old: UInt64(m), new: UInt64(n))
                #expect(proof == ReferenceMerkle.subproof(m, leaves[0..<n], true), "seed \(seed) PROOF(\(m), \(n))")
                try Merkle.verifyConsistency(oldSize: UInt64(m), newSize: UInt64(n), oldRoot: try tree.rootHash(size: UInt64(m)), newRoot: rootN, proof: proof)
            }
        }
    }

    @Test(arguments: [11 as UInt64, 12, 13])
    func everySingleBitFlipFails(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let size = Int(2 + rng.next() % 70)
        let (tree, leaves) = randomTree(&rng, size: size)
        let root = try tree.rootHash()
        for _ in 0..<40 {
            let m = Int(rng.next() % UInt64(size))
            let proof = try tree.inclusionProof(index: UInt64(m))
            // Flip each bit of each proof element, of the leaf hash and of the root.
            for j in proof.indices {
                for bit in 0..<256 where bit % 7 == Int(rng.next() % 7) {
                    var bad = proof; bad[j] = flipBit(bad[j], bit)
                    #expect(throws: NexusError.self, "seed \(seed)") { try Merkle.verifyInclusion(leafHash: leaves[m], index: UInt64(m), size: UInt64(size), proof: bad, root: root) }
                }
            }
            let bit = Int(rng.next() % 256)
            #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: flipBit(leaves[m], bit), index: UInt64(m), size: UInt64(size), proof: proof, root: root) }
            #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: leaves[m], index: UInt64(m), size: UInt64(size), proof: proof, root: flipBit(root, bit)) }
            // A wrong index or size (one bit flipped) must fail too.
            let wrongIndex = UInt64(m) ^ (1 << (rng.next() % 7))
            if wrongIndex != UInt64(m) {
                #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: leaves[m], index: wrongIndex, size: UInt64(size), proof: proof, root: root) }
            }
            // Consistency m→n.
            let old = UInt64(1 + rng.next() % UInt64(size - 1))
            let cproof = try tree.consistencyProof(old: old)
            let oldRoot = try tree.rootHash(size: old)
            for j in cproof.indices {
                var bad = cproof; bad[j] = flipBit(bad[j], Int(rng.next() % 256))
                #expect(throws: NexusError.self, "seed \(seed) \(old)→\(size) elem \(j)") {
                    try Merkle.verifyConsistency(oldSize: old, newSize: UInt64(size), oldRoot: oldRoot, newRoot: root, proof: bad)
                }
            }
            #expect(throws: NexusError.self) { try Merkle.verifyConsistency(oldSize: old, newSize: UInt64(size), oldRoot: flipBit(oldRoot, bit), newRoot: root, proof: cproof) }
            #expect(throws: NexusError.self) { try Merkle.verifyConsistency(oldSize: old, newSize: UInt64(size), oldRoot: oldRoot, newRoot: flipBit(root, bit), proof: cproof) }
            #expect(throws: NexusError.self) { try Merkle.verifyConsistency(oldSize: old, newSize: UInt64(size), oldRoot: oldRoot, newRoot: root, proof: Array(cproof.dropLast())) }
        }
    }

    @Test func errorsAreTyped() throws {
        var t = MerkleTree()
        for i in 0..<5 { t.append(entry: [UInt8(i)]) }
        let root = try t.rootHash()
        let proof = try t.inclusionProof(index: 2)
        var bad = proof; bad[0] = flipBit(bad[0], 3)
        let e = #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: Merkle.leafHash([2]), index: 2, size: 5, proof: bad, root: root) }
        #expect(e?.code == .rootMismatch)
        let e2 = #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: Merkle.leafHash([2]), index: 2, size: 5, proof: proof + [root], root: root) }
        #expect(e2?.code == .invalidProof)
        let e3 = #expect(throws: NexusError.self) { try Merkle.verifyInclusion(leafHash: Merkle.leafHash([2]), index: 7, size: 5, proof: proof, root: root) }
        #expect(e3?.code == .invalidIndex)
    }
}
