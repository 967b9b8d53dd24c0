import ArgumentParser
import Crypto
import Foundation
import STOQ
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

    /// The key of `content` that a grant (`stoq grant create --reader --content`) carries wrapped
    /// for this reader: the grant's signatures and expiry are checked, then the extension of type 1
    /// for this content is opened with the reader key file.
    /// Whether a grant carries any wrapped content key (extension type 1); a grant given only for
    /// the peers (read, relay) carries none. A grant that cannot be read is an error here.
    static func carriesContentKeys(_ text: String) throws -> Bool {
        !(try GrantInput.load(text).extensions(type: 1).isEmpty)
    }

    static func contentKey(for content: ContentID, grant text: String, keyFile: String?) throws -> [UInt8] {
        let grant = try GrantInput.load(text)
        do { try grant.verifySignatures() } catch {
            throw CLIError("grant \(grant.id) does not verify: \(ErrorReport.peopleText(error)); nothing was downloaded")
        }
        let now = UInt64(Date().timeIntervalSince1970)
        guard grant.effective.notAfter >= now else {
            throw CLIError("grant \(grant.id) expired at \(AccessGrant.format(grant.effective.notAfter)); ask its publisher for a new one")
        }
        let envelopes = grant.extensions(type: 1).compactMap { try? ReaderKeyEnvelope.decode($0.bytes) }
        guard let envelope = envelopes.first(where: { $0.content == content }) else {
            if envelopes.isEmpty { throw CLIError("grant \(grant.id) carries no content key; a sealed content needs a grant made with stoq grant create --reader FILE --content ID") }
            throw CLIError("grant \(grant.id) carries the key of \(envelopes.map(\.content.description).joined(separator: ", ")), not of \(content): this content's key was never wrapped for the grant's reader; ask the publisher for a grant for it")
        }
        guard grant.effective.rights.contains(.read), grant.effective.admits(.content(content.manifest.bytes)) else {
            throw CLIError("grant \(grant.id) does not let its holder read \(content) (it was narrowed to leave out the read right or this content)")
        }
        return try unwrap(envelope, keyFile: keyFile)
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

extension Put {
    /// `stoq put --sealed --node ORIGIN`: each path sealed into the local store (its key in
    /// private.keys, as without --node), then its stored chunks (sealed index, sealed manifests,
    /// encrypted data chunks) uploaded into the origin as they are: the origin learns chunk ids and
    /// sizes, no name, type or key.
    func uploadSealed() async throws {
        let (address, cert, key, ca) = try uploadTarget()
        for p in paths where !FileManager.default.fileExists(atPath: p) {
            throw ContentError(.notFound, "\(p) does not exist (or cannot be read)")
        }
        let store = try storeOptions.openStore()
        let keys = try storeOptions.publisherKeys(for: store, create: true)
        let publisher = ContentPublisher(store: store, keys: keys)
        var sealed: [(String, PutReport)] = []
        for p in paths {
            let contentKey = PublicKeyring.newKey()
            let r = try publisher.putSealed(path: p, contentKey: contentKey)
            try PublicKeyring(path: ReaderKeyOptions.sealedKeyringPath(in: storeOptions.directory)).add(r.id, key: contentKey)
            for s in r.skipped { Console.shared.raw("stoq: warning: skipped \(s) (\(skipReason(s)))") }
            sealed.append((p, r))
        }
        do {
            try await withPeer(address, cert: cert, key: key, ca: ca) { client in
                try await GrantInput.present(uploadOptions.grant, on: client)
                for (p, r) in sealed {
                    let sent = try await SealedUploader.upload(r.id, from: store, to: client, name: "sealed content", concurrency: uploadOptions.concurrency)
                    Console.shared.result("\(r.id)")
                    Console.shared.note("put \(p) → \(r.id) (sealed; uploaded \(sent.sentChunks) of \(sent.chunks) chunks, \(humanBytes(sent.sentBytes)), to \(address); key in \(ReaderKeyOptions.sealedKeyringPath(in: storeOptions.directory)))")
                }
            }
        } catch let refused as UploadRefused {
            throw CLIError("\(address) refused the sealed upload: \(refused.message); check that the origin lists your certificate (stoq node --publisher NODEID)")
        } catch let e as ContentError {
            throw e
        } catch {
            throw CLIError("the sealed upload to \(address) failed: \(ErrorReport.peopleText(error)); check that an origin runs there and that --cert/--key/--ca are a publisher's certificate of its network")
        }
    }
}
