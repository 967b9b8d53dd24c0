import ArgumentParser
import Foundation
import Logging
import Nexus
import ServiceLifecycle
import STOQ
import STOQNode

#if canImport(Glibc)
import Glibc
#endif

/// `stoq node`'s renewal options: `--issuer`, `--ca-dir`, `--max-lifetime`, `--ct-log`.
struct RenewalOptions: ParsableArguments {
    @Option(help: "The issuer that renews this node's certificate, e.g. '[::1]:4400': the node renews at two thirds of the certificate's lifetime, without dropping connections.") var issuer: String?
    @Option(help: "With --role issuer: the CA directory (ca.pem, ca.key) the issuer signs renewals with.") var caDir: String?
    @Option(help: ArgumentHelp("With --role issuer: the CA's key in a PKCS#11 token instead of CA_DIR/ca.key (an RFC 7512 URI); renewals are signed there.", valueName: "pkcs11-uri")) var caKey: String?
    @Option(help: "With --role issuer: the longest lifetime granted, e.g. 90s, 10m, 24h (default 24h).") var maxLifetime: String?
    @Option(help: "With --role issuer: a CT log directory every renewed certificate is appended to.") var ctLog: String?

    /// Applies the flags over the configuration file's keys.
    func apply(to c: inout NodeConfiguration) throws {
        if let issuer {
            guard let address = PeerAddress(issuer) else { throw ValidationError("--issuer takes an IPv6 address like '[::1]:4400' (STOQ is IPv6-only)") }
            c.issuer = address
        }
        if let caDir { c.caDir = caDir }
        if let caKey { c.caKey = caKey }
        if let maxLifetime { c.maxLifetime = maxLifetime }
        if let ctLog { c.ctLog = ctLog }
        if c.caDir != nil && !c.roles.contains("issuer") { c.roles.append("issuer") }
        if c.roles.contains("issuer") {
            _ = try IssuerService.maximumLifetime(c)
            if c.caDir == nil { throw ValidationError("--role issuer needs --ca-dir DIR (the directory holding ca.pem and ca.key)") }
        }
    }
}

/// The issuer service of a node with the `issuer` role, appending what it issues to the CT log
/// when one is configured.
func issuerServices(_ c: NodeConfiguration, logger: Logger) throws -> [any NodeService] {
    guard c.roles.contains("issuer") else { return [] }
    let authority = try IssuerService.authority(c)
    let maximum = try IssuerService.maximumLifetime(c)
    var onIssued: (@Sendable (RenewedCertificate) async throws -> String?)?
    if let directory = c.ctLog {
        let log = try TransparencyLog.open(directory: directory, create: true)
        onIssued = { certificate in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let receipt = try log.append(certificate.der, now: now)
            return "entry \(receipt.index) of \(directory)"
        }
    }
    return [IssuerService(authority: authority, maximumLifetime: maximum, onIssued: onIssued, logger: logger)]
}

/// Reloads the node's certificate and key files on SIGHUP (for operators who renew by other means).
/// Keep the returned source alive while the node runs.
func reloadOnSIGHUP(_ node: Node) -> DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler {
        Task { await node.renewer.reload() }
    }
    source.resume()
    return source
}

/// `stoq ca …`: the network's issuer.
struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Run the network's certificate issuer: it renews node certificates over stoq/1.",
        subcommands: [Serve.self]
    )

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hold the CA key and renew certificates for nodes that connect with their current, still-valid certificate.",
            discussion: """
                The issuer gives itself a certificate from the CA (CA_DIR/issuer.pem, renewed locally) and
                answers RENEW_REQUEST: same name, region and addresses, for at most --max-lifetime.
                Nodes find it with `stoq node --issuer ADDR`.
                """
        )
        @Option(help: "Directory holding ca.pem and ca.key.") var caDir: String
        @Option(help: ArgumentHelp("The CA's key in a PKCS#11 token instead of CA_DIR/ca.key (an RFC 7512 URI, as `stoq certs init-ca --key-uri` used); every certificate is signed there.", valueName: "pkcs11-uri")) var caKey: String?
        @Option(help: "Listen address, e.g. '[::1]:4400'.") var listen: String = "[::1]:4400"
        @Option(help: "The longest lifetime granted, e.g. 90s, 10m, 24h.") var maxLifetime: String = "24h"
        @Option(help: "A CT log directory every renewed certificate is appended to.") var ctLog: String?
        @Option(help: "Admin HTTP endpoint (/metrics, /status): a port on [::1] or '[IPV6]:PORT'.") var admin: String?
        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"
        @Option(help: "Log format on stderr: text (default) or json (one object per line).") var logFormat: String?

        func run() async throws {
            guard let address = PeerAddress(listen) else { throw ValidationError("--listen takes an IPv6 address like '[::1]:4400' (STOQ is IPv6-only)") }
            if let caKey, !PKCS11URI.isURI(caKey) {
                throw ValidationError("--ca-key takes the pkcs11: URI of the CA's key in a token; a CA key file is CA_DIR/ca.key")
            }
            var probe = NodeConfiguration(name: "issuer", listen: address, certificate: "", key: "", ca: "", store: "", roles: ["issuer"])
            probe.caDir = caDir
            probe.caKey = caKey
            // CA_DIR/ca.key, or the key in the token (opened once more by the issuer service).
            let authority = try IssuerService.authority(probe)
            let maximum = try CertificateLifetime.parse(maxLifetime)
            // The issuer's own certificate: kept while valid for over a third of its lifetime.
            let certPath = (caDir as NSString).appendingPathComponent("issuer.pem")
            let keyPath = (caDir as NSString).appendingPathComponent("issuer.key")
            let existing = try? NodeCredentials.load(certificatePath: certPath, keyPath: keyPath)
            if existing.map({ RenewalSchedule.renewalTime(notBefore: $0.info.notValidBefore, notAfter: $0.info.notValidAfter) <= Date() }) ?? true {
                try authority.issue(name: "issuer", validity: maximum, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: caDir, name: "issuer")
            }
            var c = NodeConfiguration(
                name: "issuer", listen: address, certificate: certPath, key: keyPath,
                ca: (caDir as NSString).appendingPathComponent("ca.pem"),
                store: (caDir as NSString).appendingPathComponent("issuer-store"), roles: ["issuer"])
            c.caDir = caDir
            c.caKey = caKey
            c.maxLifetime = maxLifetime
            c.ctLog = ctLog
            c.routing = RoutingSettings(enabled: false)
            if let admin {
                guard let a = Int(admin).map({ PeerAddress(host: "::1", port: $0) }) ?? PeerAddress(admin) else {
                    throw ValidationError("--admin takes a port (bound to [::1]) or an IPv6 address like '[::1]:9464'")
                }
                c.admin = a
            }
            let level = try NodeCommand.logLevel(logLevel)
            try LogFormat.parse(logFormat).bootstrap(level: level)
            let logger = Logger(label: "stoq.issuer")
            let node = try await Node.start(c, services: try issuerServices(c, logger: logger), logger: logger)
            let hup = reloadOnSIGHUP(node)
            print("ready issuer \(node.address) ca=\(CertificateInfo(authority.certificate).commonName ?? "?") max_lifetime=\(CertificateLifetime.format(seconds: maximum.components.seconds))" + (node.admin.map { " admin=\($0.address)" } ?? ""))
            fflush(nil)
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: NodeLifecycleService(node: node))], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            hup.cancel()
        }
    }
}
