import ArgumentParser
import Foundation
import STOQ

/// `stoq put PATH… --node ORIGIN --cert C --key K --ca CA`: upload into a running origin.
struct UploadOptions: ParsableArguments {
    @Option(help: "Upload into this running origin over stoq/1 instead of a local store, e.g. '[::1]:4433' (needs --cert, --key and --ca; the origin must list the certificate's node id with --publisher).")
    var node: String?
    @Option(help: "With --node: the publisher's certificate (PEM).") var cert: String?
    @Option(help: "With --node: the publisher's private key (PEM).") var key: String?
    @Option(help: "With --node: the network CA certificate (PEM).") var ca: String?
    @Option(help: "With --node: chunks sent at once (1 to 32).") var concurrency = 8
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
    func upload() async throws {
        guard let nodeText = uploadOptions.node, let address = PeerAddress(nodeText) else {
            throw ValidationError("--node takes an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)")
        }
        guard let cert = uploadOptions.cert, let key = uploadOptions.key, let ca = uploadOptions.ca else {
            throw ValidationError("--node needs --cert, --key and --ca: the certificate of a publisher the origin lists (stoq node --publisher NODEID), its key, and the network CA")
        }
        guard storeOptions.store == nil else {
            throw ValidationError("--node uploads into the origin's own store; leave out --store")
        }
        guard (1...32).contains(uploadOptions.concurrency) else { throw ValidationError("--concurrency must be 1 to 32") }
        let scans = try reportingErrors { try paths.map { try UploadTree.scan(path: $0) } }
        for scan in scans {
            for s in scan.skipped { FileHandle.standardError.write(Data("stoq: warning: skipped \(s) (\(skipReason(s)))\n".utf8)) }
        }
        let start = DispatchTime.now()
        let exitAfter = uploadOptions.exitAfterChunks
        let showProgress = progress
        var reports: [UploadReport] = []
        do {
            reports = try await withPeer(address, cert: cert, key: key, ca: ca) { client in
                var out: [UploadReport] = []
                for (p, scan) in zip(paths, scans) {
                    let files = ChunkFiles(scan.sources)
                    let uploader = Uploader(client: client, concurrency: uploadOptions.concurrency, progress: { done, total in
                        if showProgress, done == total || done % Swift.max(1, total / 100) == 0 {
                            FileHandle.standardError.write(Data("upload \(done)/\(total) chunks\n".utf8))
                        }
                        if let exitAfter, done >= exitAfter {
                            // Test hook: an upload cut off mid-way (no commit), as by a lost connection.
                            FileHandle.standardError.write(Data("stoq: stopping after \(done) chunks (--exit-after-chunks)\n".utf8))
                            Foundation.exit(3)
                        }
                    })
                    let r = try await uploader.upload(scan.tree, name: p, isPublic: `public`, read: { try files.read($0) })
                    Console.shared.result("\(r.content)")
                    Console.shared.note("put \(p) → \(r.content)\(`public` ? " (public)" : "")")
                    out.append(r)
                }
                return out
            }
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
