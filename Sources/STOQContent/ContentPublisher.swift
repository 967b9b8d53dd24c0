import Crypto

/// What one put did: input volume and how much of it was already stored.
public struct PutReport: Sendable, Equatable {
    /// The content id of the root put.
    public var id: ContentID
    /// Regular files read.
    public var files: Int = 0
    /// Plaintext bytes read.
    public var bytes: Int64 = 0
    /// Data chunks in the input.
    public var chunks: Int = 0
    /// Chunks that had to be encrypted and written.
    public var newChunks: Int = 0
    /// Plaintext bytes of those new chunks.
    public var newPlainBytes: Int64 = 0
    /// Bytes written to the store (ciphertext and manifests).
    public var storedBytes: Int64 = 0
    /// Chunks found already stored (or repeated within this put).
    public var reusedChunks: Int = 0
    /// Entries skipped (symlinks, devices), with their paths.
    public var skipped: [String] = []

    /// 1 − new plaintext bytes / input bytes (0 for empty input).
    public var dedupRatio: Double { bytes == 0 ? 0 : 1 - Double(newPlainBytes) / Double(bytes) }

    mutating func add(_ o: PutReport) {
        files += o.files; bytes += o.bytes; chunks += o.chunks; newChunks += o.newChunks
        newPlainBytes += o.newPlainBytes; storedBytes += o.storedBytes; reusedChunks += o.reusedChunks; skipped += o.skipped
    }
}

/// Puts files and directories into a ``ChunkStore``: chunk, hash, convergent-encrypt, write, and
/// record manifests, committing after each file (bytes before metadata).
///
/// Re-putting content already stored costs one chunk + SHA-256 pass and an index lookup per chunk:
/// the convergent index maps SHA-256(chunk key) to the stored id, so nothing is encrypted or written again.
public final class ContentPublisher: Sendable {
    /// The store written to.
    public let store: any ChunkStore
    /// The publisher's cipher.
    public let cipher: ConvergentCipher
    /// Chunk sizes by content type.
    public let policy: ChunkingPolicy
    /// Entries per manifest before a tree is built.
    public let fanout: Int
    /// Chunking threads (0 = all cores).
    public let workers: Int
    /// Called with the running byte count after each flushed batch (progress output).
    public let progress: (@Sendable (Int64) -> Void)?

    /// Creates a publisher.
    public init(store: any ChunkStore, keys: PublisherKeys, policy: ChunkingPolicy = .standard,
                fanout: Int = FileManifest.defaultFanout, workers: Int = 0, progress: (@Sendable (Int64) -> Void)? = nil) {
        self.store = store
        self.cipher = ConvergentCipher(keys: keys)
        self.policy = policy
        self.fanout = max(2, min(fanout, FileManifest.maxEntries))
        self.workers = workers
        self.progress = progress
    }

    static let alreadyCompressed: Set<String> = ["application/gzip", "application/zstd", "application/x-xz", "application/zip",
                                                  "application/vnd.debian.binary-package"]

    /// Puts a file or directory (recursively) and pins it under `name`.
    /// - Parameters:
    ///   - path: a regular file or a directory.
    ///   - name: pin label; default the path.
    public func put(path: String, name: String? = nil) throws -> PutReport {
        let info = try Posix.info(path)
        var batch = CommitBatch()
        var report: PutReport
        if info.isDirectory {
            report = try putDirectory(path, batch: &batch, depth: 0)
        } else if info.isRegular {
            report = try putFile(FileSource(path: path), name: path, batch: &batch)
        } else {
            throw ContentError(.invalidArgument, "\(path) is neither a regular file nor a directory")
        }
        batch.pins.append((report.id, name ?? path))
        try store.commit(batch)
        return report
    }

    /// Puts bytes held in memory as one file and pins it.
    public func put(bytes: [UInt8], name: String = "bytes", contentType: String? = nil) throws -> PutReport {
        var batch = CommitBatch()
        let r = try putFile(MemorySource(bytes), name: name, contentType: contentType, batch: &batch)
        batch.pins.append((r.id, name))
        try store.commit(batch)
        return r
    }

    private func putDirectory(_ path: String, batch: inout CommitBatch, depth: Int) throws -> PutReport {
        guard depth < 256 else { throw ContentError(.tooLarge, "\(path): directories nested more than 256 deep") }
        var entries = [DirectoryManifest.Entry]()
        var total = PutReport(id: ContentID(ChunkID.of([UInt8]())))
        var size: UInt64 = 0
        for name in try Posix.listDirectory(path) {
            let child = path.hasSuffix("/") ? path + name : path + "/" + name
            let info = try Posix.info(child)
            do { try DirectoryManifest.validate(name: name) } catch { total.skipped.append(child); continue }
            let r: PutReport
            if info.isDirectory {
                r = try putDirectory(child, batch: &batch, depth: depth + 1)
                entries.append(.init(name: name, mode: info.mode, kind: .directory, id: r.id, size: UInt64(r.bytes)))
            } else if info.isRegular {
                r = try putFile(FileSource(path: child), name: child, batch: &batch)
                entries.append(.init(name: name, mode: info.mode, kind: .file, id: r.id, size: UInt64(r.bytes)))
            } else {
                total.skipped.append(child)
                continue
            }
            size += UInt64(r.bytes)
            total.add(r)
        }
        let m = try DirectoryManifest(entries: entries)
        let bytes = m.encode()
        guard bytes.count <= 16 << 20 else { throw ContentError(.tooLarge, "\(path): directory manifest over 16 MiB") }
        let id = ChunkID.of(bytes)
        if try !store.contains(id) { try store.writeChunk(id, bytes); total.storedBytes += Int64(bytes.count) }
        batch.chunks.append((id, bytes.count))
        batch.manifests.append((id, "dir", size, "inode/directory"))
        for e in entries { batch.edges.append((id, e.id.manifest)) }
        total.id = ContentID(id)
        return total
    }

    /// Chunks, encrypts and writes one file; commits its chunks and manifests (unpinned) and returns its id.
    func putFile(_ source: some ByteSource, name: String, contentType: String? = nil, batch outer: inout CommitBatch) throws -> PutReport {
        let head = try source.read(at: 0, count: 512)
        let type = contentType ?? ContentType.guess(name: name, head: head)
        let chunker = try policy.chunker(for: type)
        let compress = !Self.alreadyCompressed.contains(type) && !type.hasPrefix("image/") && !type.hasPrefix("video/") && !type.hasPrefix("audio/")
        var report = PutReport(id: ContentID(ChunkID.of([UInt8]())))
        report.files = 1
        var batch = CommitBatch()
        var entries = [FileManifest.Entry]()
        var keys = [[UInt8]]()
        var seen = Set<ChunkID>()
        var localTags = [ChunkID: ChunkID]()

        // Pending chunks (bytes copied out of the streamer's round buffer), flushed in batches so the
        // convergent-index lookups are one database read per batch.
        var pendingBytes = [UInt8]()
        var pending = [(record: ChunkRecord, start: Int)]()
        func flush() throws {
            if pending.isEmpty { return }
            let pkeys = pending.map { cipher.chunkKey(plaintextHash: $0.record.hash!) }
            let tags = pkeys.map { ChunkID.of($0) }
            let known = try store.lookupPlain(tags)
            try pendingBytes.withUnsafeBytes { raw in
                for (i, p) in pending.enumerated() {
                    let id: ChunkID
                    if let k = known[tags[i]] ?? localTags[tags[i]] {
                        id = k
                        report.reusedChunks += 1
                    } else {
                        let plain = UnsafeRawBufferPointer(rebasing: raw[p.start..<(p.start + p.record.length)])
                        let sealed = try cipher.seal(plain, plaintextHash: p.record.hash!, tryCompression: compress)
                        id = sealed.id
                        if seen.contains(id) {
                            report.reusedChunks += 1
                        } else if try store.contains(id) {
                            report.reusedChunks += 1
                        } else {
                            try store.writeChunk(id, sealed.bytes)
                            report.newChunks += 1
                            report.newPlainBytes += Int64(p.record.length)
                            report.storedBytes += Int64(sealed.bytes.count)
                        }
                        batch.plainIndex.append((tags[i], id))
                        localTags[tags[i]] = id
                        batch.chunks.append((id, sealed.bytes.count))
                    }
                    seen.insert(id)
                    entries.append(.init(id: id, offset: UInt64(p.record.offset), size: UInt64(p.record.length)))
                    keys.append(pkeys[i])
                }
            }
            pending.removeAll(keepingCapacity: true)
            pendingBytes.removeAll(keepingCapacity: true)
            progress?(report.bytes)
        }
        let streamer = ChunkStreamer(chunker: chunker, workers: workers)
        try streamer.forEachChunk(source) { record, bytes in
            pending.append((record, pendingBytes.count))
            pendingBytes.append(contentsOf: bytes)
            report.bytes += Int64(record.length)
            report.chunks += 1
            if pending.count >= 1024 || pendingBytes.count >= 32 << 20 { try flush() }
        }
        try flush()
        // Chunks already stored are re-listed so the commit holds every id the manifests reference.
        let listed = Set(batch.chunks.map(\.id))
        for e in entries where !listed.contains(e.id) { batch.chunks.append((e.id, 0)) }
        let root = try buildTree(entries: entries, keys: keys, contentType: type, total: UInt64(report.bytes), batch: &batch, report: &report)
        report.id = ContentID(root)
        // The file's chunks and manifests are committed now (unpinned); the caller pins the root.
        try store.commit(batch)
        outer.chunks.append((root, 0))
        return report
    }

    /// Builds the manifest tree over `entries` and returns the root manifest id.
    private func buildTree(entries: [FileManifest.Entry], keys: [[UInt8]], contentType: String, total: UInt64,
                           batch: inout CommitBatch, report: inout PutReport) throws -> ChunkID {
        func store(_ m: FileManifest, kind: String) throws -> ChunkID {
            let bytes = m.encode()
            let id = ChunkID.of(bytes)
            if try !self.store.contains(id) {
                try self.store.writeChunk(id, bytes)
                report.storedBytes += Int64(bytes.count)
            }
            batch.chunks.append((id, bytes.count))
            batch.manifests.append((id, kind, m.totalSize, m.contentType))
            for e in m.entries { batch.edges.append((id, e.id)) }
            return id
        }
        func rebased(_ es: ArraySlice<FileManifest.Entry>) -> (entries: [FileManifest.Entry], size: UInt64) {
            let base = es.first?.offset ?? 0
            let out = es.map { FileManifest.Entry(id: $0.id, offset: $0.offset - base, size: $0.size) }
            return (out, out.reduce(0) { $0 + $1.size })
        }
        if entries.count <= fanout {
            let sealed = try KeyTable.seal(keys, readKey: cipher.keys.readKey)
            return try store(FileManifest(kind: .leaf, contentType: contentType, totalSize: total, entries: entries, sealedKeys: sealed), kind: "file")
        }
        var level = [FileManifest.Entry]()
        var offset: UInt64 = 0
        for start in stride(from: 0, to: entries.count, by: fanout) {
            let end = min(start + fanout, entries.count)
            let (es, size) = rebased(entries[start..<end])
            let sealed = try KeyTable.seal(Array(keys[start..<end]), readKey: cipher.keys.readKey)
            let id = try store(FileManifest(kind: .leaf, contentType: "", totalSize: size, entries: es, sealedKeys: sealed), kind: "leaf")
            level.append(.init(id: id, offset: offset, size: size))
            offset += size
        }
        while level.count > fanout {
            var next = [FileManifest.Entry]()
            var off: UInt64 = 0
            for start in stride(from: 0, to: level.count, by: fanout) {
                let (es, size) = rebased(level[start..<min(start + fanout, level.count)])
                let id = try store(FileManifest(kind: .node, contentType: "", totalSize: size, entries: es), kind: "node")
                next.append(.init(id: id, offset: off, size: size))
                off += size
            }
            level = next
        }
        return try store(FileManifest(kind: .node, contentType: contentType, totalSize: total, entries: level), kind: "file")
    }
}
