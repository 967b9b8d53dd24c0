import Foundation
import Testing
import X509
@testable import STOQIdentity

@Suite struct CertificateAuthorityTests {
    @Test func issuedCertificateVerifiesAgainstItsCA() async throws {
        let ca = try CertificateAuthority.create(commonName: "Test CA")
        let node = try ca.issue(name: "edge-1", region: "eu-west", dnsNames: ["localhost"], ipAddresses: ["::1"])
        let roots = try TrustRoots(pem: ca.certificatePEM)
        let id = try await roots.verify(chainDER: PEMFile.certificateDERs(in: node.certificateChainPEM))
        #expect(id == node.nodeID)
        #expect(node.region == "eu-west")
        let info = CertificateInfo(node.certificate)
        #expect(info.commonName == "edge-1")
        #expect(info.subjectAlternativeNames.contains("DNS:edge-1"))
        #expect(info.subjectAlternativeNames.contains("IP:0:0:0:0:0:0:0:1"))
        #expect(!info.isCA)
        #expect(CertificateInfo(ca.certificate).isCA)
        // Node certificates default to 24 hours.
        let lifetime = node.certificate.notValidAfter.timeIntervalSince(node.certificate.notValidBefore)
        #expect(abs(lifetime - 86_400 - 300) < 2)
    }

    @Test func foreignCAIsRefused() async throws {
        let ca = try CertificateAuthority.create()
        let foreign = try CertificateAuthority.create(commonName: "Someone else")
        let intruder = try foreign.issue(name: "intruder")
        let roots = try TrustRoots(pem: ca.certificatePEM)
        await #expect(throws: IdentityError(.untrusted, "")) {
            try await roots.verify(chainDER: PEMFile.certificateDERs(in: intruder.certificateChainPEM))
        }
    }

    @Test func expiredCertificateIsRefused() async throws {
        let ca = try CertificateAuthority.create(now: Date().addingTimeInterval(-10 * 86_400))
        let old = try ca.issue(name: "old", validity: .seconds(3600), now: Date().addingTimeInterval(-5 * 86_400))
        let roots = try TrustRoots(pem: ca.certificatePEM)
        await #expect(throws: IdentityError(.untrusted, "")) {
            try await roots.verify(chainDER: PEMFile.certificateDERs(in: old.certificateChainPEM))
        }
    }

    @Test func nodeIDSurvivesWriteAndLoadAndIsStableForTheKey() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-id-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try CertificateAuthority.create()
        try ca.write(to: dir)
        let loadedCA = try CertificateAuthority.load(directory: dir)
        let node = try loadedCA.issue(name: "origin")
        let paths = try node.write(to: dir, name: "origin")
        let loaded = try NodeCredentials.load(certificatePath: paths.certificate, keyPath: paths.key)
        #expect(loaded.nodeID == node.nodeID)
        #expect(loaded.nodeID.hex.count == 64)
        #expect(NodeID(hex: loaded.nodeID.hex) == loaded.nodeID)
        let attributes = try FileManager.default.attributesOfItem(atPath: paths.key)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func mismatchedKeyAndBadInputAreClearErrors() throws {
        let ca = try CertificateAuthority.create()
        let a = try ca.issue(name: "a")
        let b = try ca.issue(name: "b")
        #expect(throws: IdentityError(.keyMismatch, "")) {
            try NodeCredentials(certificateChainPEM: a.certificateChainPEM, privateKeyPEM: b.privateKeyPEM)
        }
        #expect(throws: IdentityError(.malformedCertificate, "")) {
            try NodeCredentials(certificateChainPEM: "garbage", privateKeyPEM: a.privateKeyPEM)
        }
        #expect(throws: IdentityError(.invalidName, "")) { try ca.issue(name: "../evil") }
        #expect(throws: IdentityError(.invalidName, "")) { try ca.issue(name: "n", ipAddresses: ["::ffff:10.0.0.1"]) }
        #expect(throws: IdentityError(.fileNotFound, "")) {
            try NodeCredentials.load(certificatePath: "/nonexistent/x.pem", keyPath: "/nonexistent/x.key")
        }
        #expect(throws: IdentityError(.malformedNodeID, "")) { try NodeID(bytes: [1, 2, 3]) }
    }

    /// Other TLS tools must read our PEM files as they are.
    @Test func pemFilesAreReadableByOpenSSLAndPython() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-id-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = try CertificateAuthority.create()
        try ca.write(to: dir)
        let node = try ca.issue(name: "node", dnsNames: ["localhost"])
        let paths = try node.write(to: dir, name: "node")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") {
            #expect(try run("/usr/bin/openssl", ["verify", "-CAfile", "\(dir)/ca.pem", paths.certificate]) == 0)
            #expect(try run("/usr/bin/openssl", ["pkey", "-in", paths.key, "-noout"]) == 0)
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/certtool") {
            #expect(try run("/usr/bin/certtool", ["--infile", paths.key, "-k"]) == 0)
        }
        let python = "import ssl,sys; c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.load_cert_chain(sys.argv[1], sys.argv[2]); c.load_verify_locations(sys.argv[3])"
        #expect(try run("/usr/bin/env", ["python3", "-c", python, paths.certificate, paths.key, "\(dir)/ca.pem"]) == 0)
    }

    private func run(_ path: String, _ args: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = args
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
