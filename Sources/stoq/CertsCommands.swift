import ArgumentParser
import Foundation
import STOQIdentity
import STOQTransport

/// `stoq certs …`: the network CA and node certificates.
struct Certs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the network CA and issue node certificates (PEM files other TLS tools read).",
        subcommands: [InitCA.self, Issue.self, Show.self, Verify.self, Keygen.self]
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
        @Option(help: ArgumentHelp("The CA's key in a PKCS#11 token (RFC 7512 URI, from `stoq certs keygen`): the CA certificate is signed there and no ca.key is written.", valueName: "pkcs11-uri"))
        var keyURI: String?

        func run() async throws {
            let certPath = (out as NSString).appendingPathComponent("ca.pem")
            if FileManager.default.fileExists(atPath: certPath) && !force {
                throw CLIError("\(certPath) already exists; pass --force to replace the CA (every node certificate it issued stops being trusted)")
            }
            if let keyURI {
                let token = try TokenKey(uri: keyURI)
                let ca = try CertificateAuthority.create(commonName: name, signer: token, keyURI: keyURI, validity: .seconds(days * 86_400))
                try PEMFile.write(ca.certificatePEM, to: certPath, mode: 0o644)
                Console.shared.result("CA \"\(name)\" valid until \(ca.certificate.notValidAfter)")
                Console.shared.result("  certificate: \(certPath)")
                Console.shared.result("  key:         \(token.uri)  (in the token; issue with --ca-key)")
                return
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
        @Option(help: ArgumentHelp("The CA's key in a PKCS#11 token instead of CA_DIR/ca.key (RFC 7512 URI): the certificate is signed in the token.", valueName: "pkcs11-uri"))
        var caKey: String?
        @Option(help: ArgumentHelp("Certify a key in a PKCS#11 token (RFC 7512 URI, from `stoq certs keygen`) instead of making a key file: writes only OUT/NAME.pem; run the node with --key URI.", valueName: "pkcs11-uri"))
        var keyURI: String?
        @Option(help: ArgumentHelp("Certify this P-256 public key (PEM, e.g. from `p11tool --generate-privkey --outfile`) instead of making a key file: writes only OUT/NAME.pem.", valueName: "file"))
        var publicKey: String?
        @Option(help: "Enrolment table (JSON, created if missing): write a fresh per-node enrolment secret to OUT/NAME.enrol and enter it in this table, which nodes run with --require-enrolment read (the second factor).")
        var enrol: String?

        func validate() throws {
            if [days != nil, hours != nil, lifetime != nil].filter({ $0 }).count > 1 { throw ValidationError("give --days or --hours or --lifetime, not several") }
            if caDir == nil && legacyCA == nil { throw ValidationError("give --ca-dir DIR, the directory holding the CA's ca.pem and ca.key") }
            if caDir != nil && legacyCA != nil { throw ValidationError("give --ca-dir only (--ca is its old spelling here)") }
            if keyURI != nil && publicKey != nil { throw ValidationError("give --key-uri or --public-key, not both") }
        }

        /// The CA: CA_DIR/ca.pem with CA_DIR/ca.key, or with the key in a token (--ca-key).
        func loadAuthority() throws -> CertificateAuthority {
            let directory = caDir ?? legacyCA!
            guard let caKey else {
                let keyPath = (directory as NSString).appendingPathComponent("ca.key")
                if !FileManager.default.fileExists(atPath: keyPath) && FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent("ca.pem")) {
                    throw CLIError("\(directory) holds no ca.key; if the CA's key is in a token, give --ca-key 'pkcs11:…' (the URI `stoq certs init-ca --key-uri` used)")
                }
                return try CertificateAuthority.load(directory: directory)
            }
            let token = try TokenKey(uri: caKey)
            return try CertificateAuthority(
                certificatePEM: PEMFile.read((directory as NSString).appendingPathComponent("ca.pem")), signer: token, keyURI: caKey)
        }

        func run() async throws {
            let authority = try loadAuthority()
            let seconds = days.map { $0 * 86_400 } ?? hours.map { $0 * 3600 } ?? 86_400
            let validity = try lifetime.map { try CertificateLifetime.parse($0) } ?? .seconds(seconds)
            if keyURI != nil || publicKey != nil {
                // The node's key stays where it is (a token): the CA certifies its public key only.
                let key = try keyURI.map { uri throws in try TokenKey(uri: uri).publicKey } ?? PEMFile.publicKey(in: PEMFile.read(publicKey!))
                let issued = try authority.issue(name: name, publicKey: key, region: region, validity: validity, dnsNames: dns, ipAddresses: ip)
                let certPath = (out as NSString).appendingPathComponent("\(name).pem")
                try PEMFile.write(issued.pem, to: certPath, mode: 0o644)
                Console.shared.result("node \(name) id \(CertificateInfo(issued.certificate).nodeID.hex)")
                Console.shared.result("  valid until: \(issued.certificate.notValidAfter)")
                Console.shared.result("  certificate: \(certPath)")
                Console.shared.result("  key:         \(keyURI.map(PKCS11URI.redacted) ?? "(not here: the key pair's owner holds it)")")
                if let ctLog { Console.shared.result(try logIssuedCertificate(certPath, log: ctLog)) }
                return
            }
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

extension Certs {
    /// `stoq certs keygen`: a node or CA key made inside a PKCS#11 token, never in a file.
    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a P-256 key inside a PKCS#11 token (sensitive, not extractable) and print its URI.",
            discussion: """
                The key never leaves the token. Certify it with `stoq certs issue --key-uri URI` (a node) \
                or `stoq certs init-ca --key-uri URI` (a CA), then run the node with `--key URI`. The PIN \
                comes from STOQ_PKCS11_PIN or the URI (pin-value=, pin-source=); the module from p11-kit \
                or STOQ_PKCS11_MODULE. See docs/OPERATIONS.md, "Keys in a hardware token".
                """
        )
        @Option(help: ArgumentHelp("The token, as a PKCS#11 URI (e.g. 'pkcs11:token=stoq').", valueName: "pkcs11-uri")) var token: String
        @Option(help: "The key's label in the token (its URI's object=).") var label: String

        func run() async throws {
            let key = try TokenKey.generate(token: token, label: label)
            let id = NodeID(publicKey: try TokenKey(uri: key.uri).publicKey)
            Console.shared.result(key.uri)
            Console.shared.note("a P-256 key \"\(label)\" is in the token (not extractable); node id \(id.hex); certify it with `stoq certs issue --key-uri '\(key.uri)' …`")
        }
    }
}

/// An error the CLI reports as it is, with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
