import Crypto
import Foundation
import Testing
import X509
@testable import STOQIdentity

/// A key that signs without handing itself out, the way a PKCS#11 token does (TokenKey in
/// STOQTransport); it counts its signatures.
private final class SoftwareSigner: CertificateSigner, @unchecked Sendable {
    let key = P256.Signing.PrivateKey()
    let lock = NSLock()
    var signatures = 0
    var publicKey: Certificate.PublicKey { Certificate.PublicKey(key.publicKey) }
    func signSHA256(_ message: [UInt8]) throws -> [UInt8] {
        lock.withLock { signatures += 1 }
        return Array(try key.signature(for: message).derRepresentation)
    }
}

@Suite struct TokenSignerTests {
    @Test func aCAWhoseKeyIsInATokenIssuesCertificatesThatVerify() async throws {
        let token = SoftwareSigner()
        let ca = try CertificateAuthority.create(commonName: "Token CA", signer: token, keyURI: "pkcs11:token=t;object=ca;pin-value=1234")
        #expect(ca.keyIsInToken)
        #expect(ca.privateKeyPEM == "pkcs11:token=t;object=ca;pin-value=…")
        #expect(ca.certificate.publicKey == token.publicKey)
        #expect(token.publicKey.isValidSignature(ca.certificate.signature, for: ca.certificate))
        // A node key the CA never sees: only its public key is certified.
        let nodeKey = P256.Signing.PrivateKey()
        let issued = try ca.issue(name: "edge-1", publicKey: Certificate.PublicKey(nodeKey.publicKey), ipAddresses: ["::1"])
        let roots = try TrustRoots(pem: ca.certificatePEM)
        let id = try await roots.verify(chainDER: PEMFile.certificateDERs(in: issued.pem))
        #expect(id == NodeID(publicKey: Certificate.PublicKey(nodeKey.publicKey)))
        // A node certificate with a fresh key (the usual issue) is signed in the token too.
        let node = try ca.issue(name: "edge-2")
        _ = try await roots.verify(chainDER: PEMFile.certificateDERs(in: node.certificateChainPEM))
        #expect(token.signatures == 3)
        // Renewal, signed in the token, verifies.
        let renewed = try ca.renew(presentedChain: node.chainDER, lifetimeSeconds: 60, maximumLifetime: .seconds(3600))
        _ = try await roots.verify(chainDER: [renewed.der])
        #expect(token.signatures == 4)
    }

    @Test func aTokenKeyThatIsNotTheCAsIsRefused() throws {
        let token = SoftwareSigner()
        let ca = try CertificateAuthority.create(commonName: "Token CA", signer: token, keyURI: "pkcs11:token=t;object=ca")
        #expect(throws: IdentityError(.keyMismatch, "")) {
            _ = try CertificateAuthority(certificatePEM: ca.certificatePEM, signer: SoftwareSigner(), keyURI: "pkcs11:token=t;object=other")
        }
    }

    @Test func aKeyInATokenIsNoFileAndItsURIHidesThePIN() throws {
        #expect(PKCS11URI.isURI("pkcs11:token=a;object=b"))
        #expect(PKCS11URI.isURI("PKCS11:token=a"))
        #expect(!PKCS11URI.isURI("/etc/stoq/node.key"))
        #expect(try PEMFile.read("pkcs11:token=a;object=b") == "pkcs11:token=a;object=b")
        #expect(PKCS11URI.redacted("pkcs11:token=a;pin-value=9999;object=b?pin-source=/x&pin-value=1") == "pkcs11:token=a;pin-value=…;object=b?pin-source=/x&pin-value=…")
        // Credentials with a token key: the chain is checked, the key is left to GnuTLS.
        let ca = try CertificateAuthority.create()
        let issued = try ca.issue(name: "n", publicKey: Certificate.PublicKey(P256.Signing.PrivateKey().publicKey))
        let credentials = try NodeCredentials(certificateChainPEM: issued.pem, privateKeyPEM: "pkcs11:token=a;object=n;type=private")
        #expect(credentials.keyIsInToken)
        #expect(credentials.nodeID == CertificateInfo(issued.certificate).nodeID)
        #expect(throws: IdentityError(.malformedKey, "")) { _ = try PEMFile.publicKey(in: "not a key") }
    }
}
