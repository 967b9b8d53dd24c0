import Crypto
import Foundation
import NIOCore
import STOQIdentity
import Testing
import TestVectorSupport
@testable import STOQWire

/// The ROUTING_ADVERTS (0x26) example of `docs/PROTOCOL.md` (`docs/test-vectors/routing-advert.json`):
/// the signed body and the frame are recomputed from the example's values and compared byte for
/// byte, the committed frame must decode to the same message and body, and the committed signature
/// must verify over the label and the body with the committed key (ECDSA signatures are randomized,
/// so the signature itself is not recomputed). `STOQ_WRITE_VECTORS=1` rewrites the file.
@Suite struct RoutingAdvertVectorTests {
    struct Vector: Codable, Equatable {
        var comment: String
        /// The signer's private scalar: SHA-256("stoq test vector routing advert").
        var signerPrivateKey: String
        /// The signer's SubjectPublicKeyInfo (DER).
        var signerSpki: String
        /// SHA-256 of the SubjectPublicKeyInfo: the body's `nodeID`.
        var nodeId: String
        /// The signer's routing id (the first 8 bytes of the node id), in hex.
        var routingId: String
        /// The advert's certificate reference (here 32 × 0xca: a certificate the receiver already holds).
        var certificateDigest: String
        /// The signed body.
        var body: String
        /// "STOQ routing advert v1" ‖ 0x00 ‖ body: what is hashed (SHA-256) and signed.
        var signedBytes: String
        /// ECDSA P-256 signature, DER.
        var signature: String
        /// The whole frame: type 0x26, length, payload (no certificates, one advert with hops 1, age 250 ms).
        var frame: String
    }

    /// The example's body: sequence, expiry, placement, Vivaldi coordinate, load, bandwidth and two links.
    static func body(nodeID: [UInt8]) -> RoutingAdvertMessage.Body {
        RoutingAdvertMessage.Body(
            nodeID: nodeID, sequence: 1_765_000_000_000_000_000, expiresAtMillis: 1_765_000_120_000, region: 7,
            latitude: 48.75, longitude: 2.25, coordinate: SIMD4(1.5, -2, 3.25, 0), height: 5, error: 0.5, load: 0.25,
            bandwidthBitsPerSecond: 8_000_000,
            links: [
                .init(to: 0x0102_0304_0506_0708, rttMilliseconds: 12.5, bandwidthBitsPerSecond: 1_000_000),
                .init(to: 0x1112_1314_1516_1718, rttMilliseconds: 40, bandwidthBitsPerSecond: 0),
            ])
    }

    @Test func routingAdvertVectorMatchesTheCode() throws {
        let scalar = Array(SHA256.hash(data: Array("stoq test vector routing advert".utf8)))
        let signer = try P256.Signing.PrivateKey(rawRepresentation: scalar)
        let spki = Array(signer.publicKey.derRepresentation)
        let nodeID = Array(SHA256.hash(data: spki))
        let body = Self.body(nodeID: nodeID)
        let bodyBytes = body.encoded()
        let signed = RoutingAdvertMessage.signingLabel + bodyBytes
        let digest = [UInt8](repeating: 0xCA, count: 32)
        func message(signature: [UInt8]) -> RoutingAdvertMessage {
            RoutingAdvertMessage(
                certificates: [],
                adverts: [.init(hops: 1, ageMilliseconds: 250, certificateDigest: digest, body: bodyBytes, signature: signature)])
        }
        if TestVectors.rewriting {
            let signature = Array(try signer.signature(for: signed).derRepresentation)
            let vector = Vector(
                comment: "STOQ ROUTING_ADVERTS (0x26) example: see docs/PROTOCOL.md, section Test vectors. Checked by Tests/STOQWireTests/RoutingAdvertVectorTests.swift.",
                signerPrivateKey: Hex.encode(scalar), signerSpki: Hex.encode(spki), nodeId: Hex.encode(nodeID),
                routingId: Hex.encode(Array(nodeID.prefix(8))), certificateDigest: Hex.encode(digest), body: Hex.encode(bodyBytes),
                signedBytes: Hex.encode(signed), signature: Hex.encode(signature),
                frame: Hex.encode(message(signature: signature).encoded().readableBytesView))
            try TestVectors.write(vector, to: "routing-advert.json")
            return
        }
        let vector = try TestVectors.read(Vector.self, from: "routing-advert.json")
        #expect(vector.signerPrivateKey == Hex.encode(scalar))
        #expect(vector.signerSpki == Hex.encode(spki))
        #expect(vector.nodeId == Hex.encode(nodeID))
        #expect(vector.routingId == Hex.encode(Array(nodeID.prefix(8))))
        #expect(body.routingID == nodeID.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        #expect(vector.certificateDigest == Hex.encode(digest))
        #expect(vector.body == Hex.encode(bodyBytes), "the bytes of the routing advert body changed")
        #expect(vector.signedBytes == Hex.encode(signed))
        // The committed signature verifies, and the frame around it is byte for byte the code's.
        let signature = try TestVectors.bytes(vector.signature)
        let ecdsa = try P256.Signing.ECDSASignature(derRepresentation: signature)
        #expect(signer.publicKey.isValidSignature(ecdsa, for: try TestVectors.bytes(vector.signedBytes)))
        let expected = message(signature: signature)
        #expect(vector.frame == Hex.encode(expected.encoded().readableBytesView), "the bytes of the ROUTING_ADVERTS frame changed")
        // The committed frame decodes to the message, and its body to the example's values.
        var decoder = FrameDecoder(maximumPayloadLength: RoutingAdvertMessage.maxPayloadLength)
        decoder.handle(bytes: ByteBuffer(bytes: try TestVectors.bytes(vector.frame)))
        let frame = try #require(try decoder.pollFrame())
        #expect(!decoder.hasPartialFrame)
        let decoded = try RoutingAdvertMessage.decode(frame)
        #expect(decoded == expected)
        #expect(try RoutingAdvertMessage.Body.decode(decoded.adverts[0].body) == body)
    }

    /// The field reader and writer shared by ROUTING_GOSSIP node adverts and ROUTING_ADVERTS bodies
    /// (``RoutingNodeState``, ``RoutingLinkMeasure``) keep both messages' bytes as the layouts in
    /// docs/PROTOCOL.md give them: the expected bytes here are spelled out field by field.
    @Test func sharedFieldsKeepBothLayouts() throws {
        func f(_ v: Float) -> [UInt8] { withUnsafeBytes(of: v.bitPattern.bigEndian, Array.init) }
        func be<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
        // region 7, lat 48.75, lon 2.25, coordinate (1.5, -2, 3.25, 0), height 5, error 0.5, load 0.25, bandwidth 8e6
        let state: [UInt8] = be(UInt16(7)) + f(48.75) + f(2.25) + f(1.5) + f(-2) + f(3.25) + f(0) + f(5) + f(0.5) + f(0.25) + f(8_000_000)
        #expect(state.count == RoutingNodeState.encodedLength)
        let gossip = RoutingGossipMessage(
            sender: 0x0A0B_0C0D_0E0F_1011,
            nodes: [.init(node: 0x0A0B_0C0D_0E0F_1011, version: 5, hops: 2, region: 7, latitude: 48.75, longitude: 2.25,
                          coordinate: SIMD4(1.5, -2, 3.25, 0), height: 5, error: 0.5, load: 0.25, bandwidthBitsPerSecond: 8_000_000,
                          ageMilliseconds: 300)],
            links: [.init(from: 0x0A0B_0C0D_0E0F_1011, to: 0x0102_0304_0506_0708, version: 5, rttMilliseconds: 12.5, bandwidthBitsPerSecond: 1_000_000)])
        let gossipPayload: [UInt8] = be(UInt64(0x0A0B_0C0D_0E0F_1011)) + [1] + be(UInt64(0x0A0B_0C0D_0E0F_1011)) + [5, 2] + state
            + [0x41, 0x2C] + [1] + be(UInt64(0x0A0B_0C0D_0E0F_1011)) + be(UInt64(0x0102_0304_0506_0708)) + [5] + f(12.5) + f(1_000_000)
        let gossipFrame = STOQMessage.routingGossip(gossip).frame()
        #expect(Array(gossipFrame.payload.readableBytesView) == gossipPayload)
        #expect(try STOQMessage.decode(gossipFrame) == .routingGossip(gossip))

        let node = [UInt8](repeating: 0xAB, count: 32)
        let body = Self.body(nodeID: node)
        let bodyBytes: [UInt8] = node + [0xD8, 0x7E, 0x8A, 0x26, 0x0C, 0x90, 0x80, 0x00] + [0xC0, 0x00, 0x01, 0x9A, 0xF2, 0x34, 0x86, 0xC0]
            + state + [2] + be(UInt64(0x0102_0304_0506_0708)) + f(12.5) + f(1_000_000) + be(UInt64(0x1112_1314_1516_1718)) + f(40) + f(0)
        #expect(body.encoded() == bodyBytes)
        #expect(try RoutingAdvertMessage.Body.decode(bodyBytes) == body)
    }
}
