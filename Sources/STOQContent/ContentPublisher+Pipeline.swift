import Crypto
import Dispatch
import Foundation

// The cross-file ingest pipeline of `put` for a directory.
//
// The tree is walked first (names, modes, links; no file is read). Then worker threads (one per core)
// take the regular files in walk order, a bounded window ahead of the consumer: each reads its file
// whole (files up to ``ContentPublisher/pipelineFileLimit``), chunks and hashes it, derives the chunk
// keys and convergent tags, resolves the tags against the chunks this put already sealed (in memory)
// and then the store's convergent index (one query per run of files), seals only what is new, builds
// the file's manifest, asks the store which of the new ids it already holds (one query) and writes
// the rest. The consuming thread, going through the tree in walk order, records each file in the
// session's batch, committed every 64 Ki entries (one transaction, after the packs are synced):
// bytes are durable before any index row, manifest or pin names them, as in the one-file path.
// Larger files stream through ``ChunkStreamer`` on the consuming thread while the workers read ahead.

extension ContentPublisher {
    /// Files at most this large are read whole and prepared by the pipeline's workers; larger ones
    /// stream through ``ChunkStreamer`` (segments on all cores) on the consuming thread.
    static let pipelineFileLimit: Int64 = 8 << 20
    /// Bytes of files the workers read ahead of the consumer (at least one file is always allowed).
    static let pipelineAheadBytes: Int64 = 64 << 20
    /// Files the workers read ahead of the consumer.
    static let pipelineAheadFiles = 4096
    /// Files one worker prepares together (one store query of each kind for all of them).
    static let pipelineRunFiles = 64
    /// Bytes of the files one worker prepares together.
    static let pipelineRunBytes: Int64 = 4 << 20

    /// A directory as walked: its entries in name order, nothing read yet.
    final class WalkedDirectory {
        let path: String
        var entries: [WalkedEntry] = []
        init(path: String) { self.path = path }
    }

    /// One entry of a ``WalkedDirectory``.
    enum WalkedEntry {
        /// A regular file: its index in the walk's file list.
        case file(name: String, mode: UInt32, index: Int)
        case directory(name: String, mode: UInt32, WalkedDirectory)
        case link(name: String, target: String, mode: UInt32)
        /// A path that is not stored (a FIFO, socket, device, or a name or target STOQ cannot store).
        case skipped(String)
    }

    /// Walks `path` (a directory) without reading files: the same entries, checks and order as a
    /// recursive put, with each regular file appended to `files` (path, size when walked).
    func walk(_ path: String, depth: Int, files: inout [(path: String, size: Int64)]) throws -> WalkedDirectory {
        guard depth < 256 else { throw ContentError(.tooLarge, "\(path): directories nested more than 256 deep") }
        let dir = WalkedDirectory(path: path)
        for name in try Posix.listDirectory(path) {
            let child = path.hasSuffix("/") ? path + name : path + "/" + name
            let info = try Posix.info(child)
            do { try DirectoryManifest.validate(name: name) } catch { dir.entries.append(.skipped(child)); continue }
            if info.isSymlink {
                // A link is stored as written, never followed: its target may point anywhere (as in tar).
                guard let target = try? Posix.readLink(child), (try? DirectoryManifest.validate(target: target)) != nil else {
                    dir.entries.append(.skipped(child))
                    continue
                }
                dir.entries.append(.link(name: name, target: target, mode: info.mode))
            } else if info.isDirectory {
                dir.entries.append(.directory(name: name, mode: info.mode, try walk(child, depth: depth + 1, files: &files)))
            } else if info.isRegular {
                dir.entries.append(.file(name: name, mode: info.mode, index: files.count))
                files.append((child, info.size))
            } else {
                dir.entries.append(.skipped(child))
            }
        }
        return dir
    }

    /// Puts a directory through the pipeline: walk, prepare and write files on worker threads,
    /// record them in walk order on this thread.
    func putDirectoryPipelined(_ path: String, session: Session) throws -> PutReport {
        var files = [(path: String, size: Int64)]()
        let root = try walk(path, depth: 0, files: &files)
        let threads = workers > 0 ? workers : max(1, Posix.processorCount)
        let pipeline = FilePipeline(sizes: files.map { min($0.size, Self.pipelineFileLimit) })
        let tableKey = session.tableKey, metaKey = session.metaKey
        let paths = files.map(\.path)
        pipeline.start(workers: min(threads, max(1, files.count))) { [self] range in
            self.prepare(paths: Array(paths[range]), tableKey: tableKey, metaKey: metaKey, pipeline: pipeline)
        }
        defer { pipeline.stop() }
        // Chunks this put wrote stay known for the whole put, as the workers' sealed-tag map does, so
        // a chunk is counted (and recorded) as new once, and a large file never writes it again.
        session.keepWritten = true
        return try putWalked(root, paths: paths, pipeline: pipeline, session: session)
    }

    private func putWalked(_ dir: WalkedDirectory, paths: [String], pipeline: FilePipeline, session: Session) throws -> PutReport {
        var entries = [DirectoryManifest.Entry]()
        var total = PutReport(id: ContentID(ChunkID.of([UInt8]())))
        var size: UInt64 = 0
        for e in dir.entries {
            switch e {
            case .skipped(let p):
                total.skipped.append(p)
            case .link(let name, let target, let mode):
                entries.append(.init(name: name, linkTo: target, mode: mode))
                total.links += 1
            case .directory(let name, let mode, let child):
                let r = try putWalked(child, paths: paths, pipeline: pipeline, session: session)
                entries.append(.init(name: name, mode: mode, kind: .directory, id: r.id, size: UInt64(r.bytes)))
                size += UInt64(r.bytes)
                total.add(r)
            case .file(let name, let mode, let index):
                let r = try finish(index, path: paths[index], pipeline: pipeline, session: session)
                entries.append(.init(name: name, mode: mode, kind: .file, id: r.id, size: UInt64(r.bytes)))
                size += UInt64(r.bytes)
                total.add(r)
            }
        }
        total.id = try storeDirectoryManifest(entries, size: size, named: "\(dir.path): ", session: session, report: &total)
        return total
    }

    /// Writes what a worker prepared for file `index` (or streams a large file here) and records it.
    private func finish(_ index: Int, path: String, pipeline: FilePipeline, session: Session) throws -> PutReport {
        guard case .ready(let f) = try pipeline.take(index).get() else {
            return try putFile(FileSource(path: path), name: path, session: session)
        }
        var report = PutReport(id: ContentID(ChunkID.of([UInt8]())))
        report.files = 1
        for c in f.chunks {
            report.bytes += Int64(c.length)
            report.chunks += 1
            if c.known || session.written.contains(c.id) {
                report.reusedChunks += 1
            } else {
                session.written.insert(c.id)
                if let n = pipeline.takeWritten(c.id) {
                    // Written to the store by the worker that sealed it (made durable by the next commit).
                    report.newChunks += 1
                    report.newPlainBytes += Int64(c.length)
                    report.storedBytes += Int64(n)
                } else {
                    // Sealed in this put but already in the store (its convergent-index row was gone).
                    report.reusedChunks += 1
                }
                session.batch.plainIndex.append((c.tag, c.id))
                session.localTags[c.tag] = c.id
                session.batch.chunks.append((c.id, c.sealedSize))
            }
            session.noteSealed(c.id, size: c.length)
        }
        if let m = f.manifest {
            if !m.stored, !session.written.contains(m.id) {
                // (Written by the worker.)
                session.written.insert(m.id)
                report.storedBytes += Int64(m.bytes.count)
            }
            session.batch.chunks.append((m.id, m.bytes.count))
            if session.metaKey != nil {
                session.noteSealed(m.id, size: m.bytes.count)
            } else {
                session.batch.manifests.append((m.id, "file", UInt64(report.bytes), f.type))
                for c in f.chunks { session.batch.edges.append((m.id, c.id)) }
            }
            report.id = ContentID(m.id)
        } else {
            let entries = f.chunks.map { FileManifest.Entry(id: $0.id, offset: UInt64($0.offset), size: UInt64($0.length)) }
            report.id = ContentID(try buildTree(entries: entries, keys: f.keys, contentType: f.type, total: UInt64(report.bytes), session: session, report: &report))
        }
        session.bytesBefore += report.bytes
        progress?(session.bytesBefore)
        try session.maybeCommit()
        return report
    }

    /// A file read and cut by a worker, before its tags are resolved.
    struct ScannedFile {
        var data: [UInt8]
        var type: String
        var compress: Bool
        var offsets: [Int] = [], lengths: [Int] = [], hashes: [ChunkID] = []
        var keys: [[UInt8]] = [], tags: [ChunkID] = []
    }

    /// Reads `path` whole and cuts and hashes it (nil: larger than the pipeline's limit).
    func scan(path: String) throws -> ScannedFile? {
        let fd = try FileDescriptor.openRegularForReading(path)
        defer { fd.close() }
        let size = try fd.size()
        guard size <= Self.pipelineFileLimit else { return nil }
        let data = try fd.pread(count: Int(size), at: 0)
        let type = ContentType.guess(name: path, head: Array(data.prefix(512)))
        let chunker = try policy.chunker(for: type)
        let compress = !Self.alreadyCompressed.contains(type) && !type.hasPrefix("image/") && !type.hasPrefix("video/") && !type.hasPrefix("audio/")
        var f = ScannedFile(data: data, type: type, compress: compress)
        // Cut and hash, exactly as the streamer does for an input of one segment.
        data.withUnsafeBytes { raw in
            var pos = 0
            while pos < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[pos...]))
                f.hashes.append(ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + n)])))
                f.offsets.append(pos)
                f.lengths.append(n)
                pos += n
            }
        }
        f.keys = f.hashes.map { cipher.chunkKey(plaintextHash: $0) }
        f.tags = f.keys.map { ChunkID.of($0) }
        return f
    }

    /// A worker's part for a run of files: read, chunk and hash each; resolve all their tags at once
    /// (this put's sealed chunks in memory, then one convergent-index query); seal what is new; build
    /// each file's manifest; one query for which new ids the store already holds. Touches no session
    /// state; shares only the pipeline's maps (under its lock) and the store's reads.
    func prepare(paths: [String], tableKey: SymmetricKey, metaKey: SymmetricKey?, pipeline: FilePipeline) -> [Result<PreparedFile.Outcome, any Error>] {
        var out = [Result<PreparedFile.Outcome, any Error>?](repeating: nil, count: paths.count)
        var files = [(slot: Int, file: ScannedFile)]()
        for (k, p) in paths.enumerated() {
            do {
                if let f = try scan(path: p) { files.append((k, f)) } else { out[k] = .success(.large) }
            } catch { out[k] = .failure(error) }
        }
        do {
            // Every chunk of the run, flat: (file, chunk) → its tag.
            var ids = files.map { [ChunkID?](repeating: nil, count: $0.file.tags.count) }
            var sizes = files.map { [Int](repeating: 0, count: $0.file.tags.count) }
            var known = files.map { [Bool](repeating: false, count: $0.file.tags.count) }
            for (j, f) in files.enumerated() {
                // Sealed earlier in this put (by any worker): no store query, no sealing.
                pipeline.resolve(f.file.tags) { i, id, n in ids[j][i] = id; sizes[j][i] = n }
            }
            var ask = [ChunkID](), asked = Set<ChunkID>()
            for (j, f) in files.enumerated() {
                for i in f.file.tags.indices where ids[j][i] == nil && asked.insert(f.file.tags[i]).inserted { ask.append(f.file.tags[i]) }
            }
            let found = ask.isEmpty ? [:] : try store.lookupPlain(ask)
            var sealed = [ChunkID: SealedChunk]()
            var sealedOrder = [ChunkID]()
            var manifests = [PreparedFile.Manifest?](repeating: nil, count: files.count)
            var prepared = [PreparedFile]()
            for (j, f) in files.enumerated() {
                let file = f.file
                for i in file.tags.indices where ids[j][i] == nil {
                    let tag = file.tags[i]
                    if let id = found[tag] { ids[j][i] = id; known[j][i] = true; continue }
                    if let s = sealed[tag] { ids[j][i] = s.id; sizes[j][i] = s.bytes.count; continue }
                    let s = try file.data.withUnsafeBytes { raw in
                        try cipher.seal(UnsafeRawBufferPointer(rebasing: raw[file.offsets[i]..<(file.offsets[i] + file.lengths[i])]),
                                        plaintextHash: file.hashes[i], tryCompression: file.compress)
                    }
                    sealed[tag] = s
                    sealedOrder.append(tag)
                    ids[j][i] = s.id
                    sizes[j][i] = s.bytes.count
                }
                var chunks = [PreparedFile.Chunk]()
                chunks.reserveCapacity(file.tags.count)
                for i in file.tags.indices {
                    chunks.append(.init(tag: file.tags[i], id: ids[j][i]!, offset: file.offsets[i], length: file.lengths[i], sealedSize: sizes[j][i], known: known[j][i]))
                }
                if chunks.count <= fanout {
                    let entries = chunks.map { FileManifest.Entry(id: $0.id, offset: UInt64($0.offset), size: UInt64($0.length)) }
                    let sealedKeys = try KeyTable.seal(file.keys, readKey: tableKey)
                    var bytes = FileManifest(kind: .leaf, contentType: file.type, totalSize: UInt64(file.data.count), entries: entries, sealedKeys: sealedKeys).encode()
                    if let metaKey { bytes = try SealedMetadata.sealManifest(bytes, metaKey: metaKey) }
                    manifests[j] = .init(id: ChunkID.of(bytes), bytes: bytes, stored: false)
                }
                prepared.append(PreparedFile(type: file.type, chunks: chunks, manifest: nil, keys: chunks.count <= fanout ? [] : file.keys))
            }
            // One query: which of the new ids (and the manifests) the store already holds.
            var check = sealedOrder.map { sealed[$0]!.id }
            for m in manifests { if let m { check.append(m.id) } }
            let stored = check.isEmpty ? [] : try store.containing(check)
            // The worker writes what is new (the pack set takes one record per id until it is
            // committed), and only then publishes the tags: a chunk another file finds through
            // them is in the store before the consumer records that file.
            for t in sealedOrder where !stored.contains(sealed[t]!.id) && !pipeline.isPublished(t) {
                try store.writeChunk(sealed[t]!.id, sealed[t]!.bytes)
            }
            for m in manifests { if let m, !stored.contains(m.id) { try store.writeChunk(m.id, m.bytes) } }
            pipeline.publish(sealedOrder.map { (tag: $0, chunk: sealed[$0]!) }, stored: stored)
            for (j, f) in files.enumerated() {
                var p = prepared[j]
                if var m = manifests[j] { m.stored = stored.contains(m.id); p.manifest = m }
                out[f.slot] = .success(.ready(p))
            }
        } catch {
            for f in files where out[f.slot] == nil { out[f.slot] = .failure(error) }
        }
        return out.map { $0! }
    }
}

/// What a pipeline worker made of one file.
struct PreparedFile: Sendable {
    /// A worker's result: a prepared file, or a file too large for the pipeline (streamed by the consumer).
    enum Outcome: Sendable {
        case ready(PreparedFile)
        case large
    }
    struct Chunk: Sendable {
        var tag: ChunkID
        var id: ChunkID
        var offset: Int
        var length: Int
        /// Stored (sealed) size; 0 when `known`.
        var sealedSize: Int
        /// Found in the store's convergent index (stored and committed before this put).
        var known: Bool
    }
    struct Manifest: Sendable {
        var id: ChunkID
        var bytes: [UInt8]
        /// The store already holds it.
        var stored: Bool
    }
    var type: String
    var chunks: [Chunk]
    /// The file's one leaf manifest; nil when it has more chunks than the fanout (the consumer builds the tree).
    var manifest: Manifest?
    /// The chunk keys, kept only when `manifest` is nil.
    var keys: [[UInt8]]
}

/// The shared state of a pipelined put: the files' results (handed over in walk order), the
/// read-ahead window, the tags sealed so far and the sealed bytes not yet written.
///
/// `@unchecked Sendable`: every member is touched only while holding `cond` (results, window) or
/// `maps` (sealed tags, written sizes).
final class FilePipeline: @unchecked Sendable {
    private let cond = NSCondition()
    private let costs: [Int64]
    private var next = 0, consumed = 0, ahead: Int64 = 0
    private var results = [Int: Result<PreparedFile.Outcome, any Error>]()
    private var stopped = false
    private var running = 0
    private let maps = NSLock()
    private var sealedTags = [ChunkID: (id: ChunkID, size: Int)]()
    /// Stored sizes of the chunks workers wrote, until the consumer records them.
    private var written = [ChunkID: Int]()

    /// - Parameter sizes: each file's cost in the read-ahead window (its size, capped).
    init(sizes: [Int64]) { costs = sizes }

    /// Starts `workers` threads calling `prepare` for runs of consecutive file indices, in order.
    func start(workers: Int, prepare: @escaping @Sendable (Range<Int>) -> [Result<PreparedFile.Outcome, any Error>]) {
        guard !costs.isEmpty else { return }
        cond.lock(); running = workers; cond.unlock()
        for _ in 0..<workers {
            // Threads of their own, not the dispatch pool: the consumer blocks on results (see ChunkStreamer).
            Thread.detachNewThread { self.run(prepare) }
        }
    }

    /// Whether file `next` fits in the read-ahead window (the file the consumer waits for always does).
    private var nextFits: Bool {
        next <= consumed || (next - consumed < ContentPublisher.pipelineAheadFiles && ahead + costs[next] <= ContentPublisher.pipelineAheadBytes)
    }

    private func run(_ prepare: @Sendable (Range<Int>) -> [Result<PreparedFile.Outcome, any Error>]) {
        while true {
            cond.lock()
            while !stopped && next < costs.count && !nextFits { cond.wait() }
            if stopped || next >= costs.count {
                running -= 1
                cond.broadcast()
                cond.unlock()
                return
            }
            // A run of files (one store query of each kind for all of them): up to 64 files or 4 MiB.
            let first = next
            var bytes: Int64 = 0
            repeat {
                bytes += costs[next]
                ahead += costs[next]
                next += 1
            } while next < costs.count && next - first < ContentPublisher.pipelineRunFiles
                && bytes + costs[next] <= ContentPublisher.pipelineRunBytes && nextFits
            cond.unlock()
            let r = prepare(first..<next)
            cond.lock()
            for (k, x) in r.enumerated() { results[first + k] = x }
            cond.broadcast()
            cond.unlock()
        }
    }

    /// The result for file `i` (waits for it); files are taken in order.
    func take(_ i: Int) -> Result<PreparedFile.Outcome, any Error> {
        cond.lock(); defer { cond.unlock() }
        while results[i] == nil { cond.wait() }
        let r = results.removeValue(forKey: i)!
        consumed = i + 1
        ahead -= costs[i]
        cond.broadcast()
        return r
    }

    /// Stops the workers and waits until every one has returned.
    func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        while running > 0 { cond.wait() }
        results.removeAll()
        cond.unlock()
    }

    /// Calls `found` for each index of `tags` whose chunk this put has sealed already.
    func resolve(_ tags: [ChunkID], _ found: (Int, ChunkID, Int) -> Void) {
        maps.lock(); defer { maps.unlock() }
        guard !sealedTags.isEmpty else { return }
        for (i, t) in tags.enumerated() { if let s = sealedTags[t] { found(i, s.id, s.size) } }
    }

    /// Records chunks a worker sealed (and wrote, unless the store held them). A tag another worker
    /// published meanwhile keeps that worker's entry (the same id: convergent).
    func publish(_ chunks: [(tag: ChunkID, chunk: SealedChunk)], stored: Set<ChunkID>) {
        guard !chunks.isEmpty else { return }
        maps.lock(); defer { maps.unlock() }
        for (tag, s) in chunks where sealedTags[tag] == nil {
            sealedTags[tag] = (s.id, s.bytes.count)
            if !stored.contains(s.id) { written[s.id] = s.bytes.count }
        }
    }

    /// Whether a worker has published `tag` already (its chunk is written).
    func isPublished(_ tag: ChunkID) -> Bool {
        maps.lock(); defer { maps.unlock() }
        return sealedTags[tag] != nil
    }

    /// The stored size of `id` when a worker wrote it and no file has recorded it yet (taken: the
    /// first file that names it counts it as new).
    func takeWritten(_ id: ChunkID) -> Int? {
        maps.lock(); defer { maps.unlock() }
        return written.removeValue(forKey: id)
    }
}
