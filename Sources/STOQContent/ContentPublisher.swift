import Crypto
import Dispatch

/// One result slot per pending chunk, each written by exactly one `concurrentPerform` iteration and
/// read only after it returns.
///
/// `@unchecked Sendable`: `concurrentPerform` returning orders every write before every read, and no
/// two iterations write the same slot. (Writes to distinct elements of one `Array` from several
/// threads are not formally race-free in Swift; a buffer allocated up front would be.)
final class SealSlots: @unchecked Sendable {
    var results: [Result<SealedChunk, any Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
}

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
    /// Symbolic links stored (as links, their targets as written).
    public var links: Int = 0
    /// Entries skipped (FIFOs, sockets, devices, names or link targets STOQ cannot store), with their paths.
    public var skipped: [String] = []

    /// 1 − new plaintext bytes / input bytes (0 for empty input).
    public var dedupRatio: Double { bytes == 0 ? 0 : 1 - Double(newPlainBytes) / Double(bytes) }

    mutating func add(_ o: PutReport) {
        files += o.files; bytes += o.bytes; chunks += o.chunks; newChunks += o.newChunks
        newPlainBytes += o.newPlainBytes; storedBytes += o.storedBytes; reusedChunks += o.reusedChunks; skipped += o.skipped
        links += o.links
    }
}

/// Puts files and directories into a ``ChunkStore``: chunk, hash, convergent-encrypt, write, and
/// record manifests, committing after each file (bytes before metadata).
///
/// Re-putting content already stored costs one chunk + SHA-256 pass (on all cores), one HMAC per chunk
/// and one convergent-index query per 256 chunks: the index maps SHA-256(chunk key) to the stored id (a
/// per-publisher tag, so the store never sees plaintext hashes), and a chunk it names is neither
/// copied, compressed, encrypted nor written again. The index is joined with the chunk table, so a
/// chunk dropped by gc or `store verify --repair` is sealed and written again.
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
    /// Called with the running byte count of the current ``put(path:name:readKey:)`` (all its
    /// files so far) after each flushed batch (progress output).
    public let progress: (@Sendable (Int64) -> Void)?
    /// Segment buffers shared by the files of every put (no fresh pages per file).
    let buffers = SegmentBufferPool()

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

    /// State of one put: the pending metadata and what this put already wrote, so files of one
    /// directory deduplicate against each other before their metadata is committed.
    final class Session {
        var batch = CommitBatch()
        var localTags = [ChunkID: ChunkID]()
        var written = Set<ChunkID>()
        /// Bytes of the files of this put already chunked (progress counts on from here).
        var bytesBefore: Int64 = 0
        let store: any ChunkStore
        /// The key that seals this put's key tables: the publisher's read key, or a public
        /// content's own key (``PublicKeyring``).
        let tableKey: SymmetricKey
        /// A sealed put's metadata key (``SealedMetadata``): manifests are stored sealed with it
        /// and every chunk of the content is listed in ``sealedEntries`` for its ``SealedIndex``.
        var metaKey: SymmetricKey? = nil
        /// A sealed put's chunks (data and sealed manifests) in the order met, without repeats.
        var sealedEntries: [SealedIndex.Entry] = []
        var sealedSeen = Set<ChunkID>()
        init(store: any ChunkStore, tableKey: SymmetricKey) { self.store = store; self.tableKey = tableKey }
        /// Lists a chunk of a sealed put (no-op for other puts).
        func noteSealed(_ id: ChunkID, size: Int) {
            guard metaKey != nil, sealedSeen.insert(id).inserted else { return }
            sealedEntries.append(.init(kind: .chunk, id: id, size: UInt32(clamping: max(1, size))))
        }
        /// The bytes stored for a manifest: sealed in a sealed put, else as encoded.
        func stored(_ manifest: [UInt8]) throws -> [UInt8] {
            guard let metaKey else { return manifest }
            return try SealedMetadata.sealManifest(manifest, metaKey: metaKey)
        }
        /// Commits when the pending metadata is large (bytes are already written).
        func maybeCommit() throws { if batch.chunks.count + batch.edges.count > 65536 { try commit() } }
        /// Keep ``written`` across commits (a pipelined put, whose workers remember every tag sealed in it).
        var keepWritten = false
        func commit() throws {
            try store.commit(batch)
            batch = CommitBatch()
            localTags.removeAll()
            if !keepWritten { written.removeAll() }
        }
    }

    /// Puts a file or directory (recursively) and pins it under `name`.
    ///
    /// Inside a directory, symbolic links are stored as links (never followed), and FIFOs, sockets and
    /// devices are skipped and listed in ``PutReport/skipped``. `path` itself is followed when it is a
    /// link (the content root is what it points at), like `tar -h` for the one name given.
    /// - Parameters:
    ///   - path: a regular file or a directory.
    ///   - name: pin label; default the path.
    ///   - readKey: the key that seals every key table of this content: nil for the publisher's
    ///     read key (private content), or a public content's own 32-byte key, which opens this
    ///     content and nothing else (``PublicKeyring``). Chunks deduplicate either way; manifests
    ///     do not deduplicate across keys.
    /// - Throws: `.invalidArgument` when `path` is neither (a FIFO, socket or device is never opened).
    public func put(path: String, name: String? = nil, readKey: [UInt8]? = nil) throws -> PutReport {
        let info = try Posix.info(path, followLinks: true)
        let session = Session(store: store, tableKey: try tableKey(readKey))
        var report: PutReport
        if info.isDirectory {
            report = try putDirectoryPipelined(path, session: session)
        } else if info.isRegular {
            report = try putFile(FileSource(path: path), name: path, session: session)
        } else {
            throw ContentError(.invalidArgument, "\(path) is \(info.kindDescription), not a regular file or a directory; stoq stores only files, directories and the links inside them")
        }
        session.batch.pins.append((report.id, name ?? path))
        try session.commit()
        return report
    }

    /// Puts bytes held in memory as one file and pins it.
    /// - Parameter readKey: as for ``put(path:name:readKey:)``.
    public func put(bytes: [UInt8], name: String = "bytes", contentType: String? = nil, readKey: [UInt8]? = nil) throws -> PutReport {
        let session = Session(store: store, tableKey: try tableKey(readKey))
        let r = try putFile(MemorySource(bytes), name: name, contentType: contentType, session: session)
        session.batch.pins.append((r.id, name))
        try session.commit()
        return r
    }

    /// Puts a file or directory as a **sealed** private content and pins it under `name`: its key
    /// tables are sealed with `contentKey` (32 random bytes of its own, see ``PublicKeyring/newKey()``),
    /// its manifests are stored sealed with the metadata key derived from it, and its root is a
    /// ``SealedIndex`` listing every chunk in the clear. A store holding it (and every node serving
    /// it) learns chunk ids and sizes, no names, modes, types or tree structure; `name` is stored
    /// as the pin's label, so give one that says nothing (the default does not).
    /// - Throws: as ``put(path:name:readKey:)``; `.invalidArgument` for a key that is not 32 bytes.
    public func putSealed(path: String, contentKey: [UInt8], name: String = "sealed content") throws -> PutReport {
        let info = try Posix.info(path, followLinks: true)
        let session = Session(store: store, tableKey: try tableKey(contentKey))
        let metaKey = SealedMetadata.metaKey(contentKey: contentKey)
        session.metaKey = metaKey
        var report: PutReport
        if info.isDirectory {
            report = try putDirectoryPipelined(path, session: session)
        } else if info.isRegular {
            report = try putFile(FileSource(path: path), name: path, session: session)
        } else {
            throw ContentError(.invalidArgument, "\(path) is \(info.kindDescription), not a regular file or a directory; stoq stores only files, directories and the links inside them")
        }
        report.id = try storeSealedIndex(inner: report.id.manifest, metaKey: metaKey, session: session, report: &report)
        session.batch.pins.append((report.id, name))
        try session.commit()
        return report
    }

    /// Puts bytes as one sealed file (tests); see ``putSealed(path:contentKey:name:)``.
    public func putSealed(bytes: [UInt8], contentKey: [UInt8], name: String = "sealed content", contentType: String? = nil) throws -> PutReport {
        let session = Session(store: store, tableKey: try tableKey(contentKey))
        let metaKey = SealedMetadata.metaKey(contentKey: contentKey)
        session.metaKey = metaKey
        var report = try putFile(MemorySource(bytes), name: name, contentType: contentType, session: session)
        report.id = try storeSealedIndex(inner: report.id.manifest, metaKey: metaKey, session: session, report: &report)
        session.batch.pins.append((report.id, name))
        try session.commit()
        return report
    }

    /// Writes the sealed index (inner indexes of at most 65,536 entries when the content has more
    /// chunks) and returns the content id.
    private func storeSealedIndex(inner: ChunkID, metaKey: SymmetricKey, session: Session, report: inout PutReport) throws -> ContentID {
        func write(_ index: SealedIndex) throws -> ChunkID {
            let bytes = index.encode()
            let id = ChunkID.of(bytes)
            if !session.written.contains(id), try !store.contains(id) {
                try store.writeChunk(id, bytes)
                session.written.insert(id)
                report.storedBytes += Int64(bytes.count)
            }
            session.batch.chunks.append((id, bytes.count))
            session.batch.manifests.append((id, "sealed", 0, ""))
            for e in index.entries { session.batch.edges.append((id, e.id)) }
            return id
        }
        var level = session.sealedEntries
        let limit = FileManifest.maxEntries
        while level.count > limit {
            var next = [SealedIndex.Entry]()
            for start in stride(from: 0, to: level.count, by: limit) {
                let piece = SealedIndex(entries: Array(level[start..<min(start + limit, level.count)]), sealedRoot: [])
                let size = piece.encode().count
                next.append(.init(kind: .index, id: try write(piece), size: UInt32(size)))
            }
            level = next
        }
        return ContentID(try write(SealedIndex(entries: level, sealedRoot: try SealedMetadata.sealRoot(inner, metaKey: metaKey))))
    }

    private func tableKey(_ readKey: [UInt8]?) throws -> SymmetricKey {
        guard let readKey else { return cipher.keys.readKey }
        guard readKey.count == 32 else { throw ContentError(.invalidArgument, "a content read key is 32 bytes, got \(readKey.count)") }
        return SymmetricKey(data: readKey)
    }

    /// Stores a directory's manifest (once per session and store), records it, its size and its
    /// edges to the entries' manifests in the session's batch, and returns its content id. Used by
    /// `put` and by uploads, so an uploaded directory gets the same id as one put locally.
    func storeDirectoryManifest(
        _ entries: [DirectoryManifest.Entry], size: UInt64, named prefix: String, session: Session, report total: inout PutReport
    ) throws -> ContentID {
        let bytes = try session.stored(DirectoryManifest(entries: entries).encode())
        guard bytes.count <= 16 << 20 else { throw ContentError(.tooLarge, "\(prefix)a directory manifest over 16 MiB") }
        let id = ChunkID.of(bytes)
        if !session.written.contains(id), try !store.contains(id) {
            try store.writeChunk(id, bytes)
            session.written.insert(id)
            total.storedBytes += Int64(bytes.count)
        }
        session.batch.chunks.append((id, bytes.count))
        if session.metaKey != nil {
            // Sealed: the store learns a chunk, not a directory (its root index names every chunk).
            session.noteSealed(id, size: bytes.count)
        } else {
            session.batch.manifests.append((id, "dir", size, "inode/directory"))
            for e in entries where !e.isLink { session.batch.edges.append((id, e.id.manifest)) }
        }
        try session.maybeCommit()
        return ContentID(id)
    }

    /// Chunks, encrypts and writes one file; adds its chunks and manifests to the session and returns its id.
    func putFile(_ source: some ByteSource, name: String, contentType: String? = nil, session: Session) throws -> PutReport {
        let head = try source.read(at: 0, count: 512)
        let type = contentType ?? ContentType.guess(name: name, head: head)
        let chunker = try policy.chunker(for: type)
        let compress = !Self.alreadyCompressed.contains(type) && !type.hasPrefix("image/") && !type.hasPrefix("video/") && !type.hasPrefix("audio/")
        var report = PutReport(id: ContentID(ChunkID.of([UInt8]())))
        report.files = 1
        var entries = [FileManifest.Entry]()
        var keys = [[UInt8]]()

        // One batch per streamer segment (~1000 chunks): the convergent-index lookups are one database
        // read per batch, and only chunks not stored yet are sealed, straight from the segment buffer.
        let streamer = ChunkStreamer(chunker: chunker, workers: workers, buffers: buffers)
        try streamer.forEachBatch(source) { batch in
            let records = batch.records
            let pkeys = records.map { cipher.chunkKey(plaintextHash: $0.hash!) }
            let tags = pkeys.map { ChunkID.of($0) }
            let known = try store.lookupPlain(tags)
            var toSeal = [Int]()
            var sealing = Set<ChunkID>()
            for i in records.indices where session.localTags[tags[i]] == nil && known[tags[i]] == nil {
                if sealing.insert(tags[i]).inserted { toSeal.append(i) }
            }
            // Seal (zstd + ChaCha20-Poly1305 + SHA-256) the new chunks on all cores.
            let slots = SealSlots(count: records.count)
            if !toSeal.isEmpty {
                let cipher = self.cipher, indices = toSeal
                DispatchQueue.concurrentPerform(iterations: indices.count) { k in
                    let i = indices[k]
                    slots.results[i] = batch.withBytes(of: i) { raw in
                        Result { try cipher.seal(raw, plaintextHash: records[i].hash!, tryCompression: compress) }
                    }
                }
            }
            // One query for the batch: which of the newly sealed ids the store already holds.
            let inStore = try store.containing(toSeal.compactMap { slots.results[$0].flatMap { try? $0.get().id } })
            for (i, r) in records.enumerated() {
                report.bytes += Int64(r.length)
                report.chunks += 1
                let id: ChunkID
                if let k = session.localTags[tags[i]] ?? known[tags[i]] {
                    id = k
                    report.reusedChunks += 1
                } else {
                    let sealed = try slots.results[i]!.get()
                    id = sealed.id
                    if session.written.contains(id) || inStore.contains(id) {
                        report.reusedChunks += 1
                    } else {
                        try store.writeChunk(id, sealed.bytes)
                        session.written.insert(id)
                        report.newChunks += 1
                        report.newPlainBytes += Int64(r.length)
                        report.storedBytes += Int64(sealed.bytes.count)
                    }
                    session.batch.plainIndex.append((tags[i], id))
                    session.localTags[tags[i]] = id
                    session.batch.chunks.append((id, sealed.bytes.count))
                }
                entries.append(.init(id: id, offset: UInt64(r.offset), size: UInt64(r.length)))
                session.noteSealed(id, size: r.length)
                keys.append(pkeys[i])
            }
            progress?(session.bytesBefore + report.bytes)
        }
        session.bytesBefore += report.bytes
        let root = try buildTree(entries: entries, keys: keys, contentType: type, total: UInt64(report.bytes), session: session, report: &report)
        report.id = ContentID(root)
        try session.maybeCommit()
        return report
    }

    /// Builds the manifest tree over `entries` and returns the root manifest id.
    func buildTree(entries: [FileManifest.Entry], keys: [[UInt8]], contentType: String, total: UInt64,
                           session: Session, report: inout PutReport) throws -> ChunkID {
        func store(_ m: FileManifest, kind: String) throws -> ChunkID {
            let bytes = try session.stored(m.encode())
            let id = ChunkID.of(bytes)
            if !session.written.contains(id), try !self.store.contains(id) {
                try self.store.writeChunk(id, bytes)
                session.written.insert(id)
                report.storedBytes += Int64(bytes.count)
            }
            session.batch.chunks.append((id, bytes.count))
            if session.metaKey != nil {
                session.noteSealed(id, size: bytes.count)
            } else {
                session.batch.manifests.append((id, kind, m.totalSize, m.contentType))
                for e in m.entries { session.batch.edges.append((id, e.id)) }
            }
            return id
        }
        func rebased(_ es: ArraySlice<FileManifest.Entry>) -> (entries: [FileManifest.Entry], size: UInt64) {
            let base = es.first?.offset ?? 0
            let out = es.map { FileManifest.Entry(id: $0.id, offset: $0.offset - base, size: $0.size) }
            return (out, out.reduce(0) { $0 + $1.size })
        }
        if entries.count <= fanout {
            let sealed = try KeyTable.seal(keys, readKey: session.tableKey)
            return try store(FileManifest(kind: .leaf, contentType: contentType, totalSize: total, entries: entries, sealedKeys: sealed), kind: "file")
        }
        var level = [FileManifest.Entry]()
        var offset: UInt64 = 0
        for start in stride(from: 0, to: entries.count, by: fanout) {
            let end = min(start + fanout, entries.count)
            let (es, size) = rebased(entries[start..<end])
            let sealed = try KeyTable.seal(Array(keys[start..<end]), readKey: session.tableKey)
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
