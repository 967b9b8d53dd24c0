import Crypto
import Foundation
import Testing
import TestVectorSupport
import STOQIdentity
@testable import STOQContent

/// The sealed-content test vectors of docs/PROTOCOL.md (`docs/test-vectors/sealed.json`): the
/// content tree's `hello.txt` put sealed with the vector publisher and the content key 20…3f,
/// and that key wrapped for a fixed reader. `STOQ_WRITE_VECTORS=1` rewrites the file.
@Suite struct SealedVectorTests {
    struct Vectors: Codable, Equatable {
        var comment: String
        var contentKey: String
        var metaKey: String
        var contentId: String
        var contentIdHex: String
        var index: String
        var sealedManifestId: String
        var sealedManifest: String
        var manifest: String
        var readerPrivateKey: String
        var readerPublicText: String
        /// HPKE is randomized: a writer will not reproduce it; it must open to the content key.
        var envelope: String
    }

    static let contentKey = (32..<64).map { UInt8($0) }
    static let readerPrivate = Array(SHA256.hash(data: Array("stoq test vector reader".utf8)))

    static func compute() throws -> Vectors {
        let keys = try PublisherKeys(secret: TestVectorTests.secret)
        let store = MemoryChunkStore()
        let publisher = ContentPublisher(store: store, keys: keys, policy: TestVectorTests.policy, fanout: TestVectorTests.fanout, workers: 1)
        let report = try publisher.putSealed(path: TestVectorTests.directory + "/content-tree/hello.txt", contentKey: contentKey)
        let indexBytes = try store.read(report.id.manifest)
        let index = try SealedIndex.decode(indexBytes)
        // The document's derivation, step by step.
        let metaKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: contentKey), info: Array("stoq manifest key v1".utf8), outputByteCount: 32)
        let rootPlain = Array(try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: index.sealedRoot), using: metaKey, authenticating: Array("stoq sealed root".utf8)))
        let innerID = try #require(ChunkID(bytes: rootPlain))
        let sealed = try store.read(innerID)
        let plain = Array(try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: sealed), using: metaKey, authenticating: Array("stoq sealed manifest".utf8)))
        let mac = Array(HMAC<SHA256>.authenticationCode(for: Array("stoq sealed manifest".utf8) + plain, using: metaKey))
        #expect(Array(sealed.prefix(12)) == Array(mac.prefix(12)), "the nonce is the HMAC's first 12 bytes")
        let reader = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: readerPrivate)
        let envelope = try ReaderKeyEnvelope.seal(contentKey: contentKey, content: report.id, for: reader.publicKey)
        return Vectors(
            comment: "STOQ sealed-content test vectors: see docs/PROTOCOL.md, Test vectors. Recomputed by Tests/STOQContentTests/SealedVectorTests.swift.",
            contentKey: Hex.encode(contentKey), metaKey: Hex.encode(metaKey.withUnsafeBytes { Array($0) }),
            contentId: report.id.description, contentIdHex: report.id.manifest.hex, index: Hex.encode(indexBytes),
            sealedManifestId: innerID.hex, sealedManifest: Hex.encode(sealed), manifest: Hex.encode(plain),
            readerPrivateKey: Hex.encode(readerPrivate), readerPublicText: ReaderKey.text(reader.publicKey),
            envelope: Hex.encode(envelope.encode()))
    }

    @Test func sealedVectorsMatchTheCode() throws {
        let computed = try Self.compute()
        if TestVectors.rewriting {
            try TestVectors.write(computed, to: "sealed.json")
            return
        }
        let committed = try TestVectors.read(Vectors.self, from: "sealed.json")
        var expected = computed
        expected.envelope = committed.envelope
        #expect(committed == expected, "the sealed format changed; after a deliberate change STOQ_WRITE_VECTORS=1 rewrites the vectors")
        let reader = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: try TestVectors.bytes(committed.readerPrivateKey))
        let envelope = try ReaderKeyEnvelope.decode(try TestVectors.bytes(committed.envelope))
        #expect(try envelope.open(with: reader) == Self.contentKey)
        #expect(envelope.content.description == committed.contentId)
    }
}
