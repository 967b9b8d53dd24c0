import Testing
@testable import STOQContent

@Suite struct CryptoTests {
    @Test func zstdRoundTripAndBounds() throws {
        let data = textLike(200_000, seed: 5)
        let z = try Zstd.compress(data)
        #expect(z.count < data.count / 2)
        #expect(try Zstd.decompress(z, maxSize: data.count) == data)
        #expect(throws: Zstd.Error.self) { try Zstd.decompress(z, maxSize: 1000) }
        #expect(throws: Zstd.Error.self) { try Zstd.decompress([1, 2, 3, 4, 5, 6, 7, 8, 9], maxSize: 1000) }
        #expect(throws: Zstd.Error.self) { try Zstd.decompress(Array(z.dropLast(10)), maxSize: data.count) }
    }

    @Test func convergentEncryption() throws {
        let keys = PublisherKeys.random()
        let c = ConvergentCipher(keys: keys)
        let text = textLike(50_000, seed: 6)
        let a = try c.seal(text)
        let b = try c.seal(text)
        #expect(a.id == b.id && a.bytes == b.bytes, "same publisher, same chunk → same ciphertext (dedup)")
        #expect(a.compressed)
        #expect(a.id == ChunkID.of(a.bytes))
        #expect(try ConvergentCipher.open(a.bytes, key: a.key, expectedSize: text.count) == text)
        let other = try ConvergentCipher(keys: .random()).seal(text)
        #expect(other.id != a.id, "another publisher's ciphertext differs")
        var rng = SeededRNG(seed: 9)
        let noise = rng.bytes(10_000)
        let n = try c.seal(noise)
        #expect(!n.compressed)
        #expect(try ConvergentCipher.open(n.bytes, key: n.key, expectedSize: noise.count) == noise)
        var tampered = a.bytes
        tampered[10] ^= 1
        #expect(throws: ContentError(.decryptionFailed, "")) { try ConvergentCipher.open(tampered, key: a.key, expectedSize: text.count) }
        #expect(throws: ContentError(.decryptionFailed, "")) { try ConvergentCipher.open(a.bytes, key: n.key, expectedSize: text.count) }
    }

    @Test func keyTable() throws {
        let keys = PublisherKeys.random()
        let ks = (0..<5).map { _ in PublisherKeys.random().readKey.withUnsafeBytes { Array($0) } }
        let sealed = try KeyTable.seal(ks, readKey: keys.readKey)
        #expect(try KeyTable.seal(ks, readKey: keys.readKey) == sealed)
        #expect(try KeyTable.open(sealed, count: 5, readKey: keys.readKey) == ks)
        #expect(throws: ContentError(.decryptionFailed, "")) { try KeyTable.open(sealed, count: 5, readKey: PublisherKeys.random().readKey) }
        #expect(throws: ContentError(.malformed, "")) { try KeyTable.open(sealed, count: 4, readKey: keys.readKey) }
    }
}
