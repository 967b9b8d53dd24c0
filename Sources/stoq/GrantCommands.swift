import ArgumentParser
import Crypto
import Foundation
import STOQ
import SwiftASN1
import X509

/// `stoq grant create|narrow|inspect|revoke`: access grants (docs/PROTOCOL.md, "Access grants").
struct GrantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grant",
        abstract: "Issue, narrow, inspect and revoke access grants: signed, attenuable capabilities (publish, purge, status, relay, read).",
        subcommands: [Create.self, Narrow.self, Inspect.self, Revoke.self]
    )

    /// The limits both `create` and `narrow` take.
    struct CaveatOptions: ParsableArguments {
        @Option(help: "What the grant covers (repeatable): content:ID (a content id, stoq:… or 64 hex), name:PREFIX (names and upload names starting with it), path:PREFIX. None: everything its rights reach.")
        var scope: [String] = []
        @Option(help: "Rights, comma-separated: read, publish, purge, relay, status (or all). narrow: default the grant's own.") var rights: String?
        @Option(help: "How long it is valid: 90s, 10m, 24h, 30d. narrow: default unchanged.") var expires: String?
        @Option(help: "Bind it to one peer: a node id, a certificate file, or a name stoq init made (only that certificate may present it).") var peer: String?
        @Option(name: .shortAndLong, help: "Write the grant to this file (mode 0600) instead of stdout.") var output: String?

        func caveats(defaultRights: AccessRights?, defaultExpiry: UInt64?) throws -> GrantCaveats {
            let rights: AccessRights
            if let text = self.rights { rights = try AccessRights(parsing: text) } else if let defaultRights { rights = defaultRights } else {
                throw ValidationError("--rights is needed: read, publish, purge, relay, status (comma-separated)")
            }
            var notAfter: UInt64 = 0
            if let expires {
                let duration = try CertificateLifetime.parse(expires)
                notAfter = UInt64(Date().timeIntervalSince1970) + UInt64(duration.components.seconds)
            } else if let defaultExpiry { notAfter = defaultExpiry }
            let peerID = try peer.map { text -> NodeID in
                guard let id = NodeID(hex: try PublisherReference.resolve(text, flag: "--peer")) else { throw ValidationError("--peer \(text) is not a node id") }
                return id
            }
            let entries = try scope.map { text -> ScopeEntry in
                if text.hasPrefix("content:"), let id = ContentID(String(text.dropFirst(8))) { return .content(id.manifest.bytes) }
                return try ScopeEntry(parsing: text)
            }
            return GrantCaveats(rights: rights, notAfter: notAfter, peer: peerID, scope: entries)
        }

        func write(_ grant: AccessGrant) throws {
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: Data((grant.text + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                    throw CLIError("cannot write \(output); check that its directory exists and is writable")
                }
                Console.shared.note("wrote grant \(grant.id) to \(output) (\(grant.effective.rights), until \(AccessGrant.format(grant.effective.notAfter)))")
            } else {
                Console.shared.result(grant.text)
                Console.shared.note("grant \(grant.id): \(grant.effective.rights), until \(AccessGrant.format(grant.effective.notAfter))")
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a grant signed with your certificate's key (a publisher's or operator's).")
        @OptionGroup var caveats: CaveatOptions
        @Option(name: .customLong("extension"), help: "An extension to carry and sign, TYPE:HEX (repeatable; type 1 is a wrapped content key).") var extensions: [String] = []
        @Option(help: ArgumentHelp("A reader's public key (a file holding what `stoq reader key` prints): the grant then carries the key of each --content wrapped for that reader only (extension type 1).", valueName: "file"))
        var reader: String?
        @Option(help: ArgumentHelp("With --reader: a sealed content (stoq put --sealed) whose key goes into the grant, wrapped for the reader (repeatable, at most 8); its id joins the scope.", valueName: "id"))
        var content: [String] = []
        @Option(help: "With --reader: the store the sealed contents were put into (its private.keys holds their keys). Default: $STOQ_STORE or ~/.stoq/store.")
        var store: String?
        @Option(help: "The issuer's certificate (PEM). Default: ~/.stoq/certs/client.pem.") var cert: String = ClientIdentity.cert
        @Option(help: "The issuer's private key (PEM). Default: ~/.stoq/certs/client.key.") var key: String = ClientIdentity.key

        func run() async throws {
            var c = try caveats.caveats(defaultRights: (reader != nil && caveats.rights == nil) ? .read : nil, defaultExpiry: nil)
            if caveats.expires == nil { c.notAfter = UInt64(Date().timeIntervalSince1970) + 86_400 }
            var exts = try extensions.map { text -> GrantExtension in
                let parts = text.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, let type = UInt64(parts[0]), let bytes = Hex.decode(String(parts[1])) else {
                    throw ValidationError("--extension takes TYPE:HEX, e.g. 1:0a0b…, not '\(text)'")
                }
                return GrantExtension(type: type, bytes: bytes)
            }
            let wrapped = try wrappedKeys()
            exts += wrapped.map { GrantExtension(type: 1, bytes: $0.encode()) }
            for envelope in wrapped where !c.scope.contains(.content(envelope.content.manifest.bytes)) {
                c.scope.append(.content(envelope.content.manifest.bytes))
            }
            let (der, signingKey) = try GrantIdentity.load(cert: cert, key: key)
            try caveats.write(try AccessGrant.issue(certificate: der, key: signingKey, caveats: c, extensions: exts))
            if let first = wrapped.first {
                Console.shared.note("the grant carries the key of \(wrapped.count) sealed content\(wrapped.count == 1 ? "" : "s"), wrapped for reader \(ReaderKey.short(first.reader)) only")
            }
        }

        /// `--reader` with `--content`: each content's key from the store's private.keys, wrapped for the reader.
        func wrappedKeys() throws -> [ReaderKeyEnvelope] {
            guard let reader else {
                if !content.isEmpty { throw ValidationError("--content goes with --reader FILE: the content's key is wrapped for that reader") }
                return []
            }
            guard !content.isEmpty else { throw ValidationError("--reader needs --content ID: the sealed content(s) whose key the grant carries") }
            guard content.count <= AccessGrant.maximumExtensions - extensions.count else {
                throw ValidationError("a grant carries at most \(AccessGrant.maximumExtensions) extensions: give at most that many --content (and --extension) in all")
            }
            let readerKey: Curve25519.KeyAgreement.PublicKey
            do { readerKey = try ReaderKey.loadPublic(path: reader) } catch let e as ContentError { throw CLIError("--reader: \(e.reason)") }
            let directory = store ?? StoreOptions.defaultDirectory()
            return try content.map { text in
                guard let id = ContentID(text) else { throw ValidationError("--content '\(text)' is not a content id (stoq: followed by 52 base32 characters)") }
                guard let contentKey = ReaderKeyOptions.sealedKey(for: id, in: directory) else {
                    throw CLIError("\(id) is not a sealed content of the store \(directory) (its private.keys has no key for it); put it with stoq put --sealed, or give --store of the store it was put into")
                }
                return try ReaderKeyEnvelope.seal(contentKey: contentKey, content: id, for: readerKey)
            }
        }
    }

    struct Narrow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Narrow a grant offline (fewer rights, a smaller scope, an earlier expiry, one peer) to hand it on.")
        @Argument(help: "The grant: its text (stoqgrant1:…) or a file holding it.") var grant: String
        @OptionGroup var caveats: CaveatOptions

        func run() async throws {
            let g = try GrantInput.load(grant)
            let c = try caveats.caveats(defaultRights: g.effective.rights, defaultExpiry: 0)
            try caveats.write(try g.narrowed(c))
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show what a grant allows, and check its signatures (and its certificate against --ca).")
        @Argument(help: "The grant: its text (stoqgrant1:…) or a file holding it.") var grant: String
        @Option(help: "The network CA (PEM) its publisher's certificate must chain to. Default: ~/.stoq/certs/ca.pem when it exists.") var ca: String?
        @Flag(help: "Print a JSON document.") var json = false

        func run() async throws {
            let g = try GrantInput.load(grant)
            let e = g.effective
            var problems: [String] = []
            do { try g.verifySignatures() } catch { problems.append(error.reason) }
            var ca = self.ca
            var none: String?, none2: String?
            ClientIdentity.fill(cert: &none, key: &none2, ca: &ca)
            if problems.isEmpty, let ca {
                do { _ = try await g.verify(trust: try TrustRoots.load(path: ca), now: Date()) } catch { problems.append(ErrorReport.peopleText(error)) }
            }
            let name = (try? Certificate(derEncoded: g.certificate)).flatMap { CertificateInfo($0).commonName } ?? "?"
            if json {
                let doc: [String: Any] = [
                    "id": g.id, "publisher": g.publisher.hex, "publisher_name": name, "rights": AccessRights.named.filter { e.rights.contains($0.1) }.map(\.0),
                    "not_after": AccessGrant.format(e.notAfter), "not_after_unix": e.notAfter, "peer": e.peers.map(\.hex),
                    "scopes": e.scopes.map { $0.map(\.description) }, "blocks": g.blocks.count, "narrowable": g.secret != nil,
                    "extensions": g.extensions.map { x -> [String: Any] in
                        var d: [String: Any] = ["type": x.type, "bytes": x.bytes.count]
                        if x.type == 1, let e = try? ReaderKeyEnvelope.decode(x.bytes) { d["content"] = e.content.description; d["reader"] = Hex.encode(e.reader) }
                        return d
                    }, "valid": problems.isEmpty, "problems": problems,
                ]
                let data = try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
                Console.shared.result(String(decoding: data, as: UTF8.self))
            } else {
                var lines = ["grant \(g.id)", "  publisher  \(g.publisher.hex) (\(name))", "  rights     \(e.rights)",
                             "  expires    \(AccessGrant.format(e.notAfter))\(e.notAfter < UInt64(Date().timeIntervalSince1970) ? " (expired)" : "")",
                             "  peer       \(e.peers.isEmpty ? "any" : e.peers.map(\.hex).joined(separator: ", "))"]
                if e.scopes.isEmpty { lines.append("  scope      everything its rights reach") }
                for (i, s) in e.scopes.enumerated() { lines.append("  scope \(i + 1)    \(s.map(\.description).joined(separator: " or "))") }
                lines.append("  blocks     \(g.blocks.count) (\(g.secret != nil ? "can be narrowed" : "sealed"))")
                for x in g.extensions {
                    if x.type == 1, let e = try? ReaderKeyEnvelope.decode(x.bytes) {
                        lines.append("  extension  type 1: the key of \(e.content), wrapped for reader \(ReaderKey.short(e.reader))")
                    } else {
                        lines.append("  extension  type \(x.type), \(x.bytes.count) bytes")
                    }
                }
                lines.append("  signatures \(problems.isEmpty ? "valid" : "INVALID: " + problems.joined(separator: "; "))")
                Console.shared.result(lines.joined(separator: "\n"))
            }
            if !problems.isEmpty { throw ExitCode(1) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a grant you issued: a new signed revocation list goes to the origin, which passes it to its edges.")
        @Argument(help: "The grant id (32 hex characters, from stoq grant inspect) or the grant itself.") var grant: String
        @Option(help: "The origin (or any node) to give the list to, e.g. '[::1]:4433'.") var node: String
        @Option(help: "The issuer's certificate (PEM). Default: ~/.stoq/certs/client.pem.") var cert: String = ClientIdentity.cert
        @Option(help: "The issuer's private key (PEM). Default: ~/.stoq/certs/client.key.") var key: String = ClientIdentity.key
        @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca

        func run() async throws {
            guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
            let id: [UInt8]
            if let hex = Hex.decode(grant.trimmingCharacters(in: .whitespaces)), hex.count == 16 { id = hex } else { id = try GrantInput.load(grant).grantID }
            let (der, signingKey) = try GrantIdentity.load(cert: cert, key: key)
            let me = try NodeID(certificateDER: der)
            let list = try await withPeer(address, cert: cert, key: key, ca: ca) { client -> RevocationList in
                let held = try await client.revocations(of: me)
                if let held { try held.verifySignature() }
                var ids = held?.grantIDs ?? []
                if !ids.contains(id) { ids.append(id) }
                let next = try RevocationList.sign(version: (held?.version ?? 0) + 1, grantIDs: ids, certificate: der, key: signingKey)
                return try await client.pushRevocations(next) ?? next
            }
            Console.shared.result("revoked grant \(Hex.encode(id)) at \(address): revocation list version \(list.version) of \(me.short) holds \(list.grantIDs.count) grant\(list.grantIDs.count == 1 ? "" : "s"); the node passes it to its edges")
        }
    }
}

/// The `--grant FILE|TEXT` value of client commands.
enum GrantInput {
    /// Reads a grant from its text or a file holding it.
    static func load(_ value: String) throws -> AccessGrant {
        let text: String
        if value.trimmingCharacters(in: .whitespaces).hasPrefix(AccessGrant.textPrefix) { text = value } else {
            guard let data = FileManager.default.contents(atPath: value) else {
                throw CLIError("'\(value)' is neither a grant (stoqgrant1:…) nor a readable file; give the grant or the file stoq grant create -o wrote")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        return try AccessGrant(text: text)
    }

    /// Presents the grant on `client`'s connection (before the request that needs it).
    static func present(_ value: String?, on client: PeerClient) async throws {
        guard let value else { return }
        let grant = try load(value)
        do { _ = try await client.presentGrant(grant) } catch {
            throw CLIError("\(client.name) refused grant \(grant.id): \(ErrorReport.peopleText(error)); check it with stoq grant inspect")
        }
    }
}

/// The issuer's certificate (DER) and P-256 key.
enum GrantIdentity {
    static func load(cert: String, key: String) throws -> ([UInt8], P256.Signing.PrivateKey) {
        guard let certificate = try PEMFile.certificates(in: PEMFile.read(cert)).first else {
            throw CLIError("\(cert) holds no certificate; give the PEM certificate of the publisher or operator (--cert)")
        }
        var s = DER.Serializer()
        try s.serialize(certificate)
        let signingKey: P256.Signing.PrivateKey
        do { signingKey = try P256.Signing.PrivateKey(pemRepresentation: PEMFile.read(key)) } catch {
            throw CLIError("\(key) is not a P-256 private key in PEM; give the key of \(cert) (--key)")
        }
        return (s.serializedBytes, signingKey)
    }
}
