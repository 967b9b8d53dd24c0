import Crypto
import Foundation
import STOQContent
import Testing
@testable import STOQEdge

/// The name-record example of `docs/PROTOCOL.md` (`docs/test-vectors/name-record.json`): the
/// body is recomputed and compared byte for byte, and the committed signature must verify over
/// the domain string and the body with the committed owner key (ECDSA signatures are randomized,
/// so the signature itself is not recomputed). `STOQ_WRITE_VECTORS=1` rewrites the file.
@Suite struct NameRecordVectorTests {
    static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("docs/test-vectors").path
    }()

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

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    static func bytes(_ hex: String) -> [UInt8] {
        var out = [UInt8]()
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    @Test func nameRecordVectorMatchesTheCode() throws {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let tree = try decoder.decode(Tree.self, from: Data(contentsOf: URL(fileURLWithPath: Self.directory + "/content-tree.json")))
        let content = try #require(ContentID(tree.contentId))
        let scalar = Array(SHA256.hash(data: Array("stoq test vector owner".utf8)))
        let owner = try P256.Signing.PrivateKey(rawRepresentation: scalar)
        let publicKey = Array(owner.publicKey.x963Representation)
        let body = NameRecord.encodeBody(name: "example", content: content, version: 3, ttlSeconds: 300, ownerKey: publicKey)
        let signed = Array("STOQ name record v1".utf8) + body
        let path = Self.directory + "/name-record.json"
        if ProcessInfo.processInfo.environment["STOQ_WRITE_VECTORS"] == "1" {
            let record = try NameRecord.sign(name: "example", content: content, version: 3, ttlSeconds: 300, owner: owner)
            let encoded = record.encode()
            let vector = Vector(
                comment: "STOQ name record example: see docs/PROTOCOL.md, section Mutable names. Checked by Tests/STOQEdgeTests/NameRecordVectorTests.swift.",
                ownerPrivateKey: Self.hex(scalar), ownerPublicKey: Self.hex(publicKey), name: "example", contentId: content.description,
                version: 3, ttlSeconds: 300, body: Self.hex(body), signedBytes: Self.hex(signed),
                signature: Self.hex(record.signature), record: Self.hex(encoded))
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            var data = try encoder.encode(vector)
            data.append(0x0A)
            try data.write(to: URL(fileURLWithPath: path))
            return
        }
        let vector = try decoder.decode(Vector.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(vector.ownerPrivateKey == Self.hex(scalar))
        #expect(vector.ownerPublicKey == Self.hex(publicKey))
        #expect(vector.contentId == content.description)
        #expect(vector.body == Self.hex(body))
        #expect(vector.signedBytes == Self.hex(signed))
        #expect(vector.record == vector.body + vector.signature)
        // The committed signature verifies as the document says: ECDSA P-256, SHA-256 of the signed bytes.
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: Self.bytes(vector.signature))
        #expect(owner.publicKey.isValidSignature(signature, for: signed))
        let record = try NameRecord.decode(Self.bytes(vector.record))
        #expect(record.hasValidSignature)
        #expect(record.name == "example" && record.version == 3 && record.ttlSeconds == 300 && record.content == content)
    }
}
