import Crypto
import Dispatch
import Foundation

// The cross-file ingest pipeline of `put` for a directory.
//
// The tree is walked first (names, modes, links; no file is read). Then worker threads (one per core)
// take the regular files in walk order, a bounded window ahead of the consumer: each reads its file
// whole (files up to ``ContentPublisher/pipelineFileLimit``), chunks and hashes it, derives the chunk
// keys and convergent tags, resolves the tags against the chunks this put already sealed (in memory)
// and then the store's convergent index (one query per file), seals only what is new, builds the
// file's manifest and asks the store which of the new ids it already holds (one query). The sealed
// bytes wait in memory (``FilePipeline``) until the consuming thread, going through the tree in walk
// order, writes each one once and records the metadata in the session's batch, committed every 64 Ki
// entries (one transaction, after the packs are synced): bytes are durable before any index row,
// manifest or pin names them, as in the one-file path. Larger files stream through ``ChunkStreamer``
// on the consuming thread while the workers keep reading ahead.

extension ContentPublisher {
    /// Files at most this large are read whole and prepared by the pipeline's workers; larger ones
    /// stream through ``ChunkStreamer`` (segments on all cores) on the consuming thread.
    static let pipelineFileLimit: Int64 = 8 << 20
    /// Bytes of files the workers read ahead of the consumer (at least one file is always allowed).
    static let pipelineAheadBytes: Int64 = 64 << 20
    /// Files the workers read ahead of the consumer.
    static let pipelineAheadFiles = 4096

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

    /// Puts a directory through the pipeline: walk, prepare files on worker threads, write and
    /// record them in walk order on this thread.
    func putDirectoryPipelined(_ path: String, session: Session) throws -> PutReport {
        var files = [(path: String, size: Int64)]()
        let root = try walk(path, depth: 0, files: &files)
        let threads = workers > 0 ? workers : max(1, Posix.processorCount)
        let pipeline = FilePipeline(sizes: files.map { min($0.size, Self.pipelineFileLimit) })
        let tableKey = session.tableKey, metaKey = session.metaKey
        let paths = files.map(\.path)
        pipeline.start(workers: min(threads, max(1, files.count))) { [self] i in
            try self.prepare(path: paths[i], tableKey: tableKey, metaKey: metaKey, pipeline: pipeline)
        }
        defer { pipeline.stop() }
        // Chunks this put wrote stay known for the whole put (the workers' sealed-tag map does too),
        // so no chunk is written twice even across commits.
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
                if let bytes = pipeline.takeBytes(c.id) {
                    try store.writeChunk(c.id, bytes)
                    report.newChunks += 1
                    report.newPlainBytes += Int64(c.length)
                    report.storedBytes += Int64(bytes.count)
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
                try store.writeChunk(m.id, m.bytes)
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

    /// A worker's part for one file: read, chunk, hash, resolve, seal what is new, build the manifest.
    /// Touches no session state; shares only the pipeline's maps (under its lock) and the store's reads.
    func prepare(path: String, tableKey: SymmetricKey, metaKey: SymmetricKey?, pipeline: FilePipeline) throws -> PreparedFile.Outcome {
        let fd = try FileDescriptor.openRegularForReading(path)
        defer { fd.close() }
        let size = try fd.size()
        guard size <= Self.pipelineFileLimit else { return .large }
        let data = try fd.pread(count: Int(size), at: 0)
        let type = ContentType.guess(name: path, head: Array(data.prefix(512)))
        let chunker = try policy.chunker(for: type)
        let compress = !Self.alreadyCompressed.contains(type) && !type.hasPrefix("image/") && !type.hasPrefix("video/") && !type.hasPrefix("audio/")
        // Cut and hash, exactly as the streamer does for an input of one segment.
        var offsets = [Int](), lengths = [Int](), hashes = [ChunkID]()
        data.withUnsafeBytes { raw in
            var pos = 0
            while pos < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[pos...]))
                hashes.append(ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + n)])))
                offsets.append(pos)
                lengths.append(n)
                pos += n
            }
        }
        let keys = hashes.map { cipher.chunkKey(plaintextHash: $0) }
        let tags = keys.map { ChunkID.of($0) }
        let count = hashes.count
        var ids = [ChunkID?](repeating: nil, count: count)
        var sizes = [Int](repeating: 0, count: count)
        var known = [Bool](repeating: false, count: count)
        // Sealed earlier in this put (by any worker): no store query, no sealing.
        pipeline.resolve(tags) { i, id, n in ids[i] = id; sizes[i] = n }
        var ask = [ChunkID](), asked = Set<ChunkID>()
        for i in 0..<count where ids[i] == nil && asked.insert(tags[i]).inserted { ask.append(tags[i]) }
        if !ask.isEmpty {
            let found = try store.lookupPlain(ask)
            for i in 0..<count where ids[i] == nil {
                if let id = found[tags[i]] { ids[i] = id; known[i] = true }
            }
        }
        var sealed = [ChunkID: SealedChunk]()
        var sealedOrder = [ChunkID]()
        for i in 0..<count where ids[i] == nil {
            if let s = sealed[tags[i]] { ids[i] = s.id; sizes[i] = s.bytes.count; continue }
            let s = try data.withUnsafeBytes { raw in
                try cipher.seal(UnsafeRawBufferPointer(rebasing: raw[offsets[i]..<(offsets[i] + lengths[i])]), plaintextHash: hashes[i], tryCompression: compress)
            }
            sealed[tags[i]] = s
            sealedOrder.append(tags[i])
            ids[i] = s.id
            sizes[i] = s.bytes.count
        }
        var chunks = [PreparedFile.Chunk]()
        chunks.reserveCapacity(count)
        for i in 0..<count {
            chunks.append(.init(tag: tags[i], id: ids[i]!, offset: offsets[i], length: lengths[i], sealedSize: sizes[i], known: known[i]))
        }
        var manifest: PreparedFile.Manifest?
        if count <= fanout {
            let entries = chunks.map { FileManifest.Entry(id: $0.id, offset: UInt64($0.offset), size: UInt64($0.length)) }
            let sealedKeys = try KeyTable.seal(keys, readKey: tableKey)
            var bytes = FileManifest(kind: .leaf, contentType: type, totalSize: UInt64(data.count), entries: entries, sealedKeys: sealedKeys).encode()
            if let metaKey { bytes = try SealedMetadata.sealManifest(bytes, metaKey: metaKey) }
            manifest = .init(id: ChunkID.of(bytes), bytes: bytes, stored: false)
        }
        // One query: which of the new ids (and the manifest) the store already holds.
        var check = sealedOrder.map { sealed[$0]!.id }
        if let manifest { check.append(manifest.id) }
        let stored = check.isEmpty ? [] : try store.containing(check)
        if manifest != nil, stored.contains(manifest!.id) { manifest!.stored = true }
        pipeline.publish(sealedOrder.map { (tag: $0, chunk: sealed[$0]!) }, stored: stored)
        return .ready(PreparedFile(type: type, chunks: chunks, manifest: manifest, keys: manifest == nil ? keys : []))
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
/// `maps` (sealed tags, pending bytes).
final class FilePipeline: @unchecked Sendable {
    private let cond = NSCondition()
    private let costs: [Int64]
    private var next = 0, consumed = 0, ahead: Int64 = 0
    private var results = [Int: Result<PreparedFile.Outcome, any Error>]()
    private var stopped = false
    private var running = 0
    private let maps = NSLock()
    private var sealedTags = [ChunkID: (id: ChunkID, size: Int)]()
    private var pending = [ChunkID: [UInt8]]()

    /// - Parameter sizes: each file's cost in the read-ahead window (its size, capped).
    init(sizes: [Int64]) { costs = sizes }

    /// Starts `workers` threads calling `prepare` for each file index in order.
    func start(workers: Int, prepare: @escaping @Sendable (Int) throws -> PreparedFile.Outcome) {
        guard !costs.isEmpty else { return }
        cond.lock(); running = workers; cond.unlock()
        for _ in 0..<workers {
            // Threads of their own, not the dispatch pool: the consumer blocks on results (see ChunkStreamer).
            Thread.detachNewThread { self.run(prepare) }
        }
    }

    private func run(_ prepare: @Sendable (Int) throws -> PreparedFile.Outcome) {
        while true {
            cond.lock()
            while !stopped && next < costs.count && next > consumed
                    && (next - consumed >= ContentPublisher.pipelineAheadFiles || ahead + costs[next] > ContentPublisher.pipelineAheadBytes) {
                cond.wait()
            }
            if stopped || next >= costs.count {
                running -= 1
                cond.broadcast()
                cond.unlock()
                return
            }
            let i = next
            next += 1
            ahead += costs[i]
            cond.unlock()
            let r = Result { try prepare(i) }
            cond.lock()
            results[i] = r
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

    /// Records chunks a worker sealed; their bytes wait for the consumer unless the store holds them.
    /// A tag another worker published meanwhile keeps that worker's entry (the same id: convergent).
    func publish(_ chunks: [(tag: ChunkID, chunk: SealedChunk)], stored: Set<ChunkID>) {
        guard !chunks.isEmpty else { return }
        maps.lock(); defer { maps.unlock() }
        for (tag, s) in chunks where sealedTags[tag] == nil {
            sealedTags[tag] = (s.id, s.bytes.count)
            if !stored.contains(s.id) { pending[s.id] = s.bytes }
        }
    }

    /// The sealed bytes of `id` waiting to be written, removed from the pipeline (nil: none wait).
    func takeBytes(_ id: ChunkID) -> [UInt8]? {
        maps.lock(); defer { maps.unlock() }
        return pending.removeValue(forKey: id)
    }
}
