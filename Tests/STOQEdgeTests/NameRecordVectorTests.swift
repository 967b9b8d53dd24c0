import Crypto
import Foundation
import STOQContent
import STOQIdentity
import Testing
import TestVectorSupport
@testable import STOQEdge

/// The name-record example of `docs/PROTOCOL.md` (`docs/test-vectors/name-record.json`): the
/// body is recomputed and compared byte for byte, and the committed signature must verify over
/// the domain string and the body with the committed owner key (ECDSA signatures are randomized,
/// so the signature itself is not recomputed). `STOQ_WRITE_VECTORS=1` rewrites the file.
@Suite struct NameRecordVectorTests {
    struct Vector: Codable, Equatable {
        var comment: String
        /// The owner's private scalar: SHA-256("stoq test vector owner").
        var ownerPrivateKey: String
        /// X9.63 uncompressed public key.
        var ownerPublicKey: String
        var name: String
        var contentId: String
        var version: UInt64
        var ttlSeconds: UInt32
        /// Everything before the signature.
        var body: String
        /// "STOQ name record v1" ‖ body: what is hashed (SHA-256) and signed.
        var signedBytes: String
        /// Raw r ‖ s.
        var signature: String
        /// body ‖ signature: the `record` field of NAME_RECORD and NAME_PUBLISH.
        var record: String
    }

    struct Tree: Codable { var contentId: String }

    @Test func nameRecordVectorMatchesTheCode() throws {
        let tree = try TestVectors.read(Tree.self, from: "content-tree.json")
        let content = try #require(ContentID(tree.contentId))
        let scalar = Array(SHA256.hash(data: Array("stoq test vector owner".utf8)))
        let owner = try P256.Signing.PrivateKey(rawRepresentation: scalar)
        let publicKey = Array(owner.publicKey.x963Representation)
        let body = NameRecord.encodeBody(name: "example", content: content, version: 3, ttlSeconds: 300, ownerKey: publicKey)
        let signed = Array("STOQ name record v1".utf8) + body
        if TestVectors.rewriting {
            let record = try NameRecord.sign(name: "example", content: content, version: 3, ttlSeconds: 300, owner: owner)
            let encoded = record.encode()
            let vector = Vector(
                comment: "STOQ name record example: see docs/PROTOCOL.md, section Mutable names. Checked by Tests/STOQEdgeTests/NameRecordVectorTests.swift.",
                ownerPrivateKey: Hex.encode(scalar), ownerPublicKey: Hex.encode(publicKey), name: "example", contentId: content.description,
                version: 3, ttlSeconds: 300, body: Hex.encode(body), signedBytes: Hex.encode(signed),
                signature: Hex.encode(record.signature), record: Hex.encode(encoded))
            try TestVectors.write(vector, to: "name-record.json")
            return
        }
        let vector = try TestVectors.read(Vector.self, from: "name-record.json")
        #expect(vector.ownerPrivateKey == Hex.encode(scalar))
        #expect(vector.ownerPublicKey == Hex.encode(publicKey))
        #expect(vector.contentId == content.description)
        #expect(vector.body == Hex.encode(body))
        #expect(vector.signedBytes == Hex.encode(signed))
        #expect(vector.record == vector.body + vector.signature)
        // The committed signature verifies as the document says: ECDSA P-256, SHA-256 of the signed bytes.
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: try TestVectors.bytes(vector.signature))
        #expect(owner.publicKey.isValidSignature(signature, for: signed))
        let record = try NameRecord.decode(try TestVectors.bytes(vector.record))
        #expect(record.hasValidSignature)
        #expect(record.name == "example" && record.version == 3 && record.ttlSeconds == 300 && record.content == content)
    }
}
