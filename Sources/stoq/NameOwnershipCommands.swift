import ArgumentParser
import Crypto
import Foundation
import Nexus
import STOQ

/// `stoq certs issue --enrol TABLE`: a fresh enrolment secret for the node just issued, written to
/// OUT/NAME.enrol (mode 0600, for the node) and entered in TABLE (for the verifiers).
func enrolIssuedNode(_ nodeID: [UInt8], out: String, name: String, table: String) throws -> String {
    var secret = [UInt8](repeating: 0, count: Enrolment.length)
    var generator = SystemRandomNumberGenerator()
    for i in secret.indices { secret[i] = UInt8.random(in: .min ... .max, using: &generator) }
    let path = (out as NSString).appendingPathComponent(name + ".enrol")
    guard FileManager.default.createFile(atPath: path, contents: Data((Hex.encode(secret) + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
        throw CLIError("cannot write the enrolment secret \(path)")
    }
    try EnrolmentTable.enrol(node: nodeID, secret: secret, path: table)
    return "  enrolment:   \(path) (give it to the node: --enrolment-secret); entered in \(table) (verifiers: --require-enrolment)"
}

/// Who owns which name according to the log in `directory` (its bindings in log order).
private func logOwnership(_ log: TransparencyLog) -> NameOwnership {
    var ownership = NameOwnership()
    let logKey = Array(log.publicKey.x963Representation)
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    for (index, bytes) in log.entries(withPrefix: NameOwnerBinding.prefix, from: 0, limit: Int.max) {
        if let binding = try? NameOwnerBinding.decode(bytes) { ownership.apply(binding, index: index, logKey: logKey, now: now) }
    }
    return ownership
}

private func loadOwnerKey(_ path: String, _ option: String) throws -> P256.Signing.PrivateKey {
    guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(option) \(path)") }
    do { return try P256.Signing.PrivateKey(pemRepresentation: String(decoding: data, as: UTF8.self)) } catch {
        throw CLIError("\(path) is not a P-256 private key in PEM; give a key from `stoq name keygen`")
    }
}

/// A P-256 public key from a PEM file holding either the public or the private key.
private func loadPublicKey(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read --to \(path)") }
    let pem = String(decoding: data, as: UTF8.self)
    if let key = try? P256.Signing.PublicKey(pemRepresentation: pem) { return Array(key.x963Representation) }
    if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) { return Array(key.publicKey.x963Representation) }
    throw CLIError("\(path) holds no P-256 key in PEM; give the new owner's key (`stoq name keygen`)")
}

extension NameCommand {
    /// `stoq name claim NAME --owner KEY --ct-log DIR`: binds a name to an owner key in the CT log.
    struct NameClaim: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "claim",
            abstract: "Bind a name to your owner key in the network's CT log: the first logged claim owns the name, in both name systems (origin names and DHT names).")
        @Argument(help: "The name, exactly as published (DHT names are lower case).") var name: String
        @Option(help: "Owner private key (PEM, from `stoq name keygen`; for an origin name, the --owner-key of `stoq name publish`).") var owner: String
        @Option(help: ArgumentHelp("The CT log directory nodes read with --require-ct.", valueName: "dir")) var ctLog: String

        func run() throws {
            let key = try loadOwnerKey(owner, "--owner")
            let log = try TransparencyLog.open(directory: ctLog, create: false)
            let mine = Array(key.publicKey.x963Representation)
            if let held = logOwnership(log).owner(of: name) {
                guard held.key == mine else {
                    throw CLIError("'\(name)' is already owned by another key (owner \(NameOwnership.fingerprint(held.key)), CT log entry \(held.logIndex ?? 0)); the owner can hand it over with `stoq name transfer`")
                }
                Console.shared.result("'\(name)' is already yours (owner \(NameOwnership.fingerprint(mine)), CT log entry \(held.logIndex ?? 0))")
                return
            }
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let binding = try NameOwnerBinding.claim(name, owner: key, now: now)
            let receipt = try log.append(binding.encode(), now: now)
            Console.shared.result("claimed '\(name)' for owner \(NameOwnership.fingerprint(mine)): CT log entry \(receipt.index)")
        }
    }

    /// `stoq name transfer NAME --owner OLD --to NEW --ct-log DIR [--recover]`.
    struct NameTransfer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "transfer",
            abstract: "Hand an owned name to another key: a transfer signed by the current owner (or, with --recover, by the log operator's key when the owner lost theirs), appended to the CT log.")
        @Argument(help: "The name.") var name: String
        @Option(help: "The current owner's private key (PEM). Not with --recover.") var owner: String?
        @Option(help: "The new owner's key (PEM, public or private).") var to: String
        @Option(help: ArgumentHelp("The CT log directory nodes read with --require-ct.", valueName: "dir")) var ctLog: String
        @Flag(help: "The owner lost their key: sign with the log's key (DIR/log-key.pem; the log operator only).") var recover = false

        func validate() throws {
            if recover == (owner != nil) { throw ValidationError("give --owner (the current owner's key) or --recover (the log operator), one of them") }
        }

        func run() throws {
            let log = try TransparencyLog.open(directory: ctLog, create: false)
            let newOwner = try loadPublicKey(to)
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let held = logOwnership(log).owner(of: name)
            let binding: NameOwnerBinding
            if recover {
                let logKey = try loadOwnerKey(ctLog + "/log-key.pem", "the log key")
                binding = try NameOwnerBinding.recovery(name, logKey: logKey, to: newOwner, now: now)
            } else {
                let key = try loadOwnerKey(owner!, "--owner")
                guard let held else {
                    throw CLIError("'\(name)' has no owner in the CT log yet; the owner claims it first with `stoq name claim`")
                }
                guard held.key == Array(key.publicKey.x963Representation) else {
                    throw CLIError("--owner is not the owner of '\(name)' (the owner is \(NameOwnership.fingerprint(held.key))); only the owner can hand it over (or the log operator, with --recover)")
                }
                binding = try NameOwnerBinding.transfer(name, from: key, to: newOwner, now: now)
            }
            let receipt = try log.append(binding.encode(), now: now)
            Console.shared.result("'\(name)' now belongs to \(NameOwnership.fingerprint(newOwner)) (\(recover ? "recovery" : "transfer"), CT log entry \(receipt.index))")
        }
    }
}
