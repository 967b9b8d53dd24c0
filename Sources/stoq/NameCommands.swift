import ArgumentParser
import Crypto
import Foundation
import STOQ
import STOQEdge
import STOQNode

/// `stoq name publish NAME ID --node ORIGIN` (old spelling `stoq publish`, hidden): sign the next
/// version of a mutable name and publish it on the origin, which pushes the new version to the
/// edges that hold the name.
struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Point a name at a content id on an origin: a signed, versioned record with a TTL, which the origin hands to its edges (`stoq get NAME --peers EDGE` reads it)."
    )
    @Argument(help: "The name (1-255 bytes of UTF-8, printable).") var name: String
    @Argument(help: "Content id (stoq:…) the name points to; the origin must hold it.") var id: String
    @Option(help: "The origin, e.g. '[::1]:4433'.") var node: String = "[::1]:4433"
    @Option(help: "Client certificate (PEM).") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca
    @Option(help: "The name owner's P-256 key (PEM; created when missing). Default: name-owner.pem in the store directory.")
    var ownerKey: String?
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Seconds an edge may serve the record without asking the origin again.") var ttl: UInt32 = 300
    @Option(help: "An access grant with the publish right whose scope covers the name (its text or a file), when your certificate is not an operator or a publisher of the origin (an origin takes names only from those, itself, and grant holders).") var grant: String?
    @Flag(name: .long, help: "The content is public (put with `stoq put --public` into the origin's store): check that the origin hands its read key out, so edges can serve the name over HTTP; refuse otherwise.")
    var `public` = false

    func run() async throws {
        do { try NameRecord.validate(name: name) } catch { throw ValidationError(ErrorReport.peopleText(error)) }
        guard let content = ContentID(id) else { throw ValidationError("\(id) is not a content id (stoq: followed by 52 base32 characters)") }
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
        let owner = try NameOwnerKey.load(path: ownerKey ?? storeOptions.directory + "/name-owner.pem")
        try await withPeer(address, cert: cert, key: key, ca: ca) { client in
            try await GrantInput.present(grant, on: client)
            if `public` {
                switch try await client.contentKey(for: content) {
                case .key: break
                case .private(let why):
                    throw CLIError("\(content) is private on \(address) (\(why)); put it with `stoq put --public` into the origin's store to make a public content, or publish without --public")
                case .notFound(let why), .unavailable(let why):
                    throw CLIError("cannot publish \(content) as public: \(why)")
                }
            }
            var version: UInt64 = 1
            if let bytes = try await client.resolveName(name) {
                // Another key's record: the origin decides (the name may have been handed to this
                // key in the CT log); it refuses a key that does not own the name, and says so.
                let current = try NameRecord.decode(bytes)
                version = current.version + 1
            }
            let record = try NameRecord.sign(name: name, content: content, version: version, ttlSeconds: ttl, owner: owner)
            let (published, notified) = try await client.publishName(record.encode())
            print("published \(name) v\(published) -> \(content) (ttl \(ttl) s\(`public` ? ", public: edges may serve it over HTTP" : "")); \(notified) edge\(notified == 1 ? "" : "s") told")
        }
    }
}

/// `stoq published NAME --peers NODE`: the old spelling of `stoq name show NAME --node NODE`
/// (hidden). (`stoq resolve` is Nexus service selection.)
struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "published", abstract: "Old spelling of `stoq name show`.", shouldDisplay: false)
    @Argument(help: "The name (or name:NAME).") var name: String
    @OptionGroup var peerOptions: PeerOptions

    func run() async throws {
        // The record once, on stdout (no second copy as a note on stderr).
        let record = try await peerOptions.resolveName(name, announce: false)
        Console.shared.result(record.description)
    }
}

/// `stoq name show NAME --node NODE`: the signed record a published name has now, asked of an edge
/// (which answers from its cache) or the origin; the signature is checked before it is shown.
struct NameShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show the signed record a published name has now (`stoq name publish`), asked of an edge or the origin.")
    @Argument(help: "The name (or name:NAME).") var name: String
    @Option(help: ArgumentHelp("The node(s) to ask, comma-separated, the first that knows the name answers: '[::1]:4434,[::1]:4433'.", valueName: "addresses"))
    var node: String?
    /// The old spelling of `--node` (this command was `stoq published --peers`).
    @Option(name: .customLong("peers"), help: .hidden) var legacyPeers: String?
    @Option(help: "Client certificate (PEM); without one the node must accept anonymous readers (--public-read).") var cert: String?
    @Option(help: "Client private key (PEM).") var key: String?
    @Option(help: "Network CA certificate (PEM) the node's certificate must chain to.") var ca: String = ClientIdentity.ca

    func validate() throws {
        if node != nil && legacyPeers != nil { throw ValidationError("give --node only (--peers is its old spelling)") }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    }

    func run() async throws {
        let addresses = try parsePeerList(node ?? legacyPeers ?? "[::1]:4433", option: "--node")
        let (record, address) = try await resolvePublishedName(name, at: addresses, cert: cert, key: key, ca: ca)
        Console.shared.note("origin record from \(address), signature verified")
        Console.shared.result("\(record)")
    }
}

extension PeerOptions {
    /// Resolves a mutable name through the first peer that knows it; the record's signature is
    /// checked (a forged or damaged record is refused). Says on stderr which record it used.
    func resolveName(_ text: String, announce: Bool = true) async throws -> NameRecord {
        let name = text.hasPrefix("name:") ? String(text.dropFirst(5)) : text
        do { try NameRecord.validate(name: name) } catch { throw ValidationError("'\(text)' is neither a content id nor a name: \(ErrorReport.peopleText(error))") }
        guard let ca, (cert == nil) == (key == nil) else { throw ValidationError("resolving the name '\(name)' needs --peers with --ca (and --cert with --key, unless the peers accept readers without a certificate: --public-read)") }
        let addresses = try addresses()
        guard !addresses.isEmpty else { throw ValidationError("'\(name)' is a name: give --peers (an edge or the origin) to resolve it") }
        let (record, address) = try await resolvePublishedName(name, at: addresses, cert: cert, key: key, ca: ca)
        if announce { Console.shared.note("name '\(record.name)' → \(record.content) (origin record v\(record.version) from \(address))") }
        return record
    }
}

/// Resolves a published name (`stoq name publish`) through the first of `addresses` that knows it;
/// the record's signature is checked (a forged or damaged record is refused).
/// - Returns: the record and the node that answered.
func resolvePublishedName(_ text: String, at addresses: [PeerAddress], cert: String?, key: String?, ca: String) async throws -> (NameRecord, PeerAddress) {
    let name = text.hasPrefix("name:") ? String(text.dropFirst(5)) : text
    do { try NameRecord.validate(name: name) } catch { throw ValidationError("'\(text)' is not a name: \(ErrorReport.peopleText(error))") }
    var problems: [String] = []
    for address in addresses {
        do {
            let record: NameRecord? = try await withPeer(address, cert: cert, key: key, ca: ca) { client in
                guard let bytes = try await client.resolveName(name) else { return nil }
                let record = try NameRecord.decode(bytes)
                guard record.name == name else { throw CLIError("\(address) answered '\(name)' with a record for '\(record.name)'") }
                guard record.hasValidSignature else { throw CLIError("\(address) sent a record for '\(name)' whose signature does not verify (forged or damaged)") }
                return record
            }
            if let record { return (record, address) }
            problems.append("\(address): unknown name")
        } catch {
            problems.append("\(address): \(ErrorReport.peopleText(error))")
        }
    }
    throw CLIError("could not resolve '\(name)': " + problems.joined(separator: "; "))
}

/// Runs `body` with a client connected to `address` over mutual TLS, then closes everything.
func withPeer<T: Sendable>(_ address: PeerAddress, cert: String?, key: String?, ca: String, _ body: (PeerClient) async throws -> T) async throws -> T {
    // Without a certificate: an anonymous reader (the node must run with --public-read).
    let tls = TLSConfiguration(certificateChainPEM: try cert.map { try PEMFile.read($0) }, privateKeyPEM: try key.map { try PEMFile.read($0) }, trustRootsPEM: try PEMFile.read(ca))
    let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
    do {
        let connection = try await endpoint.connect(host: address.host, port: address.port)
        let result = try await body(PeerClient(connection: connection, name: address.description))
        await connection.close()
        await endpoint.close()
        return result
    } catch {
        await endpoint.close()
        throw error
    }
}

/// The name owner's signing key, kept as PEM with mode 0600.
enum NameOwnerKey {
    static func load(path: String) throws -> P256.Signing.PrivateKey {
        if let data = FileManager.default.contents(atPath: path) {
            do { return try P256.Signing.PrivateKey(pemRepresentation: String(decoding: data, as: UTF8.self)) } catch {
                throw CLIError("\(path) is not a P-256 private key in PEM (\(ErrorReport.peopleText(error))); give the key `stoq name keygen` wrote")
            }
        }
        let key = P256.Signing.PrivateKey()
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("cannot write the name owner key \(path)")
        }
        FileHandle.standardError.write(Data("stoq: created the name owner key \(path); keep it to publish later versions\n".utf8))
        return key
    }
}
