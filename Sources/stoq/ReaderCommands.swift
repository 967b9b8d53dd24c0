import ArgumentParser
import Crypto
import Foundation
import STOQContent

/// `stoq reader key`: this user's X25519 reader key, the key a publisher wraps a sealed content's
/// key for (`stoq share ID --reader FILE`).
struct ReaderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reader",
        abstract: "A reader key: what a publisher wraps a sealed private content's key for.",
        subcommands: [Key.self])

    struct Key: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print this user's reader public key (stoqreader1…), creating the key file on first use.",
            discussion: """
                The private half is a file of 32 random bytes, mode 0600 (default ~/.stoq/reader.key; \
                it is an X25519 key, not the P-256 reader.key of `stoq block reader`). Give the printed \
                line (saved in a file) to a publisher: `stoq share ID --reader FILE` then makes a ticket \
                only this key opens, and `stoq get TICKET -o OUT` reads it with this key file.
                """)
        @Option(name: .customLong("key-file"), help: "The reader key file (default: ~/.stoq/reader.key).") var keyFile: String?

        func run() throws {
            let path = keyFile ?? ReaderKeyOptions.defaultPath
            let (key, created) = try ReaderKey.loadOrCreate(path: path)
            if created { Console.shared.note("created the reader key \(path) (keep it: tickets made for this key open only with it)") }
            Console.shared.result(ReaderKey.text(key.publicKey))
            Console.shared.note("reader \(ReaderKey.short(ReaderKeyEnvelope.readerID(key.publicKey))) (\(path))")
        }
    }
}

/// Where the reader key and the sealed contents' keys live.
enum ReaderKeyOptions {
    /// `~/.stoq/reader.key` (or `$STOQ_READER_KEY`).
    static var defaultPath: String {
        if let e = ProcessInfo.processInfo.environment["STOQ_READER_KEY"], !e.isEmpty { return e }
        let home = ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.stoq/reader.key"
    }

    /// The publisher keyring of sealed private contents (`private.keys` in the store directory):
    /// never handed to nodes; a key leaves it only wrapped for a reader.
    static func sealedKeyringPath(in directory: String) -> String { directory + "/private.keys" }

    /// The content key of a sealed content put from `directory`, if any.
    static func sealedKey(for id: ContentID, in directory: String) -> [UInt8]? {
        let path = sealedKeyringPath(in: directory)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return (try? PublicKeyring(path: path))?.key(for: id)
    }

    /// Opens a version 2 ticket's wrapped key with the reader key file.
    static func unwrap(_ envelope: ReaderKeyEnvelope, keyFile: String?) throws -> [UInt8] {
        let path = keyFile ?? defaultPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw ShareFailure("the ticket's key is wrapped for a reader key, and there is none at \(path); give --reader-key FILE (the key `stoq reader key` made)")
        }
        let key: Curve25519.KeyAgreement.PrivateKey
        do { key = try ReaderKey.load(path: path) } catch let e as ContentError { throw ShareFailure("--reader-key: \(e.reason)") }
        do { return try envelope.open(with: key) } catch let e as ContentError {
            throw ShareFailure("\(e.reason); nothing was downloaded")
        }
    }
}

extension Put {
    /// `stoq put --sealed`: each path a sealed private content with a content key of its own.
    func putSealed(store: DiskChunkStore, keys: PublisherKeys, path: String, publisher: ContentPublisher) throws -> PutReport {
        let key = PublicKeyring.newKey()
        let r = try publisher.putSealed(path: path, contentKey: key)
        try PublicKeyring(path: ReaderKeyOptions.sealedKeyringPath(in: storeOptions.directory)).add(r.id, key: key)
        Console.shared.result("\(r.id)")
        Console.shared.note("put \(path) → \(r.id) (sealed: names and key in \(ReaderKeyOptions.sealedKeyringPath(in: storeOptions.directory)); share it with stoq share ID --reader FILE)")
        return r
    }
}
