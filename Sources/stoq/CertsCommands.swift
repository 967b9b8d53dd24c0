import ArgumentParser
import Foundation
import STOQIdentity

/// `stoq certs …`: the network CA and node certificates.
struct Certs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the network CA and issue node certificates (PEM files other TLS tools read).",
        subcommands: [InitCA.self, Issue.self, Show.self, Verify.self]
    )

    struct InitCA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init-ca",
            abstract: "Create a new certificate authority: writes DIR/ca.pem and DIR/ca.key."
        )
        @Option(help: "Directory to write ca.pem and ca.key into.") var out: String
        @Option(help: "The CA's common name.") var name: String = "STOQ CA"
        @Option(help: "Validity in days.") var days: Int = 3650
        @Flag(help: "Overwrite an existing CA in DIR.") var force = false

        func run() async throws {
            let certPath = (out as NSString).appendingPathComponent("ca.pem")
            if FileManager.default.fileExists(atPath: certPath) && !force {
                throw CLIError("\(certPath) already exists; pass --force to replace the CA (every node certificate it issued stops being trusted)")
            }
            let ca = try CertificateAuthority.create(commonName: name, validity: .seconds(days * 86_400))
            let paths = try ca.write(to: out)
            print("CA \"\(name)\" valid until \(ca.certificate.notValidAfter)")
            print("  certificate: \(paths.certificate)")
            print("  key:         \(paths.key)  (keep it secret)")
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a node certificate signed by the CA: writes OUT/NAME.pem and OUT/NAME.key."
        )
        @Option(help: ArgumentHelp("The CA directory, holding ca.pem and ca.key (from `stoq certs init-ca` or `stoq init`).", valueName: "dir"))
        var caDir: String?
        /// The old spelling of `--ca-dir` (`--ca` is the CA certificate file everywhere else); it
        /// still takes the directory here.
        @Option(name: .customLong("ca"), help: .hidden) var legacyCA: String?
        @Option(help: "The node's name (certificate CN, and a DNS name when it is one).") var name: String
        @Option(help: "The node's region (recorded in the certificate).") var region: String?
        @Option(help: "Validity in days.") var days: Int?
        @Option(help: "Validity in hours (default 24).") var hours: Int?
        @Option(help: "Validity as a lifetime: 90s, 10m, 24h or 30d (seconds, minutes, hours, days).") var lifetime: String?
        @Option(help: "Extra DNS subject alternative name (repeatable).") var dns: [String] = []
        @Option(help: "IPv6 subject alternative name (repeatable).") var ip: [String] = []
        @Option(help: "Directory to write NAME.pem and NAME.key into.") var out: String
        @Option(help: "CT log directory to append the issued certificate to (created if missing).") var ctLog: String?
        @Option(help: "Enrolment table (JSON, created if missing): write a fresh per-node enrolment secret to OUT/NAME.enrol and enter it in this table, which nodes run with --require-enrolment read (the second factor).")
        var enrol: String?

        func validate() throws {
            if [days != nil, hours != nil, lifetime != nil].filter({ $0 }).count > 1 { throw ValidationError("give --days or --hours or --lifetime, not several") }
            if caDir == nil && legacyCA == nil { throw ValidationError("give --ca-dir DIR, the directory holding the CA's ca.pem and ca.key") }
            if caDir != nil && legacyCA != nil { throw ValidationError("give --ca-dir only (--ca is its old spelling here)") }
        }

        func run() async throws {
            let authority = try CertificateAuthority.load(directory: caDir ?? legacyCA!)
            let seconds = days.map { $0 * 86_400 } ?? hours.map { $0 * 3600 } ?? 86_400
            let validity = try lifetime.map { try CertificateLifetime.parse($0) } ?? .seconds(seconds)
            let node = try authority.issue(name: name, region: region, validity: validity, dnsNames: dns, ipAddresses: ip)
            let paths = try node.write(to: out, name: name)
            print("node \(name) id \(node.nodeID.hex)")
            print("  valid until: \(node.certificate.notValidAfter)")
            print("  certificate: \(paths.certificate)")
            print("  key:         \(paths.key)")
            if let ctLog { print(try logIssuedCertificate(paths.certificate, log: ctLog)) }
            if let enrol { print(try enrolIssuedNode(node.nodeID.bytes, out: out, name: name, table: enrol)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a certificate's name, region, validity and node id.")
        @Argument(help: "A PEM certificate file.") var file: String

        func run() async throws {
            let certificates = try PEMFile.certificates(in: PEMFile.read(file))
            guard !certificates.isEmpty else {
                throw CLIError("\(file) holds no certificate (no PEM 'BEGIN CERTIFICATE' block); give a certificate file such as NAME.pem from `stoq certs issue`")
            }
            for certificate in certificates {
                let info = CertificateInfo(certificate)
                print("subject:   \(certificate.subject)")
                print("issuer:    \(certificate.issuer)")
                if let region = info.region { print("region:    \(region)") }
                print("valid:     \(info.notValidBefore) – \(info.notValidAfter)")
                print("ca:        \(info.isCA)")
                if !info.subjectAlternativeNames.isEmpty { print("names:     \(info.subjectAlternativeNames.joined(separator: ", "))") }
                print("node id:   \(info.nodeID.hex)")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a certificate chain against a CA certificate.")
        @Option(help: "The trusted CA certificate (PEM).") var ca: String
        @Argument(help: "The certificate chain to check (PEM, leaf first).") var file: String

        func run() async throws {
            let roots = try TrustRoots.load(path: ca)
            let id = try await roots.verify(chainDER: PEMFile.certificateDERs(in: PEMFile.read(file)))
            print("ok: node id \(id.hex)")
        }
    }
}

/// An error the CLI reports as it is, with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
