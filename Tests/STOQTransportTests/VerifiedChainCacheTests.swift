import Foundation
import STOQIdentity
import Testing

@testable import STOQTransport

/// A server requiring client certificates verifies a chain it has seen recently from its cache
/// (`stoq_verify_cache`); every other chain is still verified in full.
@Suite(.serialized) struct VerifiedChainCacheTests {
    /// (hits, misses) of the server's cache, read on its event loop.
    static func counts(_ endpoint: Endpoint) async throws -> [UInt64] {
        let core = endpoint.core
        return try await core.eventLoop.submit {
            let c = core.credentials.verifyCacheCounts
            return [c.hits, c.misses]
        }.get()
    }

    /// The client is done before the server has checked its certificate: wait for the server.
    static func waitForVerifications(_ endpoint: Endpoint, _ n: UInt64) async throws -> [UInt64] {
        let deadline = ContinuousClock.now + .seconds(10)
        var c = try await counts(endpoint)
        while c[0] + c[1] < n, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            c = try await counts(endpoint)
        }
        return c
    }

    @Test func sameChainVerifiedOnceOthersInFull() async throws {
        let pair = try await Pair.make()
        let port = pair.server.localAddress.port!
        for _ in 0..<3 {
            _ = try await pair.client.connect(host: "::1", port: port)
        }
        let first = try await Self.waitForVerifications(pair.server, 3)
        #expect(first == [2, 1], "\(first)")

        // A client of another CA is refused (GnuTLS refuses it before our verification: it
        // sends no certificate the server's CA list names), and an expired certificate of the
        // right CA is verified in full and refused, and not cached.
        let foreign = try await Endpoint.bind(
            host: "::1", port: 0, tls: Certs.tls("intruder", ca: Certs.foreignCA, trust: Certs.ca.certificatePEM))
        let expired = try await Endpoint.bind(
            host: "::1", port: 0, tls: Certs.tls("old", validity: .seconds(3600), now: Date().addingTimeInterval(-86_400 * 3)))
        for (i, refused) in [foreign, expired, foreign].enumerated() {
            var failures = pair.server.handshakeFailures.makeAsyncIterator()
            await #expect(throws: STOQError.self) { _ = try await refused.connect(host: "::1", port: port) }
            let serverSide = try #require(await failures.next())
            #expect(serverSide.reason.contains(i == 1 ? "expired" : "not trusted"), "\(serverSide.reason)")
        }
        let refusedCounts = try await Self.counts(pair.server)
        #expect(refusedCounts == [2, 2], "\(refusedCounts)")

        // The trusted client again: still cached.
        _ = try await pair.client.connect(host: "::1", port: port)
        let again = try await Self.waitForVerifications(pair.server, 5)
        #expect(again == [3, 2], "\(again)")
        await foreign.close()
        await expired.close()
        await pair.close()
    }

    /// The cache's window comes from the certificates' own dates, read from their DER headers:
    /// the same instants swift-certificates parses (UTCTime before 2050, GeneralizedTime after).
    @Test func validityReadLikeTheFullParse() throws {
        for (validity, start) in [(Duration.seconds(3600), Date()), (.seconds(86_400 * 365 * 40), Date()),
                                  (.seconds(3600), Date().addingTimeInterval(-86_400 * 3))] {
            let node = try Certs.ca.issue(name: "dates", validity: validity, now: start)
            let der = try PEMFile.certificateDERs(in: node.certificateChainPEM)[0]
            let read = try #require(TLSCredentials.cachedValidity(der: der))
            #expect(read.notBefore == Int64(node.certificate.notValidBefore.timeIntervalSince1970))
            #expect(read.notAfter == Int64(node.certificate.notValidAfter.timeIntervalSince1970))
        }
        let ca = try PEMFile.certificateDERs(in: Certs.ca.certificatePEM)[0]
        #expect(TLSCredentials.cachedValidity(der: ca) != nil)
        for n in [0, 1, 5, 40, ca.count - 1] {
            #expect(TLSCredentials.cachedValidity(der: Array(ca.prefix(n))) == nil)
        }
    }

    @Test func rotatedIdentityStartsAnEmptyCache() async throws {
        let pair = try await Pair.make()
        let port = pair.server.localAddress.port!
        _ = try await pair.client.connect(host: "::1", port: port)
        let before = try await Self.waitForVerifications(pair.server, 1)
        #expect(before == [0, 1], "\(before)")
        // Rotating the server's identity replaces the credentials and with them the cache: the
        // same client is verified in full again.
        try await pair.server.updateIdentity(tls: Certs.tls("server"))
        _ = try await pair.client.connect(host: "::1", port: port)
        let rotated = try await Self.waitForVerifications(pair.server, 1)
        #expect(rotated == [0, 1], "\(rotated)")
        // Trust roots that no longer include the client's CA refuse it.
        try await pair.server.updateIdentity(tls: Certs.tls("server", trust: Certs.foreignCA.certificatePEM))
        await #expect(throws: STOQError.self) { _ = try await pair.client.connect(host: "::1", port: port) }
        await pair.close()
    }
}
