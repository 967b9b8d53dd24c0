import Testing
@testable import STOQIdentity

/// `NodeID(handshakeCertificateDER:)` finds the P-256 key by walking DER headers; it must give the
/// id the full X.509 parse gives, and fall back to that parse for anything else.
@Suite struct NodeIDFastPathTests {
    @Test func sameIDAsTheFullParse() throws {
        let ca = try CertificateAuthority.create(commonName: "Fast path CA")
        let node = try ca.issue(name: "edge-1", dnsNames: ["localhost"], ipAddresses: ["::1"])
        for der in try PEMFile.certificateDERs(in: node.certificateChainPEM) + PEMFile.certificateDERs(in: ca.certificatePEM) {
            #expect(NodeID.p256SubjectPublicKeyInfo(in: der) != nil)
            #expect(try NodeID(handshakeCertificateDER: der) == NodeID(certificateDER: der))
        }
        #expect(try NodeID(handshakeCertificateDER: PEMFile.certificateDERs(in: node.certificateChainPEM)[0]) == node.nodeID)
    }

    @Test func truncatedOrAlteredCertificatesFallBack() throws {
        let ca = try CertificateAuthority.create()
        let der = try PEMFile.certificateDERs(in: ca.certificatePEM)[0]
        let spki = try #require(NodeID.p256SubjectPublicKeyInfo(in: der))
        // Every truncation is refused by the walk (the outer length no longer matches), and the
        // full parse then refuses it too.
        for n in [0, 1, 2, 10, spki.lowerBound, spki.upperBound, der.count - 1] {
            let cut = Array(der.prefix(n))
            #expect(NodeID.p256SubjectPublicKeyInfo(in: cut) == nil)
            #expect(throws: IdentityError.self) { try NodeID(handshakeCertificateDER: cut) }
        }
        // A key of another curve (the OID changed) is not taken by the fast path.
        var other = der
        other[spki.lowerBound + 22] ^= 0x01
        #expect(NodeID.p256SubjectPublicKeyInfo(in: other) == nil)
        // A long-form length that claims more than there is.
        #expect(NodeID.p256SubjectPublicKeyInfo(in: [0x30, 0x83, 0xFF, 0xFF, 0xFF]) == nil)
        #expect(NodeID.p256SubjectPublicKeyInfo(in: []) == nil)
    }
}
