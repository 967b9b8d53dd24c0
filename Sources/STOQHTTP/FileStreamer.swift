import Crypto
import STOQContent

/// Produces the plaintext of one byte range of a file, chunk by chunk, as a reader pulls it.
///
/// Only the chunks the range covers are fetched, and only the sub-manifests on the way to them
/// (a file's manifest tree is walked lazily, left to right). Chunks ahead are fetched while
/// the reader consumes the current one, so a cold edge keeps its upstream busy;
/// nothing further is fetched until the reader pulls again, so a slow reader holds back the fetch
/// (at most ``readAheadBytes`` wait for it).
/// Every chunk is authenticated when it is decrypted (its key comes from the verified manifest),
/// and every manifest is checked against its id before it is decoded.
actor FileStreamer {
    private struct Frame {
        var manifest: FileManifest
        /// Absolute offset in the file of this manifest's first byte.
        var base: UInt64
        var index: Int
        /// Chunk keys of a leaf.
        var keys: [[UInt8]]
    }

    private struct Piece {
        var id: ChunkID
        var key: [UInt8]
        var size: Int
        /// Bytes of the decrypted chunk to send.
        var lower: Int
        var upper: Int
    }

    /// Bytes fetched ahead of the reader (at least ``minimumReadAhead`` chunks, at most
    /// ``maximumReadAhead``): enough in flight to keep a cold edge's upstream busy with small chunks.
    static let readAheadBytes = 2 << 20
    /// Chunks always fetched ahead.
    static let minimumReadAhead = 2
    /// Most chunks in flight for one response.
    static let maximumReadAhead = 32

    private let fetch: @Sendable (ChunkID, ObjectIdentifier) async throws -> SourcedChunk
    private let readKey: SymmetricKey
    private let tally: CacheTally
    private var stack: [Frame] = []
    private var position: UInt64
    private let last: UInt64
    private var pending: [(task: Task<[UInt8], any Error>, bytes: Int)] = []
    private var pendingBytes = 0
    private var planned = false

    /// - Parameters:
    ///   - root: the file's (verified) root manifest.
    ///   - first: first byte offset to send; `last`: last one, inclusive (`first > last`: nothing).
    ///   - manifests: decoded sub-manifests already checked (shared by the responder's requests).
    ///   - fetch: the chunk's stored bytes for this reader (throws ``HTTPProblem`` when nobody has it).
    init(root: FileManifest, first: UInt64, last: UInt64, readKey: SymmetricKey, tally: CacheTally, manifests: ManifestCache? = nil,
         fetch: @escaping @Sendable (ChunkID, ObjectIdentifier) async throws -> SourcedChunk) {
        self.manifests = manifests
        self.fetch = fetch
        self.readKey = readKey
        self.tally = tally
        self.position = first
        self.last = last
        self.rootManifest = root
    }

    private let rootManifest: FileManifest
    private let manifests: ManifestCache?

    deinit {
        for entry in pending { entry.task.cancel() }
    }

    /// Descends to the first chunk and starts fetching it, so a missing key, a key that does not
    /// open the content or an unreachable chunk becomes a status before any byte is sent.
    func prime() async throws {
        if !planned {
            planned = true
            try push(rootManifest, base: 0)
        }
        try await fill()
        if let first = pending.first {
            // Wait for it: the head leaves only once the first chunk it needs is verified.
            _ = try await first.task.value
        }
    }

    /// Opens the key table of the file's first leaf (walking down to it) without fetching any
    /// data: whether this node may read the file at all, for answers without a body (HEAD, 304).
    /// - Throws: ``HTTPProblem`` 403 when the key does not open it.
    func checkAccess() async throws {
        guard !planned else { return }
        planned = true
        try push(rootManifest, base: 0)
        _ = try await nextPiece()  // walks down to the first leaf, opening its key table; fetches no data
    }

    /// The next piece of the range, or nil at its end.
    func next() async throws -> [UInt8]? {
        if !planned { try await prime() }
        try await fill()
        guard !pending.isEmpty else { return nil }
        let entry = pending.removeFirst()
        pendingBytes -= entry.bytes
        let bytes = try await entry.task.value
        try await fill()
        return bytes
    }

    /// Starts fetches until enough are in flight (``readAheadBytes``) or the range is planned out.
    private func fill() async throws {
        while pending.count < Self.minimumReadAhead || (pendingBytes < Self.readAheadBytes && pending.count < Self.maximumReadAhead),
              let piece = try await nextPiece() {
            let fetch = self.fetch, tally = self.tally, reader = ObjectIdentifier(self)
            pendingBytes += piece.size
            pending.append((Task {
                let chunk = try await fetch(piece.id, reader)
                tally.note(fromCache: chunk.fromCache)
                let plain: [UInt8]
                do {
                    plain = try ConvergentCipher.open(chunk.bytes, key: piece.key, expectedSize: piece.size)
                } catch {
                    throw HTTPProblem(502, "chunk \(piece.id.short) did not decrypt with its manifest's key (damaged or forged); the transfer was aborted")
                }
                if piece.lower == 0 && piece.upper == plain.count { return plain }
                return Array(plain[piece.lower..<piece.upper])
            }, piece.size))
        }
    }

    private func push(_ manifest: FileManifest, base: UInt64) throws {
        var keys: [[UInt8]] = []
        if manifest.kind == .leaf, !manifest.entries.isEmpty {
            do {
                keys = try KeyTable.open(manifest.sealedKeys, count: manifest.entries.count, readKey: readKey)
            } catch {
                throw HTTPProblem(403, "this node's read key does not open this content: it is private to its publisher")
            }
        }
        // The first entry that ends after `position`.
        let entries = manifest.entries
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if base + entries[mid].offset + entries[mid].size <= position { lo = mid + 1 } else { hi = mid }
        }
        stack.append(Frame(manifest: manifest, base: base, index: lo, keys: keys))
    }

    private func nextPiece() async throws -> Piece? {
        while position <= last {
            guard let top = stack.last else { return nil }
            guard top.index < top.manifest.entries.count else {
                stack.removeLast()
                continue
            }
            let entry = top.manifest.entries[top.index]
            stack[stack.count - 1].index += 1
            let start = top.base + entry.offset
            switch top.manifest.kind {
            case .node:
                guard stack.count < ContentPlanLimits.maximumDepth else {
                    throw HTTPProblem(502, "the file's manifest tree is deeper than \(ContentPlanLimits.maximumDepth) levels (forged?)")
                }
                let sub: FileManifest
                if case .file(let known)? = manifests?.manifest(entry.id) {
                    tally.note(fromCache: true)
                    sub = known
                } else {
                    let chunk = try await fetch(entry.id, ObjectIdentifier(self))
                    tally.note(fromCache: chunk.fromCache)
                    sub = try ManifestCheck.file(chunk.bytes, id: entry.id)
                    manifests?.keep(entry.id, .file(sub), size: chunk.bytes.count)
                }
                guard sub.totalSize == entry.size else {
                    throw HTTPProblem(502, "sub-manifest \(entry.id.short) covers \(sub.totalSize) bytes, its parent says \(entry.size) (forged or damaged)")
                }
                try push(sub, base: start)
            case .leaf:
                let size = Int(entry.size)  // ≤ 16 MiB: checked when the manifest was decoded
                let lower = Int(position - start)
                let upper = Int(min(last, start + entry.size - 1) - start) + 1
                position = start + entry.size
                return Piece(id: entry.id, key: top.keys[top.index], size: size, lower: lower, upper: upper)
            }
        }
        return nil
    }
}

/// Bounds of a manifest walk.
enum ContentPlanLimits {
    /// Deepest nesting of manifests followed (files and directories together).
    static let maximumDepth = 16
}

/// Decodes manifests only after checking them against their ids.
enum ManifestCheck {
    /// The manifest named `id`, whatever its kind.
    static func any(_ bytes: [UInt8], id: ChunkID) throws -> AnyManifest {
        guard ChunkID.of(bytes) == id else {
            throw HTTPProblem(502, "manifest \(id.short) arrived damaged (its bytes do not hash to its id)")
        }
        if SealedIndex.looksLike(bytes) {
            // A sealed private content: no node can read its names, so none serves it over HTTP.
            throw HTTPProblem(403, "this content is private and sealed: only readers it was shared with can open it (stoq get TICKET)")
        }
        do { return try AnyManifest.decode(bytes) } catch {
            throw HTTPProblem(502, "manifest \(id.short) cannot be read: \(error)")
        }
    }

    /// The file manifest named `id`.
    static func file(_ bytes: [UInt8], id: ChunkID) throws -> FileManifest {
        guard case .file(let m) = try any(bytes, id: id) else {
            throw HTTPProblem(502, "manifest \(id.short) is a directory where a file's part was expected (forged?)")
        }
        return m
    }
}
