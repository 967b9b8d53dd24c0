import ArgumentParser
import Crypto
import Foundation
import STOQ
import STOQNode

/// `stoq share PATH|ID --node ORIGIN --ca CA`: prints a ticket (`stoq1…`) that lets anyone fetch
/// this content with `stoq get TICKET -o OUT` and nothing else.
struct Share: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a ticket (stoq1…) for a content: `stoq get TICKET -o OUT` then needs no other flag.",
        discussion: """
            The ticket carries the content id, the content's own read key (it opens this content and \
            nothing else, never the publisher's key), the network CA's fingerprint, and the node id and \
            address of every --node (they must run with --public-read for readers without a certificate).
            ID: a public content (stoq put --public) or one shared before; its key comes from the store's \
            keyrings, else from the node (CONTENT_KEY_REQUEST, public content only).
            PATH: stored in --store with a read key of its own first (the store must not be held by a \
            running node: upload into a running origin, then share the id).
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Argument(help: "A file or directory to store and share, or a content id (stoq:…).") var target: String
    @Option(help: ArgumentHelp("The node(s) that serve the content, comma-separated or repeated, '[IPV6]:PORT' (at most 8; the first is asked first).", valueName: "addresses"))
    var node: [String] = []
    @Option(name: .customLong("ca"), help: "The network CA certificate (PEM): the ticket carries its fingerprint, and the nodes are checked against it. Default: ~/.stoq/certs/ca.pem when it exists (stoq init).") var caOption: String?
    /// `--cert`, `--key` and `--ca`, each defaulting to the files `stoq init` wrote (`ClientIdentity`).
    var identity: (cert: String?, key: String?, ca: String?) {
        var (cert, key, ca) = (certOption, keyOption, caOption)
        ClientIdentity.fill(cert: &cert, key: &key, ca: &ca)
        return (cert, key, ca)
    }
    var cert: String? { identity.cert }
    var key: String? { identity.key }
    var ca: String? { identity.ca }
    @Option(name: .customLong("cert"), help: "A certificate (PEM) to dial the nodes with; without one they are dialled as an anonymous reader. Default: ~/.stoq/certs/client.pem when it exists (stoq init).") var certOption: String?
    @Option(name: .customLong("key"), help: "The certificate's private key (PEM). Default: ~/.stoq/certs/client.key when it exists (stoq init).") var keyOption: String?
    @Option(help: ArgumentHelp("A Nexus DHT node the reader may find more providers through, '[IPV6]:PORT' (a ticket carries one).", valueName: "address"))
    var bootstrap: String?
    @Option(help: ArgumentHelp("The reader's public key (a file holding what `stoq reader key` prints): the ticket then carries the content key wrapped for that reader only. Needed for a sealed content (stoq put --sealed).", valueName: "file"))
    var reader: String?

    /// Every `--node` address: each option may hold several, comma-separated.
    private var nodes: [String] { node.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty } }

    /// The keyring of contents shared with a key of their own (not public: their key is only in tickets).
    static func sharedKeyringPath(in directory: String) -> String { directory + "/shared.keys" }

    func run() async throws {
        // Failures are reported once, by `Stoq.main` (ErrorReport).
        Console.shared.result(try await ticket())
    }

    private func ticket() async throws -> String {
        guard let ca else { throw ShareFailure("give --ca CA.pem, the network CA's certificate: the ticket carries its fingerprint") }
        let node = nodes
        guard !node.isEmpty else { throw ShareFailure("give --node '[IPV6]:PORT' (comma-separated or repeated): the nodes a reader fetches from") }
        guard node.count <= ShareTicket.maximumProviders else { throw ShareFailure("a ticket names at most \(ShareTicket.maximumProviders) nodes, not \(node.count)") }
        guard (cert == nil) == (key == nil) else { throw ShareFailure("--cert and --key go together") }
        let addresses = try node.map { text -> PeerAddress in
            guard let a = PeerAddress(text) else { throw ShareFailure("--node '\(text)' is not an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)") }
            return a
        }
        var boot: ShareTicket.Address?
        if let bootstrap {
            guard let a = PeerAddress(bootstrap), let t = ShareTicket.Address(host: a.host, port: UInt16(clamping: a.port)) else {
                throw ShareFailure("--bootstrap '\(bootstrap)' is not an IPv6 address like '[::1]:4433'")
            }
            boot = t
        }
        let readerPublic = try reader.map { path in
            do { return try ReaderKey.loadPublic(path: path) } catch let e as ContentError { throw ShareFailure("--reader: \(e.reason)") }
        }
        guard let caDER = try PEMFile.certificateDERs(in: PEMFile.read(ca)).first else { throw ShareFailure("\(ca) holds no certificate; give the network CA's ca.pem") }
        let fingerprint = try NodeID(certificateDER: caDER).bytes

        // The content and its key.
        let content: ContentID
        var readKey: [UInt8]?
        var sealedKey: [UInt8]?
        if let id = ContentID(target) {
            content = id
            sealedKey = ReaderKeyOptions.sealedKey(for: id, in: storeOptions.directory)
            readKey = sealedKey ?? Self.localKey(for: id, in: storeOptions.directory)
        } else if FileManager.default.fileExists(atPath: target) {
            let stored = try storePath()
            content = stored.id
            readKey = stored.key
        } else {
            throw ShareFailure("\(target) is neither a content id (stoq:…) nor a file or directory")
        }
        if sealedKey != nil && readerPublic == nil {
            throw ShareFailure("\(content) is a sealed private content: its key travels only wrapped for a reader; give --reader FILE (what the reader's `stoq reader key` printed)")
        }

        // Dial every node: its node id goes into the ticket; a node that lacks the key is asked for it.
        var tls = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil)
        if let cert, let key {
            tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        } else {
            tls.pinnedCASPKISHA256 = fingerprint
        }
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        let peers = PeerSet(endpoint: endpoint)
        do {
            let text = try await ticket(
                content: content, readKey: readKey, reader: readerPublic, fingerprint: fingerprint, addresses: addresses, bootstrap: boot, peers: peers)
            await peers.closeAll()
            await endpoint.close()
            return text
        } catch {
            await peers.closeAll()
            await endpoint.close()
            throw error
        }
    }

    private func ticket(
        content: ContentID, readKey: [UInt8]?, reader: Curve25519.KeyAgreement.PublicKey?, fingerprint: [UInt8], addresses: [PeerAddress], bootstrap boot: ShareTicket.Address?, peers: PeerSet
    ) async throws -> String {
        var readKey = readKey
        var providers: [ShareTicket.Provider] = []
        for address in addresses {
            let client: PeerClient
            do { client = try await peers.client(for: address) } catch {
                throw ShareFailure("cannot reach \(address): \(TicketReader.explain(error)); start the node (with --public-read) or leave it out")
            }
            guard let id = client.connection.peerNodeID, let where_ = ShareTicket.Address(host: address.host, port: UInt16(clamping: address.port)) else {
                throw ShareFailure("\(address) presented no usable certificate")
            }
            providers.append(.init(nodeID: id.bytes, address: where_))
            if readKey == nil {
                switch try await client.contentKey(for: content) {
                case .key(let k): readKey = k
                case .private(let why):
                    throw ShareFailure("\(content) is private (\(why)): its key tables are sealed with the publisher's own key, which a ticket never carries; share a content put with `stoq put --public`, or give its PATH to store it with a key of its own")
                case .notFound(let why), .unavailable(let why):
                    FileHandle.standardError.write(Data("stoq: \(address) cannot hand out the key of \(content): \(why)\n".utf8))
                }
            }
        }
        guard let readKey else {
            throw ShareFailure("no read key for \(content): it is not in \(storeOptions.directory)'s keyrings and no node handed one out; give --store of its origin")
        }
        // The key must open the content: a ticket that cannot be read is worse than none.
        let first = try await peers.client(for: addresses[0])
        switch await PublicKeyDirectory.check(key: readKey, root: content, load: { id in try await first.fetchChunk(id) }) {
        case .opens: break
        case .doesNotOpen: throw ShareFailure("the read key found for \(content) does not open it; the keyring in \(storeOptions.directory) is not this content's")
        case .cannotTell(let why): throw ShareFailure("\(addresses[0]) does not serve \(content) (\(why)); give --node a node that holds it")
        }
        if let reader {
            let envelope = try ReaderKeyEnvelope.seal(contentKey: readKey, content: content, for: reader)
            Console.shared.note("the ticket's key is wrapped for reader \(ReaderKey.short(envelope.reader)) only")
            return try ShareTicket(content: content, wrappedKey: envelope, caFingerprint: fingerprint, providers: providers, bootstrap: boot).text()
        }
        return try ShareTicket(content: content, readKey: readKey, caFingerprint: fingerprint, providers: providers, bootstrap: boot).text()
    }

    /// The key of `id` in the store's keyrings (public contents, then shared ones), read without opening the store.
    static func localKey(for id: ContentID, in directory: String) -> [UInt8]? {
        for path in [PublicKeyring.publisherPath(in: directory), sharedKeyringPath(in: directory)] where FileManager.default.fileExists(atPath: path) {
            if let key = (try? PublicKeyring(path: path))?.key(for: id) { return key }
        }
        return nil
    }

    /// Stores PATH in the store with a read key of its own, kept in `shared.keys`.
    private func storePath() throws -> (id: ContentID, key: [UInt8]) {
        let store: DiskChunkStore
        do { store = try storeOptions.openStore() } catch let error as ContentError {
            throw ShareFailure("cannot open the store \(storeOptions.directory): \(error.reason); if a node holds it, upload \(target) into that node first, then share its id")
        }
        let keys = try storeOptions.publisherKeys(for: store, create: true)
        let key = PublicKeyring.newKey()
        let report = try ContentPublisher(store: store, keys: keys).put(path: target, readKey: key)
        try PublicKeyring(path: Self.sharedKeyringPath(in: storeOptions.directory)).add(report.id, key: key)
        FileHandle.standardError.write(Data("stoq: stored \(target) as \(report.id) with a read key of its own\n".utf8))
        return (report.id, key)
    }
}

/// A failure of `stoq share` or `stoq get TICKET`, with a message for people.
struct ShareFailure: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// `stoq get TICKET -o OUT`: fetches a ticket's content as an anonymous reader (no certificate;
/// the nodes are pinned to the ticket's CA and node ids), after checking the ticket's key against
/// the content's manifests, and restores it.
enum TicketReader {
    static func get(_ ticket: ShareTicket, output: String, storeDirectory: String?, readerKey: String? = nil, view: ProgressView? = nil) async throws {
        // A ticket made for a reader: its key is unwrapped before anything is dialled.
        var ticket = ticket
        if let envelope = ticket.wrappedKey {
            ticket.readKey = try ReaderKeyOptions.unwrap(envelope, keyFile: readerKey)
        }
        // A store of its own unless one is given: the reader needs no state.
        let directory = storeDirectory ?? (NSTemporaryDirectory() + "/stoq-ticket-\(getpid())-\(UInt32.random(in: 0 ... .max))")
        defer { if storeDirectory == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let store = try DiskChunkStore(directory: directory)
        var tls = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil)
        tls.pinnedCASPKISHA256 = ticket.caFingerprint
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        let peers = PeerSet(endpoint: endpoint)
        func close() async {
            await peers.closeAll()
            await endpoint.close()
        }
        do {
            // Dial the providers, all at once (a dead one must not hold up the others for a
            // handshake timeout); keep those that are the nodes the ticket names.
            let count = ticket.providers.count
            view?.phase(count == 1 ? "connecting to the ticket's node…" : "connecting to the ticket's \(count) nodes…")
            let dialled = await withTaskGroup(of: (Int, Result<PeerClient, any Error>).self) { group in
                for (position, p) in ticket.providers.enumerated() {
                    let address = PeerAddress(host: p.address.host, port: Int(p.address.port))
                    group.addTask {
                        // The answer is built after the last await (see ContentFetcher+Peers.swift on
                        // the release-build miscompile of `return (position, try await …)`).
                        let outcome: Result<PeerClient, any Error>
                        do {
                            outcome = .success(try await peers.client(for: address))
                        } catch {
                            outcome = .failure(error)
                        }
                        return (position, outcome)
                    }
                }
                var results = [Result<PeerClient, any Error>?](repeating: nil, count: count)
                for await (position, result) in group where results.indices.contains(position) { results[position] = result }
                return results
            }
            var good: [(PeerAddress, PeerClient)] = []
            var problems: [String] = []
            for (p, result) in zip(ticket.providers, dialled) {
                let address = PeerAddress(host: p.address.host, port: Int(p.address.port))
                do {
                    guard let result else { continue }
                    let client = try result.get()
                    guard client.connection.peerNodeID?.bytes == p.nodeID else {
                        problems.append("\(address) is not the node the ticket names (another certificate of the same CA)")
                        await peers.drop(address)
                        continue
                    }
                    good.append((address, client))
                } catch {
                    problems.append("\(address): \(explain(error))")
                }
            }
            guard let first = good.first else {
                throw ShareFailure("no node the ticket names could be reached: " + problems.joined(separator: "; "))
            }
            for problem in problems { Console.shared.note(problem) }
            view?.phase("checking the ticket's key…")
            // The key is checked against the content's manifests before any data chunk is fetched.
            // (Only manifests are read here; the fetch below reads them again, they are small.)
            let client = first.1
            switch await PublicKeyDirectory.check(key: ticket.readKey, root: ticket.content, load: { id in try await client.fetchChunk(id) }) {
            case .opens: break
            case .doesNotOpen:
                throw ShareFailure("the ticket's read key does not open \(ticket.content): the ticket is damaged or was altered; nothing was downloaded (ask for the ticket again)")
            case .cannotTell(let why):
                throw ShareFailure("\(first.0) cannot serve \(ticket.content) (\(why)); nothing was downloaded")
            }
            view?.phase("reading the manifests…")
            let report = try await ContentFetcher.fetch(
                ticket.content, from: good.map(\.0), peers: peers, health: nil, store: store,
                onProgress: { progress in
                    view?.update(done: Int64(progress.bytesDone), total: Int64(progress.totalBytes), sources: progress.liveSources)
                },
                onEvent: { note in Console.shared.note(note) })
            view?.finish()
            await close()
            let r = try restoreShowingProgress(
                ContentReader(store: store, readKey: ticket.readKey), ticket.content, to: output, mode: view?.mode ?? .off, verb: "write")
            Console.shared.note(String(format: "fetched %d chunks, %d bytes in %.2f s from %d node%@",
                                       report.chunks, report.fetchedBytes, report.seconds, good.count, good.count == 1 ? "" : "s"))
            Console.shared.note("get: \(ticket.content) -> \(output): \(r.files) files, \(r.directories) directories\(r.links > 0 ? ", \(r.links) links" : ""), \(humanBytes(r.bytes))")
        } catch {
            await close()
            throw error
        }
    }

    /// A dial failure in words for a reader without a certificate.
    static func explain(_ error: any Error) -> String {
        let text = (error as? STOQError)?.reason ?? (error as? NodeError)?.reason ?? ErrorReport.peopleText(error)
        if text.contains("--public-read") || text.contains("certificate required") || text.contains("alert 116") {
            return "the node does not accept readers without a certificate (it runs without --public-read); ask for a ticket naming nodes that do"
        }
        if text.contains("network CA") {
            return "the node is not of the ticket's network: \(text.replacingOccurrences(of: "peer certificate not trusted: ", with: ""))"
        }
        return text
    }
}

extension Get {
    /// `stoq get TICKET -o OUT`: the ticket's providers, CA pin and key are all it needs.
    func getTicket(view: ProgressView? = nil) async throws {
        let ticket = try ShareTicket(text: id)
        try await TicketReader.get(ticket, output: output, storeDirectory: storeOptions.store, readerKey: readerKey, view: view)
    }
}
