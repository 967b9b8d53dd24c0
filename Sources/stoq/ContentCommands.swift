import ArgumentParser
import Foundation
import STOQContent

/// Options shared by every store command.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "Store directory (default: $STOQ_STORE or ~/.stoq/store).")
    var store: String?

    var directory: String {
        if let s = store { return s }
        if let e = ProcessInfo.processInfo.environment["STOQ_STORE"], !e.isEmpty { return e }
        return NSHomeDirectory() + "/.stoq/store"
    }

    func open() throws -> (DiskChunkStore, PublisherKeys) {
        let s = try DiskChunkStore(directory: directory)
        return (s, try PublisherKeyFile.load(directory: directory))
    }
}

/// The publisher secret kept in the store directory (`publisher.key`, 32 bytes, mode 0600).
enum PublisherKeyFile {
    static func load(directory: String) throws -> PublisherKeys {
        let path = directory + "/publisher.key"
        if let d = FileManager.default.contents(atPath: path) {
            guard d.count == 32 else { throw ContentError(.corruptStore, "\(path) is \(d.count) bytes, expected 32") }
            return try PublisherKeys(secret: Array(d))
        }
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(secret), attributes: [.posixPermissions: 0o600]),
              rename(tmp, path) == 0 else { throw ContentError(.io, "cannot write \(path)") }
        return try PublisherKeys(secret: secret)
    }
}

/// Runs a body and turns content errors into a one-line message and exit code 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as ContentError {
        FileHandle.standardError.write(Data("stoq: error: \(e.reason)\n".utf8))
        throw ExitCode(1)
    }
}

func humanBytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store files or directories; print each content id and the dedup figures.")
    @OptionGroup var storeOptions: StoreOptions
    @Flag(name: .long, help: "Print progress lines (bytes chunked so far) on stderr.") var progress = false
    @Argument(help: "Files or directories to put.") var paths: [String]

    func run() throws {
        try reportingErrors { try put() }
    }

    func put() throws {
        let (store, keys) = try storeOptions.open()
        var report: (@Sendable (Int64) -> Void)? = nil
        if progress {
            report = { n in FileHandle.standardError.write(Data("progress \(n)\n".utf8)) }
        }
        let pub = ContentPublisher(store: store, keys: keys, progress: report)
        var results = [PutReport]()
        let start = DispatchTime.now()
        for p in paths {
            let r = try pub.put(path: p)
            print("\(r.id)  \(p)")
            for s in r.skipped {
                FileHandle.standardError.write(Data("stoq: skipped \(s) (not a regular file or directory, or a name STOQ refuses)\n".utf8))
            }
            results.append(r)
        }
        let files = results.reduce(0) { $0 + $1.files }
        let bytes = results.reduce(Int64(0)) { $0 + $1.bytes }
        let chunks = results.reduce(0) { $0 + $1.chunks }
        let newChunks = results.reduce(0) { $0 + $1.newChunks }
        let newPlain = results.reduce(Int64(0)) { $0 + $1.newPlainBytes }
        let stored = results.reduce(Int64(0)) { $0 + $1.storedBytes }
        let reused = results.reduce(0) { $0 + $1.reusedChunks }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let ratio = bytes == 0 ? 0 : 1 - Double(newPlain) / Double(bytes)
        let line = "put: \(files) files, \(humanBytes(bytes)) in \(chunks) chunks; new \(newChunks) chunks (\(humanBytes(newPlain)) plaintext, \(humanBytes(stored)) written), already stored \(reused); "
            + String(format: "dedup %.1f%%; %.1f MB/s", ratio * 100, Double(bytes) / 1e6 / Swift.max(secs, 1e-9))
        print(line)
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore a file or directory, bit-identical with modes; with --peers, fetch it from several peers at once first.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var peerOptions: PeerOptions
    @Argument(help: "Content id (stoq:…).") var id: String
    @Option(name: .shortAndLong, help: "Output path (a file, or a directory to create/merge into).") var output: String
    @Option(help: "The publisher's key file (its publisher.key), to read content published from another store.")
    var publisherKey: String?

    func run() async throws {
        // A content id, or a mutable name (NAME or name:NAME) resolved through the peers.
        let cid: ContentID
        if let parsed = ContentID(id) {
            cid = parsed
        } else if id.hasPrefix("stoq:") || peerOptions.peers == nil {
            throw ContentError(.invalidArgument, "\(id) is not a content id (expected stoq: followed by 52 base32 characters); a mutable name is resolved through --peers")
        } else {
            cid = try await peerOptions.resolveName(id).content
        }
        var (store, keys) = try reportingErrors { try storeOptions.open() }
        if peerOptions.peers != nil {
            _ = try await peerOptions.fetch(cid, into: store)
        }
        try reportingErrors {
            if let publisherKey {
                guard let secret = FileManager.default.contents(atPath: publisherKey), secret.count == 32 else {
                    throw ContentError(.invalidArgument, "\(publisherKey) is not a 32-byte publisher key file")
                }
                keys = try PublisherKeys(secret: Array(secret))
            }
            let r = try ContentReader(store: store, keys: keys).restore(cid, to: output)
            print("get: \(cid) -> \(output): \(r.files) files, \(r.directories) directories, \(humanBytes(r.bytes))")
        }
    }
}

struct Chunk: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Chunk files without storing them and print statistics.")
    @Flag(name: .long, help: "Print statistics (the default and only output).") var stats = false
    @Flag(name: .long, help: "One JSON object.") var json = false
    @Option(name: .long, help: "Average chunk size (default: chosen by content type).") var avg: Int?
    @Option(name: .long, help: "Minimum chunk size (default: 4096, or avg/4 when --avg is below 16 KiB).") var min: Int?
    @Option(name: .long, help: "Maximum chunk size (default: 1 MiB).") var max: Int?
    @Flag(name: .long, help: "Fixed-size chunks of --avg bytes (default 16 KiB).") var fixed = false
    @Option(name: .long, help: "Threads (default: all cores).") var threads: Int = 0
    @Argument(help: "Files or directories.") var paths: [String]

    func run() throws {
        try reportingErrors {
            var files = [String]()
            for p in paths { try collect(p, into: &files) }
            var seen = Set<ChunkID>()
            var bytes: Int64 = 0, chunks = 0, uniqueBytes: Int64 = 0
            let buffers = SegmentBufferPool()
            let start = DispatchTime.now()
            for f in files {
                let src = try FileSource(path: f)
                let chunker: any Chunker
                if fixed {
                    chunker = try FixedSizeChunker(size: avg ?? 16384)
                } else if let a = avg {
                    chunker = try FastCDC(minSize: min ?? (a < 16384 ? a / 4 : 4096), avgSize: a, maxSize: max ?? (1 << 20))
                } else {
                    let head = try src.read(at: 0, count: 512)
                    var policy = ChunkingPolicy.standard
                    if let m = min { policy.minSize = m }
                    if let m = max { policy.maxSize = m }
                    chunker = try policy.chunker(for: ContentType.guess(name: f, head: head))
                }
                try ChunkStreamer(chunker: chunker, workers: threads, buffers: buffers).forEachBatch(src) { batch in
                    for r in batch.records {
                        bytes += Int64(r.length); chunks += 1
                        if seen.insert(r.hash!).inserted { uniqueBytes += Int64(r.length) }
                    }
                }
            }
            let secs = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            let ratio = bytes == 0 ? 0 : 1 - Double(uniqueBytes) / Double(bytes)
            let mbps = Double(bytes) / 1e6 / Swift.max(secs, 1e-9)
            if json {
                let obj: [String: Any] = ["files": files.count, "bytes": bytes, "chunks": chunks, "unique_chunks": seen.count,
                                          "unique_bytes": uniqueBytes, "dedup_ratio": ratio, "mb_per_s": mbps]
                let d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                print(String(decoding: d, as: UTF8.self))
            } else {
                print("files:         \(files.count)")
                print("bytes:         \(bytes)")
                print("chunks:        \(chunks)")
                print("unique chunks: \(seen.count)")
                print("unique bytes:  \(uniqueBytes)")
                print(String(format: "dedup ratio:   %.4f", ratio))
                print(String(format: "MB/s:          %.1f", mbps))
            }
        }
    }

    func collect(_ p: String, into files: inout [String]) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw ContentError(.notFound, "\(p) does not exist") }
        if isDir.boolValue {
            for name in try FileManager.default.contentsOfDirectory(atPath: p).sorted() {
                let c = p + "/" + name
                let attrs = try FileManager.default.attributesOfItem(atPath: c)
                let t = attrs[.type] as? FileAttributeType
                if t == .typeDirectory { try collect(c, into: &files) } else if t == .typeRegular { files.append(c) }
            }
        } else {
            files.append(p)
        }
    }
}

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List pinned content.")
    @OptionGroup var storeOptions: StoreOptions
    func run() throws {
        try reportingErrors {
            let (store, _) = try storeOptions.open()
            for p in try store.pins() { print("\(p.id)  \(p.kind.padding(toLength: 4, withPad: " ", startingAt: 0))  \(String(p.size).leftPadded(12))  \(p.name)") }
            let s = try store.stats()
            print("store \(storeOptions.directory): \(s.pins) pinned, \(s.chunks) chunks, \(humanBytes(s.bytes))")
        }
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

struct PinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pin", abstract: "Pin content so gc keeps it.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .long, help: "Label.") var name: String?
    @Argument var id: String
    func run() throws {
        try reportingErrors {
            guard let cid = ContentID(id) else { throw ContentError(.invalidArgument, "\(id) is not a content id") }
            let (store, _) = try storeOptions.open()
            try store.pin(cid, name: name ?? id)
            print("pinned \(cid)")
        }
    }
}

struct Unpin: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unpin content (gc may then remove it).")
    @OptionGroup var storeOptions: StoreOptions
    @Argument var id: String
    func run() throws {
        try reportingErrors {
            guard let cid = ContentID(id) else { throw ContentError(.invalidArgument, "\(id) is not a content id") }
            let (store, _) = try storeOptions.open()
            try store.unpin(cid)
            print("unpinned \(cid)")
        }
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove chunks not reachable from a pin.")
    @OptionGroup var storeOptions: StoreOptions
    func run() throws {
        try reportingErrors {
            let (store, _) = try storeOptions.open()
            let r = try store.gc()
            print("gc: removed \(r.removedChunks) chunks, freed \(humanBytes(r.freedBytes))")
        }
    }
}

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Store maintenance.", subcommands: [Verify.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check every chunk against its id; find missing, orphaned and temp files.")
        @OptionGroup var storeOptions: StoreOptions
        @Flag(name: .long, help: "Drop damaged, missing, orphaned and temp entries.") var repair = false
        func run() throws {
            try reportingErrors {
                let (store, _) = try storeOptions.open()
                let r = try store.verify(repair: repair)
                print("verify: checked \(r.checked) chunks: \(r.damaged.count) damaged, \(r.missing.count) missing, \(r.orphaned.count) orphaned, \(r.tempFiles) temp files\(r.repaired ? " (repaired)" : "")")
                for id in r.damaged { print("damaged \(id)") }
                for id in r.missing { print("missing \(id)") }
                for id in r.orphaned { print("orphaned \(id)") }
                for p in r.brokenPins { print("broken pin \(p) (put it again to restore it)") }
                if r.isClean { print("verify: store is consistent") }
                // Exit 1 while something is still wrong: anything at all without --repair; after a repair,
                // chunks that only putting the content again can bring back.
                if r.repaired ? !r.missing.isEmpty || !r.damaged.isEmpty : !r.isClean { throw ExitCode(1) }
            }
        }
    }
}
