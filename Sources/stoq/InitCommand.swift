import ArgumentParser
import Foundation
import STOQ

/// `stoq init`: a network's certificates in one command (issue 14, "shorten the common path").
struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set up a network's certificates in one command: a CA (made once, never replaced) and a certificate for each named node and for you ('client').",
        discussion: """
            Prints one line per certificate on stdout: NAME, node id, certificate file, key file.
            Run it again with more names to add nodes: the CA and the certificates already there are kept.
            Example: stoq init origin edge-1@eu-west edge-2@us-east
            """
    )
    @Argument(help: "Node names, each NAME or NAME@REGION (e.g. origin edge-1@eu-west).") var nodes: [String] = []
    @Option(help: "Directory for ca.pem, ca.key and NAME.pem/NAME.key (default: ~/.stoq/certs).") var dir: String?
    @Option(help: "Lifetime of each node certificate: 90s, 10m, 24h, 30d (default 24h; nodes renew with an issuer, see stoq ca serve).") var lifetime: String = "24h"
    @Option(help: "IPv6 address put in every node certificate (repeatable; default ::1).") var ip: [String] = []
    @Flag(help: "Do not make the 'client' certificate (the one `stoq status`, `put --node` and `publish` use).") var noClient = false

    func run() async throws {
        // Names are checked before anything is written.
        var wanted = try nodes.map(Self.parse)
        if !noClient, !wanted.contains(where: { $0.name == "client" }) { wanted.append((name: "client", region: nil)) }
        guard !wanted.isEmpty else { throw ValidationError("name at least one node, e.g. stoq init origin edge-1") }
        let directory = dir ?? Self.defaultDirectory()
        let validity = try CertificateLifetime.parse(lifetime)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let caPath = (directory as NSString).appendingPathComponent("ca.pem")
        let authority: CertificateAuthority
        if FileManager.default.fileExists(atPath: caPath) {
            authority = try CertificateAuthority.load(directory: directory)
            FileHandle.standardError.write(Data("stoq: using the CA in \(directory)\n".utf8))
        } else {
            authority = try CertificateAuthority.create(commonName: "STOQ CA", validity: .seconds(3650 * 86_400))
            _ = try authority.write(to: directory)
            FileHandle.standardError.write(Data("stoq: created a CA in \(directory) (keep ca.key secret)\n".utf8))
        }
        let addresses = ip.isEmpty ? ["::1"] : ip
        for node in wanted {
            let certificate = (directory as NSString).appendingPathComponent("\(node.name).pem")
            let key = (directory as NSString).appendingPathComponent("\(node.name).key")
            let credentials: NodeCredentials
            if FileManager.default.fileExists(atPath: certificate) {
                credentials = try NodeCredentials(certificateChainPEM: PEMFile.read(certificate), privateKeyPEM: PEMFile.read(key))
            } else {
                credentials = try authority.issue(name: node.name, region: node.region, validity: validity, dnsNames: [], ipAddresses: addresses)
                _ = try credentials.write(to: directory, name: node.name)
            }
            print("\(node.name) \(credentials.nodeID.hex) \(certificate) \(key)")
        }
        if let first = wanted.first(where: { $0.name != "client" }) {
            let d = directory
            FileHandle.standardError.write(Data("""
                stoq: start a node with
                  stoq node \(first.name)\(dir == nil ? "" : " --cert \(d)/\(first.name).pem --key \(d)/\(first.name).key --ca \(d)/ca.pem")

                """.utf8))
        }
    }

    /// `NAME` or `NAME@REGION`.
    static func parse(_ text: String) throws -> (name: String, region: String?) {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let name = parts.first, !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw ValidationError("'\(text)' is not a node name: use letters, digits, '-', '_' or '.', optionally followed by @REGION")
        }
        if parts.count == 2 {
            guard !parts[1].isEmpty else { throw ValidationError("'\(text)' has an empty region after '@'") }
            return (name, parts[1])
        }
        return (name, nil)
    }

    /// `~/.stoq/certs` (following `$HOME`).
    static func defaultDirectory() -> String {
        let home = ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.stoq/certs"
    }
}
