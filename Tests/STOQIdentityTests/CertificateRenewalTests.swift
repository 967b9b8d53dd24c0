import Crypto
import Foundation
import Testing
import X509
@testable import STOQIdentity

@Suite struct CertificateRenewalTests {
    @Test func lifetimesParse() throws {
        #expect(try CertificateLifetime.parse("90s") == .seconds(90))
        #expect(try CertificateLifetime.parse("10m") == .seconds(600))
        #expect(try CertificateLifetime.parse("24h") == .seconds(86_400))
        #expect(try CertificateLifetime.parse("2d") == .seconds(172_800))
        #expect(try CertificateLifetime.parse("45") == .seconds(45))
        for bad in ["", "0s", "-5m", "1.5h", "h", "10w", "99999999999d"] {
            #expect(throws: IdentityError.self) { try CertificateLifetime.parse(bad) }
        }
        #expect(CertificateLifetime.format(seconds: 90) == "90s")
        #expect(CertificateLifetime.format(seconds: 600) == "10m")
        #expect(CertificateLifetime.format(seconds: 86_400) == "1d")
    }

    @Test func shortCertificatesAreBackdatedByATenth() throws {
        let ca = try CertificateAuthority.create()
        let now = Date()
        let node = try ca.issue(name: "edge-1", validity: .seconds(30), now: now)
        #expect(abs(node.certificate.notValidBefore.timeIntervalSince(now) + 3) < 1.01)
        #expect(abs(node.certificate.notValidAfter.timeIntervalSince(now) - 30) < 1.01)
        #expect(abs(node.nominalLifetimeSeconds.distance(to: 30)) <= 1)
        let day = try ca.issue(name: "edge-1", now: now)
        #expect(day.nominalLifetimeSeconds == 86_400)
    }

    @Test func renewalKeepsNameRegionAndAddresses() async throws {
        let ca = try CertificateAuthority.create()
        let node = try ca.issue(name: "edge-1", region: "eu-west", validity: .seconds(60), dnsNames: ["localhost"], ipAddresses: ["::1"])
        let renewed = try ca.renew(presentedChain: node.chainDER, lifetimeSeconds: 60, maximumLifetime: .seconds(86_400))
        let fresh = try node.replacingChain([renewed.der])
        #expect(fresh.nodeID == node.nodeID)
        #expect(fresh.info.commonName == "edge-1")
        #expect(fresh.region == "eu-west")
        #expect(Set(fresh.info.subjectAlternativeNames) == Set(node.info.subjectAlternativeNames))
        #expect(fresh.certificate.serialNumber != node.certificate.serialNumber)
        #expect(abs(fresh.certificate.notValidAfter.timeIntervalSinceNow - 60) < 2)
        let roots = try TrustRoots(pem: ca.certificatePEM)
        #expect(try await roots.verify(chainDER: fresh.chainDER) == node.nodeID)
    }

    @Test func lifetimeIsBoundedByTheIssuer() throws {
        let ca = try CertificateAuthority.create()
        let node = try ca.issue(name: "n", validity: .seconds(60))
        let long = try ca.renew(presentedChain: node.chainDER, lifetimeSeconds: 365 * 86_400, maximumLifetime: .seconds(120))
        #expect(abs(long.info.notValidAfter.timeIntervalSinceNow - 120) < 2)
        let most = try ca.renew(presentedChain: node.chainDER, lifetimeSeconds: 0, maximumLifetime: .seconds(300))
        #expect(abs(most.info.notValidAfter.timeIntervalSinceNow - 300) < 2)
    }

    @Test func refusals() throws {
        let ca = try CertificateAuthority.create()
        let other = try CertificateAuthority.create(commonName: "Other CA")
        let now = Date()
        let expired = try ca.issue(name: "old", validity: .seconds(60), now: now.addingTimeInterval(-120))
        let foreign = try other.issue(name: "intruder", validity: .seconds(60))
        func refused(_ chain: [[UInt8]], key: [UInt8] = [], signature: [UInt8] = []) -> String? {
            do {
                _ = try ca.renew(presentedChain: chain, lifetimeSeconds: 60, newPublicKey: key, signature: signature, maximumLifetime: .seconds(600), now: now)
                return nil
            } catch {
                #expect(error.code == .renewalRefused)
                return error.reason
            }
        }
        #expect(refused(expired.chainDER)?.contains("expired") == true)
        #expect(refused(foreign.chainDER)?.contains("not issued by this issuer's CA") == true)
        #expect(refused([])?.contains("no certificate") == true)
        #expect(refused([[1, 2, 3]])?.contains("cannot be parsed") == true)
        #expect(refused(try PEMFile.certificateDERs(in: ca.certificatePEM))?.contains("CA certificate") == true)
        // Key rotation: the new key must sign.
        let node = try ca.issue(name: "n", validity: .seconds(60))
        let newKey = P256.Signing.PrivateKey()
        let spki = Array(newKey.publicKey.derRepresentation)
        let wrongSigner = P256.Signing.PrivateKey()
        let message = CertificateAuthority.renewalPossessionMessage(currentLeafDER: node.chainDER[0], publicKey: spki)
        let badSignature = Array(try wrongSigner.signature(for: message).derRepresentation)
        #expect(refused(node.chainDER, key: spki, signature: badSignature)?.contains("does not verify") == true)
        #expect(refused(node.chainDER, key: [1, 2], signature: badSignature)?.contains("not a P-256 key") == true)
        let good = Array(try newKey.signature(for: message).derRepresentation)
        let rotated = try ca.renew(presentedChain: node.chainDER, lifetimeSeconds: 60, newPublicKey: spki, signature: good, maximumLifetime: .seconds(600))
        #expect(rotated.info.nodeID == NodeID(publicKey: Certificate.PublicKey(newKey.publicKey)))
        #expect(rotated.info.commonName == "n")
    }

    /// The time a `.wait` action names, in seconds after `start` (nil for other actions).
    private func waitSeconds(_ action: RenewalSchedule.Action, after start: Date) -> Double? {
        if case .wait(let until) = action { return until.timeIntervalSince(start) }
        return nil
    }

    private func near(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) < 0.001 } ?? false }

    @Test func scheduleRenewsAtTwoThirdsAndBacksOff() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        func at(_ s: Double) -> Date { start.addingTimeInterval(s) }
        // A 30 s certificate backdated by 3 s.
        var s = RenewalSchedule(notBefore: at(-3), notAfter: at(30), canRenew: true)
        #expect(abs(s.lifetime - 30) < 0.001)
        #expect(near(waitSeconds(s.next(now: at(5)), after: start), 20))
        #expect(s.next(now: at(20.01)) == .renew)
        s.failed("issuer gone", now: at(20))
        #expect(!s.isFailing)
        #expect(near(waitSeconds(s.next(now: at(20.5)), after: start), 21))
        #expect(s.next(now: at(21.01)) == .renew)
        s.failed("issuer gone", now: at(21))
        #expect(s.isFailing)
        #expect(s.state(now: at(21)) == "renewal failing")
        #expect(near(s.nextAttempt.timeIntervalSince(start), 23))
        for _ in 0..<10 { s.failed("issuer gone", now: at(25)) }
        #expect(near(s.nextAttempt.timeIntervalSince(start), 30))  // capped at a sixth of the lifetime
        // Expiry is reported once.
        #expect(s.next(now: at(31)) == .expired)
        #expect(s.next(now: at(31)) == .renew)
        #expect(s.state(now: at(31)) == "expired")
        // A renewal resets the failures.
        s.renewed(notBefore: at(28), notAfter: at(61))
        #expect(s.renewals == 1)
        #expect(s.consecutiveFailures == 0)
        #expect(s.failures == 12)
        #expect(near(waitSeconds(s.next(now: at(40)), after: start), 51))
    }

    @Test func withoutAnIssuerTheScheduleOnlyWatchesExpiry() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var s = RenewalSchedule(notBefore: start, notAfter: start.addingTimeInterval(60), canRenew: false)
        #expect(s.next(now: start.addingTimeInterval(50)) == .wait(until: start.addingTimeInterval(60)))
        #expect(s.next(now: start.addingTimeInterval(60)) == .expired)
        #expect(s.next(now: start.addingTimeInterval(61)) == .wait(until: .distantFuture))
    }
}
