import ArgumentParser
import Crypto
import Foundation
import Nexus
import NexusBenchmarks
import STOQIdentity

// MARK: - Helpers

private func nowMS() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

private func readFile(_ path: String) throws -> [UInt8] {
    guard let d = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
    return [UInt8](d)
}

/// DER certificates from a PEM file (every CERTIFICATE block) or a raw DER file.
private func certificates(at path: String) throws -> [[UInt8]] {
    let bytes = try readFile(path)
    guard let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN CERTIFICATE-----") else { return [bytes] }
    var out: [[UInt8]] = []
    var inside = false, b64 = ""
    for line in text.split(whereSeparator: \.isNewline) {
        let l = line.trimmingCharacters(in: .whitespaces)
        if l == "-----BEGIN CERTIFICATE-----" { inside = true; b64 = ""; continue }
        if l == "-----END CERTIFICATE-----" {
            inside = false
            guard let der = Data(base64Encoded: b64) else { throw ValidationError("\(path): a CERTIFICATE block is not valid base64") }
            out.append([UInt8](der)); continue
        }
        if inside { b64 += l }
    }
    return out
}

private func writeJSON<T: Encodable>(_ value: T, to path: String?) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try enc.encode(value)
    if let path { try data.write(to: URL(fileURLWithPath: path)) } else { print(String(decoding: data, as: UTF8.self)) }
}

/// A log directory (see ``TransparencyLog/open(directory:create:)``).
private struct LogDirectory {
    let dir: String
    func open(create: Bool) throws -> TransparencyLog { try TransparencyLog.open(directory: dir, create: create) }
}

private func printHead(_ h: SignedTreeHead) {
    print("log id:     \(h.logID)")
    print("tree size:  \(h.treeSize)")
    print("timestamp:  \(h.timestamp) (\(Date(timeIntervalSince1970: Double(h.timestamp) / 1000)))")
    print("root hash:  \(h.rootHash)")
    print("signature:  \(Hex.encode(h.signature))")
}

// MARK: - stoq ct

/// `stoq ct`: the certificate-transparency log.
struct CTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ct",
        abstract: "Certificate-transparency log (RFC 9162 style): append, heads, inclusion and consistency proofs.",
        subcommands: [Append.self, Head.self, Prove.self, Consistency.self, Verify.self]
    )

    struct Append: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Append certificates (PEM or DER) and print their receipts.")
        @Argument(help: "Certificate file (PEM, possibly several certificates, or DER).") var certificate: String
        @Option(help: "Log directory (created if missing).") var log: String

        func run() throws {
            let log = try LogDirectory(dir: self.log).open(create: true)
            for der in try certificates(at: certificate) {
                let r = try log.append(der, now: nowMS())
                print("appended index \(r.index) leaf \(r.leafHash) timestamp \(r.timestamp) receipt \(Hex.encode(r.signature))")
            }
            let head = try log.signedTreeHead(now: nowMS())
            print("tree size \(head.treeSize) root \(head.rootHash)")
        }
    }

    struct Head: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the signed tree head (signing a new one if the log grew).")
        @Option(help: "Log directory.") var log: String
        @Option(help: "Write the head as JSON to this file.") var out: String?

        func run() throws {
            let log = try LogDirectory(dir: self.log).open(create: false)
            let head = try log.signedTreeHead(now: nowMS())
            printHead(head)
            if let out { try writeJSON(head, to: out) }
        }
    }

    struct Prove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an inclusion proof (JSON) for an entry against the current head.")
        @Option(help: "Log directory.") var log: String
        @Argument(help: "Entry index.") var index: UInt64
        @Option(help: "Write the proof to this file instead of stdout.") var out: String?

        func run() throws {
            let log = try LogDirectory(dir: self.log).open(create: false)
            let head = try log.signedTreeHead(now: nowMS())
            let bundle = try log.inclusionBundle(index: index, head: head)
            try bundle.verify(publicKey: log.publicKey)
            try writeJSON(bundle, to: out)
            if out != nil { print("inclusion proof for entry \(index) in tree of size \(head.treeSize): \(bundle.proof.count) hashes") }
        }
    }

    struct Consistency: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a consistency proof (JSON) between two signed heads of the log.")
        @Option(help: "Log directory.") var log: String
        @Argument(help: "Older tree size (a head of that size must have been signed).") var old: UInt64
        @Argument(help: "Newer tree size (default: the current head).") var new: UInt64?
        @Option(help: "Write the proof to this file instead of stdout.") var out: String?

        func run() throws {
            let log = try LogDirectory(dir: self.log).open(create: false)
            guard let oldHead = try log.head(size: old) else { throw ValidationError("no signed head of size \(old); `stoq ct head` signs heads as the log grows") }
            let newHead: SignedTreeHead
            if let new {
                guard let h = try log.head(size: new) else { throw ValidationError("no signed head of size \(new)") }
                newHead = h
            } else { newHead = try log.signedTreeHead(now: nowMS()) }
            let bundle = ConsistencyBundle(old: oldHead, new: newHead, proof: try log.consistencyProof(old: old, new: newHead.treeSize))
            try bundle.verify(publicKey: log.publicKey)
            try writeJSON(bundle, to: out)
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a proof file offline with the log's public key, or check a whole log directory for tampering.",
            discussion: "stoq ct verify --key DIR/log-key.pub.pem PROOF.json [--cert CERT.pem]\nstoq ct verify --log DIR")
        @Argument(help: "Proof JSON from `stoq ct prove` or `stoq ct consistency`.") var proof: String?
        @Option(help: "Log public key (PEM).") var key: String?
        @Option(help: "Certificate the inclusion proof must be for.") var cert: String?
        @Option(help: "Log directory to check end to end.") var log: String?

        func run() throws {
            if let log {
                let l = try LogDirectory(dir: log).open(create: false)
                let n = try l.verifyIntegrity()
                print("OK: \(n) entries, every leaf, subtree hash and signed head is consistent")
                return
            }
            guard let proof, let key else { throw ValidationError("give PROOF.json and --key, or --log DIR") }
            let pub = try P256.Signing.PublicKey(pemRepresentation: String(decoding: try readFile(key), as: UTF8.self))
            let data = Data(try readFile(proof))
            if let b = try? JSONDecoder().decode(InclusionBundle.self, from: data) {
                if let cert {
                    guard let der = try certificates(at: cert).first else { throw ValidationError("no certificate in \(cert)") }
                    try b.verify(entry: der, publicKey: pub)
                } else {
                    try b.verify(publicKey: pub)
                }
                print("OK: entry \(b.index) (leaf \(b.leafHash)) is in the tree of size \(b.head.treeSize) with root \(b.head.rootHash)")
            } else {
                let b = try JSONDecoder().decode(ConsistencyBundle.self, from: data)
                try b.verify(publicKey: pub)
                print("OK: tree \(b.old.treeSize) (\(b.old.rootHash.shortHex)…) is a prefix of tree \(b.new.treeSize) (\(b.new.rootHash.shortHex)…)")
            }
        }
    }
}

// MARK: - stoq name

/// `stoq name`: every kind of name in one family: names published on an origin (publish/show),
/// names in the Nexus DHT (set/get), and DHT records made and checked locally (keygen/sign/verify).
struct NameCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "name",
        abstract: "Names: publish/show on an origin and its edges; set/get in the Nexus DHT; keygen, sign, verify locally.",
        discussion: """
            Two kinds of name point at content. A published name (`name publish NAME ID --node ORIGIN`) \
            lives on the origin, which hands it to its edges. A DHT name (`name set NAME ID --bootstrap NODE`) \
            lives in the Nexus DHT and may also name a service's nodes. `stoq get NAME` reads either: \
            through --peers first, else through --bootstrap, and says on stderr which record it used.
            """,
        subcommands: [Publish.self, NameShow.self, SetName.self, GetName.self, Keygen.self, Sign.self, Verify.self, NameClaim.self, NameTransfer.self]
    )

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an owner key (P-256, PEM).")
        @Option(help: "Where to write the private key.") var out: String
        func run() throws {
            let key = P256.Signing.PrivateKey()
            guard FileManager.default.createFile(atPath: out, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("cannot write \(out)")
            }
            print("owner key written to \(out); public key id \(NexusHash.sha256(key.publicKey.derRepresentation))")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a DHT record into a file: NAME → content id, or NAME → service nodes (--service-node).")
        @Argument(help: "The name, e.g. video.example.") var name: String
        @Argument(help: "Content id (64 hex digits, optionally prefixed stoq:). Omit when giving --service-node.") var content: String?
        @Option(name: .customLong("service-node"), help: "Service node: NODEID(64 hex)[@[addr]:port,...]; repeatable.") var serviceNodes: [String] = []
        /// The old spelling of `--service-node` (`--node` is the node a command talks to).
        @Option(name: .customLong("node"), help: .hidden) var legacyNodes: [String] = []
        @Option(help: "Owner private key (PEM, from `stoq name keygen`).") var owner: String?
        /// The old spelling of `--owner` (`--key` is this side's TLS key everywhere else).
        @Option(name: .customLong("key"), help: .hidden) var legacyKey: String?
        @Option(help: "The record's version (must exceed the previous one).") var recordVersion: UInt64
        @Option(help: "Lifetime in seconds.") var ttl: UInt32 = 3600
        @Option(help: "Output file (binary record).") var out: String

        private var nodes: [String] { serviceNodes + legacyNodes }

        func validate() throws {
            if owner == nil && legacyKey == nil { throw ValidationError("give --owner FILE, the owner's private key (from `stoq name keygen`)") }
        }

        func run() throws {
            let owner = try P256.Signing.PrivateKey(pemRepresentation: String(decoding: try readFile(self.owner ?? legacyKey!), as: UTF8.self))
            let value: NameValue
            if let content {
                let h = content.hasPrefix("stoq:") ? String(content.dropFirst(5)) : content
                guard let id = NexusHash(hex: h) else { throw ValidationError("content id must be 64 hex digits") }
                value = .content(id)
            } else {
                guard !nodes.isEmpty else { throw ValidationError("give a content id or at least one --service-node") }
                value = .service(try nodes.map { spec in
                    let parts = spec.split(separator: "@", maxSplits: 1)
                    guard let id = NexusHash(hex: String(parts[0])) else { throw ValidationError("node id must be 64 hex digits: \(spec)") }
                    let addrs = parts.count == 2 ? try parts[1].split(separator: ",").map { try NexusAddress(parsing: String($0)) } : []
                    return ServiceEndpoint(nodeID: id, addresses: addrs)
                })
            }
            let record = try NameRecord.sign(name: try NexusName(name), value: value, version: recordVersion, issuedAt: nowMS(), ttl: ttl, owner: owner)
            try Data(record.encode()).write(to: URL(fileURLWithPath: out))
            print("signed \(record.name) version \(record.version) (\(record.encode().count) bytes) → \(out); DHT key \(record.name.key)")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Decode and verify a record file (signature, expiry).")
        @Argument(help: "Record file.") var record: String
        func run() throws {
            let r = try NameRecord.decode(try readFile(record))
            print("name:     \(r.name)")
            switch r.value {
            case .content(let id): print("content:  \(contentText(id))")
            case .service(let eps):
                for e in eps { print("node:     \(e.nodeID) \(e.addresses.map(\.description).joined(separator: " "))") }
            }
            print("version:  \(r.version)")
            print("expires:  \(Date(timeIntervalSince1970: Double(r.expiresAt) / 1000))")
            print("owner:    \(NexusHash.sha256(try r.ownerPublicKey().derRepresentation))")
            try r.verify(now: nowMS())
            print("OK: signed by its owner and not expired")
        }
    }
}

// MARK: - stoq dht

/// `stoq dht`: the old home of the DHT benchmark (`stoq dht bench`, now `stoq bench dht`); hidden.
struct DHTCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dht", abstract: "Old spelling: `stoq dht bench` is `stoq bench dht`.", shouldDisplay: false, subcommands: [DHTBenchAlias.self])

    /// `stoq bench dht` (old spelling `dht bench`, hidden).
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dht",
            abstract: "Kademlia DHT: lookup rounds and per-node state in simulation; real lookups over loopback QUIC (--quic).",
            discussion: "--scale: converged tables from a global view, built lazily for touched nodes (up to 1,000,000 nodes).\n--nodes N: full message-level simulation (converged, or --join-by-lookup: nodes join by lookups).")
        @Option(help: "Comma-separated sizes for the scale run, e.g. 1000,10000,100000,1000000.") var scale: String?
        @Option(help: "Nodes for the message-level run.") var nodes: Int?
        @Flag(help: "Message-level run: learn routing tables by sequential bootstrap (each node joins by lookups) instead of a global view.") var joinByLookup = false
        /// The old spelling of `--join-by-lookup` (`--bootstrap` names DHT entry points everywhere else).
        @Flag(name: .customLong("bootstrap"), help: .hidden) var legacyBootstrap = false
        @Option(help: "Value lookups per size.") var lookups: Int = 1000
        @Option(help: "Seed.") var seed: UInt64 = 1
        @Option(help: "Real QUIC run: this many nodes in one process on [::1], then --quic-lookups value lookups.") var quic: Int?
        @Option(help: "Value lookups in the QUIC run.") var quicLookups: Int = 200

        func run() async throws {
            if let quic {
                guard quic >= 4 else { throw ValidationError("--quic needs at least 4 nodes") }
                print(try await NexusQUICBenchmark.run(nodes: quic, lookups: quicLookups))
            }
            if let scale {
                let sizes = scale.split(separator: ",").compactMap { Int($0) }
                for n in sizes {
                    let t0 = Date()
                    for row in NexusBenchmark.dhtScale(sizes: [n], lookups: lookups, seed: seed) {
                        print(row, String(format: "(%.1f s)", Date().timeIntervalSince(t0)))
                    }
                }
            }
            if let nodes {
                let t0 = Date()
                let run = try NexusBenchmark.dhtLookups(nodes: nodes, bootstrap: joinByLookup || legacyBootstrap, values: 50, lookups: lookups, seed: seed)
                print(run, String(format: "(%.1f s)", Date().timeIntervalSince(t0)))
            }
            if scale == nil && nodes == nil && quic == nil { throw ValidationError("give --scale SIZES, --nodes N and/or --quic N") }
        }
    }
}
