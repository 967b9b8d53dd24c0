import Foundation
import STOQIdentity
import Testing

@testable import STOQTransport

/// Issue 13 §5: a server that asks for but does not require a client certificate
/// (``TLSConfiguration/allowsAnonymousClients``), and a client without a certificate that pins the
/// network CA by the SHA-256 of its SubjectPublicKeyInfo (``TLSConfiguration/pinnedCASPKISHA256``).
@Suite(.serialized) struct AnonymousClientTests {
    static func fingerprint(_ ca: CertificateAuthority) throws -> [UInt8] {
        try NodeID(certificateDER: #require(PEMFile.certificateDERs(in: ca.certificatePEM).first)).bytes
    }

    /// A server of `Certs.ca` that accepts anonymous readers and sends `extraPEM` (default: its CA) after its leaf.
    static func openServer(_ name: String = "open-server", ca: CertificateAuthority = Certs.ca, extraPEM: String? = nil) throws -> TLSConfiguration {
        var tls = try Certs.tls(name, ca: ca, trust: Certs.ca.certificatePEM)
        tls.allowsAnonymousClients = true
        tls.certificateChainPEM = tls.certificateChainPEM! + (extraPEM ?? Certs.ca.certificatePEM)
        return tls
    }

    static func reader(pin: [UInt8]) -> TLSConfiguration {
        var tls = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil)
        tls.pinnedCASPKISHA256 = pin
        return tls
    }

    @Test func anonymousReaderPinnedToTheCA() async throws {
        let pair = try await Pair.make(server: Self.openServer(), client: Self.reader(pin: Self.fingerprint(Certs.ca)))
        let (c, s) = try await pair.connect()
        #expect(s.peerCertificateChain.isEmpty)
        #expect(s.peerNodeID == nil)
        #expect(c.peerNodeID != nil)
        // The connection carries data like any other.
        let stream = try await c.openBidirectionalStream()
        try await stream.write([1, 2, 3])
        try await stream.finish()
        await pair.close()
    }

    @Test func memberStillAuthenticatesOnAnOpenServer() async throws {
        let pair = try await Pair.make(server: Self.openServer())
        let (_, s) = try await pair.connect()
        #expect(s.peerNodeID != nil)
        await pair.close()
    }

    @Test func foreignClientCertificateStillRefusedOnAnOpenServer() async throws {
        let foreign = try Certs.tls("intruder", ca: Certs.foreignCA, trust: Certs.ca.certificatePEM)
        var short = EndpointConfiguration()
        short.idleTimeout = .seconds(3)
        let pair = try await Pair.make(server: Self.openServer(), client: foreign, config: short)
        // In TLS 1.3 the client may finish its side of the handshake before the server has checked
        // its certificate: the refusal then arrives as the alert that closes the connection, and
        // no request gets through.
        do {
            let c = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            let stream = try await c.openBidirectionalStream()
            try await stream.write([1, 2, 3])
            try await stream.finish()
            _ = try await stream.readAll(limit: 16)
            Issue.record("an open server accepted a client certificate from a foreign CA")
        } catch let e as STOQError {
            // Refused: the alert, or (when the alert is lost) the idle timeout; never an answer.
            #expect([.handshakeFailed, .connectionClosed, .idleTimeout].contains(e.code), "\(e)")
        }
        await pair.close()
    }

    @Test func wrongPinRefused() async throws {
        let pair = try await Pair.make(server: Self.openServer(), client: Self.reader(pin: [UInt8](repeating: 7, count: 32)))
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("a reader pinned to another CA connected")
        } catch let e as STOQError {
            #expect(e.code == .handshakeFailed)
            #expect(e.reason.contains("network CA"), "\(e.reason)")
        }
        await pair.close()
    }

    /// An impostor whose leaf comes from another CA but who sends the real CA certificate along:
    /// the pin matches that certificate, the chain does not verify to it.
    @Test func impostorCarryingTheRealCACertificateRefused() async throws {
        let impostor = try Self.openServer("impostor", ca: Certs.foreignCA)
        let pair = try await Pair.make(server: impostor, client: Self.reader(pin: Self.fingerprint(Certs.ca)))
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("an impostor with the real CA certificate in its chain was accepted")
        } catch let e as STOQError {
            #expect(e.code == .handshakeFailed)
        }
        await pair.close()
    }

    /// A server that sends only its leaf cannot be checked against a pin.
    @Test func serverWithoutCAInChainRefused() async throws {
        var server = try Certs.tls("leaf-only")
        server.allowsAnonymousClients = true
        let pair = try await Pair.make(server: server, client: Self.reader(pin: Self.fingerprint(Certs.ca)))
        await #expect(throws: STOQError(.handshakeFailed, "")) {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
        }
        await pair.close()
    }

    /// Mutual TLS stays the default: a server without ``TLSConfiguration/allowsAnonymousClients``
    /// refuses the anonymous reader, and the reader is told the server wants a certificate.
    @Test func closedServerRefusesTheAnonymousReader() async throws {
        var server = try Certs.tls("closed")
        server.certificateChainPEM = server.certificateChainPEM! + Certs.ca.certificatePEM
        let pair = try await Pair.make(server: server, client: Self.reader(pin: Self.fingerprint(Certs.ca)))
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("a server requiring certificates accepted an anonymous reader")
        } catch let e as STOQError {
            #expect(e.code == .handshakeFailed, "\(e)")
        }
        await pair.close()
    }
}
