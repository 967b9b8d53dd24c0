import ArgumentParser
import Foundation
import STOQContent

/// Options shared by every store command.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "Store directory (default: $STOQ_STORE or ~/.stoq/store).")
    var store: String?
    @Option(name: .long, help: "How new chunks are kept: packs (append-only pack files) or files (one file per chunk). Default: $STOQ_STORE_FORMAT, else the store's own layout (an existing store of chunk files stays files), else packs for a new store. packs on a store of chunk files switches it; its files are still read (`stoq store migrate` moves them).")
    var storeFormat: StoreFormat?

    var directory: String { store ?? Self.defaultDirectory() }

    /// The format asked for: the option, else `$STOQ_STORE_FORMAT`, else nil (the store's own).
    var format: StoreFormat? {
        if let storeFormat { return storeFormat }
        if let e = ProcessInfo.processInfo.environment["STOQ_STORE_FORMAT"], let f = StoreFormat(rawValue: e) { return f }
        return nil
    }

    /// The store when no `--store` is given: `$STOQ_STORE`, else `~/.stoq/NAME` (`store` for the
    /// content commands; a node's own name for `stoq node`).
    static func defaultDirectory(name: String = "store") -> String {
        if let e = ProcessInfo.processInfo.environment["STOQ_STORE"], !e.isEmpty { return e }
        // $HOME first: Foundation's NSHomeDirectory() reads the password database on Linux.
        let home = ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.stoq/" + name
    }

    /// Opens the store; says on stderr what was rebuilt when its index was missing, empty or damaged.
    func openStore() throws -> DiskChunkStore {
        let s = try DiskChunkStore(directory: directory, format: format)
        // A command reading its own store hashes every chunk it reads (the interval is for serving).
        s.verifyInterval = 0
        if s.droppedTornBytes > 0 {
            Console.shared.note("store \(directory): cut \(s.droppedTornBytes) bytes of torn or uncommitted records (left by a crash or a failed put; never committed, so nothing the index names) from the end of its packs")
        }
        if let r = s.rebuilt {
            Console.shared.note("store \(directory): \(r)")
        }
        return s
    }

    /// The store's publisher key. A key is created only for a store that holds no content yet; a
    /// store with content whose key is missing or unreadable is refused (a new key would not open it).
    /// - Parameter create: whether a new, empty store may get a new key (`put`, `get`).
    func publisherKeys(for store: DiskChunkStore, create: Bool) throws -> PublisherKeys {
        let path = PublisherKeyFile.path(in: directory)
        switch PublisherKeyFile.state(directory: directory) {
        case .present(let keys):
            return keys
        case .unreadable(let why):
            throw ContentError(.keyMissing, "the publisher key of the store \(directory) cannot be used: \(why). It is the only key that opens this store's content, so stoq will not replace it: fix the file (restore it from a backup), or give the key with --publisher-key FILE")
        case .missing:
            let stats = try store.stats()
            guard stats.chunks == 0 && stats.pins == 0 else {
                throw ContentError(.keyMissing, "the store \(directory) holds content (\(stats.chunks) chunks, \(stats.pins) pinned) but its publisher key \(path) is missing. Only that key opens the content, so stoq will not make a new one: put the key file back from a backup (32 bytes, mode 0600), or give it with --publisher-key FILE")
            }
            guard create else { throw ContentError(.keyMissing, "the store \(directory) has no publisher key (\(path)); `stoq put` creates one for a new store") }
            let keys = try PublisherKeyFile.create(directory: directory)
            Console.shared.note("created the publisher key \(path) for the new store (keep a copy: content put with it cannot be read without it)")
            return keys
        }
    }
}

/// Runs a body and turns content errors into a one-line message and exit code 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    // The error is reported once, by `Stoq.main` (ErrorReport), in the one form.
    try body()
}

func humanBytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store files or directories; print each content id and the dedup figures. With --node, upload them into a running origin instead.")
    @OptionGroup var storeOptions: StoreOptions
    @Flag(name: .long, help: "Public content: seal it with a read key of its own (kept in the store's public.keys), which the origin hands to the nodes of its network so edges can serve it over HTTP. Opens this content only, never the rest of the publisher's.")
    var `public` = false
    @Flag(name: .long, help: "Sealed private content: a content key of its own (kept in the store's private.keys, never handed to nodes) and encrypted manifests, so the nodes that store and serve it learn chunk ids and sizes, no names or types. Readers get the key wrapped for their reader key: stoq share ID --reader FILE, or stoq grant create --reader FILE --content ID. With --node: sealed here (in --store), then its stored chunks are uploaded into the origin as they are.")
    var sealed = false
    @Argument(help: "Files or directories to put.") var paths: [String]
    @OptionGroup var uploadOptions: UploadOptions
    @OptionGroup var progressOptions: ProgressOptions

    func run() async throws {
        _ = progressOptions.mode()  // --quiet silences the notes from here on
        LogBootstrap.forCommand(quiet: progressOptions.quiet)
        if sealed && `public` { throw ValidationError("--sealed and --public exclude each other: a public content's key is handed to every node of the network") }
        if sealed && uploadOptions.node != nil { return try await uploadSealed() }
        if uploadOptions.node != nil { return try await upload() }
        try reportingErrors { try put() }
    }

    func put() throws {
        // Every path is checked before the store is opened (or created, with its key).
        for p in paths {
            var st = stat()
            guard fstatat(AT_FDCWD, p, &st, 0) == 0 else {
                throw ContentError(.notFound, "\(p) does not exist (or cannot be read): \(String(cString: strerror(errno)))")
            }
            let format = st.st_mode & S_IFMT
            guard format == S_IFREG || format == S_IFDIR else {
                throw ContentError(.invalidArgument, "\(p) is \(describeFormat(format)), not a regular file or a directory; stoq stores only files, directories and the links inside them")
            }
        }
        let store = try storeOptions.openStore()
        let keys = try storeOptions.publisherKeys(for: store, create: true)
        // The bar counts the bytes chunked so far of all the paths (their total is known first).
        let view = ProgressView("put", mode: progressOptions.mode())
        defer { view.abandon() }
        view.phase("reading \(paths.count == 1 ? paths[0] : "\(paths.count) paths")…")
        // (No bar, no total: --quiet skips the walk that sums the sizes.)
        let total = view.mode == .off ? 0 : paths.reduce(Int64(0)) { $0 + plainBytes(under: $1) }
        view.phase("chunking…")
        let before = ByteCounter()
        let report: @Sendable (Int64) -> Void = { n in view.update(done: before.value + n, total: total) }
        let pub = ContentPublisher(store: store, keys: keys, progress: report)
        var results = [PutReport]()
        let start = DispatchTime.now()
        let keyring = `public` ? try PublicKeyring(path: PublicKeyring.publisherPath(in: storeOptions.directory)) : nil
        for p in paths {
            let r: PutReport
            if sealed {
                r = try putSealed(store: store, keys: keys, path: p, publisher: pub)
            } else if let keyring {
                // A key of its own per content: handing it out opens this content and nothing else.
                let key = PublicKeyring.newKey()
                r = try pub.put(path: p, readKey: key)
                try keyring.add(r.id, key: key)
                Console.shared.result("\(r.id)")
                Console.shared.note("put \(p) → \(r.id) (public)")
            } else {
                r = try pub.put(path: p)
                Console.shared.result("\(r.id)")
                Console.shared.note("put \(p) → \(r.id)")
            }
            for s in r.skipped {
                Console.shared.raw("stoq: warning: skipped \(s) (\(skipReason(s)))")
            }
            results.append(r)
            before.add(r.bytes)
            view.update(done: before.value, total: Swift.max(total, before.value))
        }
        view.finish()
        let skipped = results.reduce(0) { $0 + $1.skipped.count }
        if skipped > 0 {
            FileHandle.standardError.write(Data("stoq: warning: \(skipped) entries were not stored (above); a get of this content will not have them\n".utf8))
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
        let links = results.reduce(0) { $0 + $1.links }
        let line = "put: \(files) files\(links > 0 ? ", \(links) links" : ""), \(humanBytes(bytes)) in \(chunks) chunks; new \(newChunks) chunks (\(humanBytes(newPlain)) plaintext, \(humanBytes(stored)) written), already stored \(reused); "
            + String(format: "dedup %.1f%%; %.1f MB/s", ratio * 100, Double(bytes) / 1e6 / Swift.max(secs, 1e-9))
        Console.shared.note(line)
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore a file or directory, bit-identical with modes; with --peers, fetch it from several peers at once first.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var peerOptions: PeerOptions
    @OptionGroup var discovery: DHTDiscoveryOptions
    @Argument(help: "Content id (stoq:…), a name (published on an origin: asked of --peers; else a DHT name: asked through --bootstrap), or a ticket (stoq1…, from stoq share: then no other flag is needed).") var id: String
    @Option(name: .shortAndLong, help: "Output path (a file, or a directory to create/merge into).") var output: String
    @Option(help: "The publisher's key file (its publisher.key), to read content published from another store.")
    var publisherKey: String?
    @Option(help: "The reader key file that opens a ticket made for a reader (stoq share --reader; default ~/.stoq/reader.key).")
    var readerKey: String?
    @OptionGroup var progressOptions: ProgressOptions

    func run() async throws {
        let view = ProgressView("get", mode: progressOptions.mode())
        LogBootstrap.forCommand(quiet: progressOptions.quiet)
        defer { view.abandon() }
        // A ticket (stoq share) needs nothing else: no certificate, no peers, no key.
        if ShareTicket.looksLikeTicket(id) {
            try await getTicket(view: view)
            return
        }
        // A content id, or a name (NAME or name:NAME): published on an origin (asked of --peers),
        // else in the Nexus DHT (--bootstrap); GetNames.swift.
        let cid: ContentID
        if let parsed = ContentID(id) {
            cid = parsed
        } else if id.hasPrefix("stoq:") {
            throw ContentError(.invalidArgument, "\(id) is not a content id (expected stoq: followed by 52 base32 characters)")
        } else {
            view.phase("resolving the name \(id)…")
            cid = try await resolveName(id)
        }
        // --bootstrap: the content's providers found through the DHT join the peers.
        if discovery.bootstrap != nil { view.phase("looking up \(cid) in the DHT…") }
        let peerOptions = try await discovery.discover(cid, peers: self.peerOptions)
        // A grant's wrapped key is opened before anything is fetched: a grant that is not for this
        // content or this reader is refused at once.
        // (--grant is the peer options' one: the same grant is presented to the peers.)
        // A grant without wrapped keys (a read or relay grant for the peers) opens nothing here.
        let grantKey = try peerOptions.grant.flatMap { text in
            try ReaderKeyOptions.carriesContentKeys(text) ? try ReaderKeyOptions.contentKey(for: cid, grant: text, keyFile: readerKey) : nil
        }
        // The key is settled before anything is fetched: a store whose key is lost is refused at once.
        let (store, keys) = try reportingErrors { () throws -> (DiskChunkStore, PublisherKeys) in
            let store = try storeOptions.openStore()
            if let publisherKey {
                let given: PublisherKeys
                do { given = try PublisherKeyFile.load(path: publisherKey) } catch let e as ContentError {
                    throw ContentError(.invalidArgument, "--publisher-key: \(e.reason)")
                }
                // A new store still gets its own key, as every store with content has one (so
                // `store verify` can tell a lost key); a store with content is read with the key given.
                _ = try? storeOptions.publisherKeys(for: store, create: true)
                return (store, given)
            }
            return (store, try storeOptions.publisherKeys(for: store, create: true))
        }
        if peerOptions.peers != nil {
            _ = try await peerOptions.fetch(cid, into: store, view: view)
        }
        // Public content opens with its own key: the store's keyring (its publisher), else the key
        // a peer hands out for it; private content with the publisher's read key.
        var reader = ContentReader(store: store, keys: keys)
        if let key = grantKey {
            // A sealed content opened with the key the grant carries for this reader.
            reader = ContentReader(store: store, readKey: key)
        } else if let key = ReaderKeyOptions.sealedKey(for: cid, in: storeOptions.directory) {
            // A sealed content this store put: its own key, from private.keys.
            reader = ContentReader(store: store, readKey: key)
        } else if let key = try reportingErrors({ try PublicKeyring(path: PublicKeyring.publisherPath(in: storeOptions.directory)).key(for: cid) }) {
            reader = ContentReader(store: store, readKey: key)
        } else if peerOptions.peers != nil, let key = await peerOptions.publicKey(of: cid) {
            reader = ContentReader(store: store, readKey: key)
        }
        try reportingErrors {
            let r = try restoreShowingProgress(reader, cid, to: output, mode: view.mode, verb: peerOptions.peers == nil ? "get" : "write")
            Console.shared.note("get: \(cid) -> \(output): \(r.files) files, \(r.directories) directories\(r.links > 0 ? ", \(r.links) links" : ""), \(humanBytes(r.bytes))")
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

    /// Regular files under `p`. A path given that is not a regular file or directory (a FIFO, socket or
    /// device) is refused, since reading it could wait forever; inside a directory such entries and
    /// links are skipped with a warning.
    func collect(_ p: String, into files: inout [String]) throws {
        var st = stat()
        guard fstatat(AT_FDCWD, p, &st, 0) == 0 else { throw ContentError(.notFound, "\(p) does not exist (or cannot be read): \(String(cString: strerror(errno)))") }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            for name in try FileManager.default.contentsOfDirectory(atPath: p).sorted() {
                let c = p + "/" + name
                let attrs = try FileManager.default.attributesOfItem(atPath: c)
                let t = attrs[.type] as? FileAttributeType
                if t == .typeDirectory { try collect(c, into: &files) } else if t == .typeRegular { files.append(c) } else {
                    FileHandle.standardError.write(Data("stoq: warning: skipped \(c) (\(describeFile(c)), not a regular file)\n".utf8))
                }
            }
        case S_IFREG:
            files.append(p)
        default:
            let what = describeFormat(st.st_mode & S_IFMT)
            throw ContentError(.invalidArgument, "\(p) is \(what), not a regular file or a directory; stoq chunk reads only regular files (a FIFO or device may never end)")
        }
    }
}

/// What is at `path` (not following a final link), in words for messages.
func describeFile(_ path: String) -> String {
    var st = stat()
    guard lstat(path, &st) == 0 else { return "something that cannot be read" }
    return describeFormat(st.st_mode & S_IFMT)
}

/// A file type (the S_IFMT bits of a mode) in words (STOQContent's wording).
func describeFormat(_ format: mode_t) -> String { describeFileFormat(format) }

/// Why `put` skipped an entry, from what is at the path now.
func skipReason(_ path: String) -> String {
    switch describeFile(path) {
    case "a symbolic link": return "a symbolic link whose target is not UTF-8 or is longer than 4095 bytes"
    case "a regular file", "a directory": return "its name is not one STOQ can store: 1...255 bytes of UTF-8, without \"/\" or NUL"
    case let kind: return "\(kind); only files, directories and links are stored"
    }
}

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List pinned content.")
    @OptionGroup var storeOptions: StoreOptions
    func run() throws {
        try reportingErrors {
            let store = try storeOptions.openStore()
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
            let store = try storeOptions.openStore()
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
            let store = try storeOptions.openStore()
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
            let store = try storeOptions.openStore()
            let r = try store.gc()
            print("gc: removed \(r.removedChunks) chunks, freed \(humanBytes(r.freedBytes))" + (r.packsCompacted > 0 ? "; compacted \(r.packsCompacted) packs, gave back \(humanBytes(r.packBytesReclaimed))" : ""))
        }
    }
}

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Store maintenance.", subcommands: [Verify.self, Migrate.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check every chunk against its id, the index against the chunk files, and the publisher key; find damaged, missing, orphaned and temp files.")
        @OptionGroup var storeOptions: StoreOptions
        @Flag(name: .long, help: "Fix what can be fixed: index again the chunks manifests name, drop index entries of damaged and missing chunks, and move damaged, orphaned and temp files to <store>/quarantine/<time>/ (nothing is deleted).")
        var repair = false
        func run() throws {
            try reportingErrors {
                let store = try storeOptions.openStore()
                let r = try store.verify(repair: repair)
                if let rebuilt = r.indexRebuilt { print("verify: \(rebuilt)") }
                print("verify: checked \(r.checked) chunks: \(r.damaged.count) damaged, \(r.missing.count) missing, \(r.orphaned.count) orphaned, \(r.unindexed.count) unindexed, \(r.tempFiles) temp files\(r.repaired ? " (repaired)" : "")")
                for id in r.damaged { print("damaged \(id)") }
                for id in r.missing { print("missing \(id)") }
                for id in r.orphaned { print("orphaned \(id) (no manifest names it)") }
                for id in r.unindexed { print("unindexed \(id) (a manifest, or named by one; \(r.repaired ? "indexed again" : "--repair indexes it again"))") }
                for p in r.recoveredPins { print("recovered pin \(p) (a manifest nothing else names; unpin it if unwanted)") }
                for p in r.brokenPins { print("broken pin \(p) (put it again to restore it)") }
                if let q = r.quarantine {
                    print("verify: moved \(r.quarantinedFiles) files to \(q); nothing was deleted (README.txt there says how to put a file back; remove the folder when you no longer need it)")
                }
                // The publisher key: content in a store is readable only with it.
                let keyProblem: String?
                switch PublisherKeyFile.state(directory: storeOptions.directory) {
                case .present: keyProblem = nil; print("verify: publisher key present")
                case .unreadable(let why): keyProblem = "publisher key unreadable: \(why)"
                case .missing:
                    let s = try store.stats()
                    if s.pins > 0 {
                        keyProblem = "publisher key missing: \(PublisherKeyFile.path(in: storeOptions.directory)) is gone and the store holds \(s.pins) pinned contents that only it opens; put it back from a backup (stoq will not create a new one here)"
                    } else {
                        keyProblem = nil
                        print("verify: no publisher key (no pinned content; `stoq put` creates one for a new store)")
                    }
                }
                if let k = keyProblem { print("verify: \(k)") }
                if r.isClean && keyProblem == nil { print("verify: store is consistent") }
                // Exit 1 while something is still wrong: anything at all without --repair; after a repair,
                // chunks that only putting the content again can bring back, and always a lost key.
                if keyProblem != nil || (r.repaired ? !r.missing.isEmpty || !r.damaged.isEmpty : !r.isClean) { throw ExitCode(1) }
            }
        }
    }
}
