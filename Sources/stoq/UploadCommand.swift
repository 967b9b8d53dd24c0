import ArgumentParser
import Foundation
import STOQ

/// `stoq put PATH… --node ORIGIN --cert C --key K --ca CA`: upload into a running origin.
struct UploadOptions: ParsableArguments {
    @Option(help: "Upload into this running origin over stoq/1 instead of a local store, e.g. '[::1]:4433' (needs --cert, --key and --ca; the origin must list the certificate's node id with --publisher).")
    var node: String?
    @Option(name: .customLong("cert"), help: "With --node: the publisher's certificate (PEM). Default: ~/.stoq/certs/client.pem when it exists (stoq init).") var certOption: String?
    @Option(name: .customLong("key"), help: "With --node: the publisher's private key (PEM). Default: ~/.stoq/certs/client.key when it exists (stoq init).") var keyOption: String?
    @Option(name: .customLong("ca"), help: "With --node: the network CA certificate (PEM). Default: ~/.stoq/certs/ca.pem when it exists (stoq init).") var caOption: String?
    /// `--cert`, `--key` and `--ca`, each defaulting to the files `stoq init` wrote (`ClientIdentity`).
    var identity: (cert: String?, key: String?, ca: String?) {
        var (cert, key, ca) = (certOption, keyOption, caOption)
        ClientIdentity.fill(cert: &cert, key: &key, ca: &ca)
        return (cert, key, ca)
    }
    var cert: String? { identity.cert }
    var key: String? { identity.key }
    var ca: String? { identity.ca }
    @Option(help: "With --node: chunks sent at once (1 to 32).") var concurrency = 8
    @Option(help: "With --node: an access grant with the publish right (its text or a file) whose scope covers the upload's name, when your certificate is not a publisher's of the origin.") var grant: String?
    @Option(help: .hidden) var exitAfterChunks: Int?
}

/// Reads chunk bytes from the files of a scan, keeping each file open once.
final class ChunkFiles: @unchecked Sendable {
    private let lock = NSLock()
    private var open: [String: FileSource] = [:]
    let sources: [UploadChunkSource]
    init(_ sources: [UploadChunkSource]) { self.sources = sources }
    func read(_ index: Int) throws -> [UInt8] {
        let s = sources[index]
        let file: FileSource = try lock.withLock {
            if let f = open[s.path] { return f }
            let f = try FileSource(path: s.path)
            open[s.path] = f
            return f
        }
        let bytes = try file.read(at: s.offset, count: s.length)
        guard bytes.count == s.length else {
            throw ContentError(.io, "\(s.path) changed while it was uploaded (it is shorter now); upload it again")
        }
        return bytes
    }
}

extension Put {
    /// Uploads every path into the origin `--node`, printing each content id and the totals.
    /// The origin `--node` names and the identity to reach it with, checked before anything runs
    /// (plain and sealed uploads alike).
    func uploadTarget() throws -> (address: PeerAddress, cert: String, key: String, ca: String) {
        guard let nodeText = uploadOptions.node, let address = PeerAddress(nodeText) else {
            throw ValidationError("--node takes an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)")
        }
        guard let cert = uploadOptions.cert, let key = uploadOptions.key, let ca = uploadOptions.ca else {
            throw ValidationError("--node needs --cert, --key and --ca: the certificate of a publisher the origin lists (stoq node --publisher NODEID), its key, and the network CA")
        }
        guard (1...32).contains(uploadOptions.concurrency) else { throw ValidationError("--concurrency must be 1 to 32") }
        return (address, cert, key, ca)
    }

    func upload() async throws {
        let (address, cert, key, ca) = try uploadTarget()
        guard storeOptions.store == nil else {
            throw ValidationError("--node uploads into the origin's own store; leave out --store")
        }
        let view = ProgressView("upload", mode: progressOptions.mode())
        defer { view.abandon() }
        view.phase("chunking \(paths.count == 1 ? paths[0] : "\(paths.count) paths")…")
        let scans = try reportingErrors { try paths.map { try UploadTree.scan(path: $0) } }
        for scan in scans {
            for s in scan.skipped { Console.shared.raw("stoq: warning: skipped \(s) (\(skipReason(s)))") }
        }
        let start = DispatchTime.now()
        let exitAfter = uploadOptions.exitAfterChunks
        var reports: [UploadReport] = []
        view.phase("connecting to \(address)…")
        do {
            reports = try await withPeer(address, cert: cert, key: key, ca: ca) { client in
                try await GrantInput.present(uploadOptions.grant, on: client)
                var out: [UploadReport] = []
                // The bar counts the bytes sent of every path (each path's share is known once the
                // origin said which chunks it lacks).
                let sentBefore = ByteCounter(), toSendBefore = ByteCounter()
                for (p, scan) in zip(paths, scans) {
                    let files = ChunkFiles(scan.sources)
                    view.phase("offering \(p) (\(scan.tree.chunks.count) chunks) to \(address)…")
                    var uploader = Uploader(client: client, concurrency: uploadOptions.concurrency, progress: { done, total in
                        if let exitAfter, done >= exitAfter {
                            // Test hook: an upload cut off mid-way (no commit), as by a lost connection.
                            FileHandle.standardError.write(Data("stoq: stopping after \(done) chunks (--exit-after-chunks)\n".utf8))
                            Foundation.exit(3)
                        }
                    })
                    let pathTotal = ByteCounter()
                    uploader.onBytes = { sent, toSend in
                        if sent == 0 { pathTotal.add(toSend) }
                        view.update(done: sentBefore.value + sent, total: toSendBefore.value + toSend)
                    }
                    let r = try await uploader.upload(scan.tree, name: p, isPublic: `public`, read: { try files.read($0) })
                    sentBefore.add(r.sentBytes)
                    toSendBefore.add(pathTotal.value)
                    Console.shared.result("\(r.content)")
                    Console.shared.note("put \(p) → \(r.content)\(`public` ? " (public)" : "")")
                    out.append(r)
                }
                return out
            }
            view.finish()
        } catch let refused as UploadRefused {
            throw CLIError("\(address) refused the upload: \(refused.message); check that the origin lists your certificate (stoq node --publisher NODEID)")
        } catch let e as ContentError {
            throw e
        } catch {
            throw CLIError("the upload to \(address) failed: \(ErrorReport.peopleText(error)); check that an origin runs there and that --cert/--key/--ca are a publisher's certificate of its network")
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let bytes = reports.reduce(Int64(0)) { $0 + $1.bytes }
        let sent = reports.reduce(Int64(0)) { $0 + $1.sentBytes }
        let chunks = reports.reduce(0) { $0 + $1.chunks }
        let sentChunks = reports.reduce(0) { $0 + $1.sentChunks }
        let files = reports.reduce(0) { $0 + $1.files }
        let saved = bytes == 0 ? 0 : 1 - Double(sent) / Double(bytes)
        Console.shared.note("put: \(files) files, \(humanBytes(bytes)) in \(chunks) chunks; uploaded \(sentChunks) chunks (\(humanBytes(sent))) to \(address), already there \(chunks - sentChunks); "
              + String(format: "dedup saved %.1f%%; %.1f MB/s", saved * 100, Double(bytes) / 1e6 / Swift.max(secs, 1e-9)))
    }
}
