import Foundation
import GRDB

/// A ``ChunkStore`` on disk.
///
/// Layout under the store directory:
/// - `packs/NNNNNNNN.pack`: chunk bytes as records in append-only pack files (``StoreFormat/packs``, the
///   default for a new store; see `DiskChunkStore+Packs.swift` and `PackSet`). A store made before packs
///   were the default keeps its chunk files (``StoreFormat/files``, next item) until `store migrate`.
/// - `chunks/ab/cd/<64 hex>` (``StoreFormat/files``): chunk bytes, content-addressed; written to `tmp/.tmp-*` (one directory,
///   so opening the store finds a crash's leftovers without walking `chunks/`),
///   directory, renamed into place; before any metadata names them the file system is flushed
///   (`syncfs`), then the directory entries are durable too.
/// - `meta.sqlite`: the index, SQLite through GRDB in WAL mode, `synchronous = FULL`: tables `chunks`
///   (id, size, created, last access), `edges` (manifest → child; a child's reference count is its number
///   of edges), `manifests` (kind, size, content type), `plain_index` (convergent tag → id), `pins`.
/// - `lock`: an advisory lock held by the process that opened the store, so one writer runs at a time and
///   the open-time cleanup of temp files cannot race a writer.
/// - `quarantine/<UTC time>/`: what a repair or an index rebuild took out of the store, at the same
///   relative paths (so moving a file back restores it), with a `README.txt`. Nothing is deleted.
///
/// Crash safety: bytes are written before the metadata that references them, and metadata is removed
/// before the bytes (gc), so `kill -9` at any moment leaves at worst orphan or temp files, which
/// ``verify(repair:)`` (and opening) clean up; committed content is never lost.
///
/// The chunk files are the truth and the index can be rebuilt from them: opening a store whose index is
/// missing, empty while chunk files exist, or damaged (SQLite cannot read it, or its check fails)
/// rebuilds it before anything else runs (see ``rebuilt`` and `DiskChunkStore+Recovery.swift`).
///
/// `@unchecked Sendable`: the database pool is thread-safe; `madeDirs`, `unsynced`, the
/// `failWritesAfterBytes` test hook and the replacement of the pool (`_db`, only when `store verify` rebuilds a damaged index) are guarded by `lock`.
public final class DiskChunkStore: ChunkStore, @unchecked Sendable {
    /// The store directory.
    public let directory: String
    /// The index; replaced only when `store verify` finds it damaged and rebuilds it.
    private var _db: DatabasePool
    var db: DatabasePool { lock.lock(); defer { lock.unlock() }; return _db }
    private let lockFile: FileDescriptor
    private let lock = NSLock()
    private var madeDirs = Set<String>()
    private var unsynced = false
    /// What opening had to rebuild, when the index was missing, empty or damaged (nil when it was fine).
    public private(set) var rebuilt: IndexRebuildReport?
    /// Test hook: fail chunk writes after this many more bytes, as if the disk were full (nil = never).
    public var failWritesAfterBytes: Int? {
        get { lock.lock(); defer { lock.unlock() }; return _failAfter }
        set { lock.lock(); _failAfter = newValue; lock.unlock() }
    }
    private var _failAfter: Int?
    /// The pack files, when the store keeps chunks in packs (``StoreFormat/packs``); nil for chunk files.
    let packSet: PackSet?
    /// How new chunks are kept: in pack files, or one file per chunk. A store in packs format still reads
    /// the chunk files an older layout left (their index rows have no pack).
    public var format: StoreFormat { packSet == nil ? .files : .packs }
    /// Bytes of records opening cut from the packs' tails: torn or whole, never committed (a crash or a
    /// failed put left them; nothing the index names).
    public private(set) var droppedTornBytes: Int64 = 0

    /// The default ``verifyInterval``: 7 days.
    public static let defaultVerifyInterval: Int64 = 7 * 86_400
    /// How long a pack record's last hash check stands, in seconds. A read of a record hashed (when
    /// written, or by an earlier read) less than this long ago returns its bytes without hashing them
    /// again; its record header (magic, length, id) is still checked. A read past the interval hashes
    /// the bytes and, when they are whole, records the time in the index (`chunks.verified`). 0 (the
    /// default of a store opened by a library user or a store command) hashes on every read; a node
    /// uses ``defaultVerifyInterval`` unless its config key `storeVerifySeconds` says otherwise. Chunk files (the older layout) are hashed on every read. Receivers check every
    /// chunk against its id anyway: the interval bounds how long silent damage on this disk can go
    /// unnoticed by this node, and `stoq store verify` hashes everything.
    public var verifyInterval: Int64 {
        get { lock.lock(); defer { lock.unlock() }; return _verifyInterval }
        set { lock.lock(); _verifyInterval = max(0, newValue); lock.unlock() }
    }
    private var _verifyInterval: Int64 = 0
    /// The clock for ``verifyInterval`` and the index's times, Unix seconds (tests inject one).
    public var clock: @Sendable () -> Int64 {
        get { lock.lock(); defer { lock.unlock() }; return _clock }
        set { lock.lock(); _clock = newValue; lock.unlock() }
    }
    private var _clock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    /// Reads since opening: hashed, and trusted within ``verifyInterval`` (header checked only).
    public var readCounts: (hashed: Int, trusted: Int) {
        lock.lock(); defer { lock.unlock() }; return (hashedReads, trustedReads)
    }
    private var hashedReads = 0, trustedReads = 0
    /// Verification times not yet written to the index (written in batches, and with the next commit:
    /// losing them in a crash only means a chunk is hashed once more).
    private var verifiedPending: [ChunkID: Int64] = [:]
    static let verifiedBatch = 256

    /// Opens (creating if needed) the store at `directory`; removes temp files left by a crash, cuts
    /// the never-committed records (torn or whole) from the packs' tails, and rebuilds the index from the chunk files and packs when it
    /// is missing, empty or damaged.
    /// - Parameters:
    ///   - format: how new chunks are kept. nil keeps the store's own format (``existingFormat(_:)``):
    ///     packs when it has a `packs/` folder, chunk files when it has an index or chunk files but no
    ///     `packs/` (a store made before packs were the default), and packs for a new store. `.packs` on a
    ///     store of chunk files switches it: its files stay and are read as before, new chunks go to packs
    ///     (`migrateToPacks()` moves them). `.files` on a store that has packs is refused (its packs would
    ///     not be read); `.files` on a new store makes the older layout.
    ///   - packTarget: the size at which a pack is closed and the next started.
    /// - Throws: ``ContentError`` `.io` / `.database` / `.diskFull` / `.invalidArgument`.
    public init(directory: String, format: StoreFormat? = nil, packTarget: Int64 = 128 << 20) throws {
        self.directory = directory
        let own = try Self.existingFormat(directory)
        if format == .files && own == .packs {
            throw ContentError(.invalidArgument, "the store \(directory) keeps its chunks in pack files (\(directory)/packs); it cannot be opened as --store-format files: drop the option")
        }
        // A new store is in packs unless asked; an existing one keeps its layout unless asked for packs.
        let chosen = format ?? own ?? .packs
        if chosen == .files { try Posix.makeDirectories(directory + "/chunks") }
        try Posix.makeDirectories(directory + "/tmp")
        packSet = chosen == .packs ? try PackSet(directory: directory + "/packs", target: packTarget) : nil
        lockFile = try Posix.lockExclusive(directory + "/lock")
        let opened: OpenedIndex
        do {
            opened = try Self.openIndex(directory: directory)
        } catch {
            lockFile.close()
            throw Self.map(error)
        }
        _db = opened.pool
        _ = try? removeTempFiles()
        if let problem = opened.problem {
            rebuilt = try rebuildIndex(because: problem, quarantine: opened.quarantine)
        } else if packSet != nil {
            droppedTornBytes = try wrap { try recoverPackTails() }
        }
    }
    deinit {
        try? flushVerified()
        lockFile.close()
    }

    /// Closes the index, runs `body` (which moves its files aside) and opens a new, empty one.
    private func replaceIndex(_ body: () throws -> Void) throws {
        lock.lock(); defer { lock.unlock() }
        try? _db.close()
        try body()
        _db = try wrap { try Self.openPool(directory + "/meta.sqlite") }
    }

    static func map(_ error: any Error) -> ContentError {
        if let e = error as? ContentError { return e }
        if let e = error as? DatabaseError {
            if e.resultCode == .SQLITE_FULL {
                return ContentError(.diskFull, "the metadata database could not grow: the disk is full; free space and retry (nothing was committed)")
            }
            return ContentError(.database, "metadata database: \(e.message ?? "\(e)")")
        }
        return ContentError(.io, "\(error)")
    }

    func wrap<T>(_ f: () throws -> T) throws -> T {
        do { return try f() } catch { throw Self.map(error) }
    }

    /// The layout a store directory already has, detected without opening it: `.packs` when it has a
    /// `packs/` folder; `.files` when it has an index (`meta.sqlite`) or any chunk file but no `packs/`
    /// (every store made before packs became the default); nil for a new (or empty) directory.
    public static func existingFormat(_ directory: String) throws -> StoreFormat? {
        if Posix.isDirectory(directory + "/packs") { return .packs }
        if Posix.exists(directory + "/meta.sqlite") { return .files }
        return try hasChunkFiles(directory) ? .files : nil
    }

    /// The path of a chunk's file.
    public func path(of id: ChunkID) -> String {
        let h = id.hex
        let a = h.prefix(2), b = h.dropFirst(2).prefix(2)
        return "\(directory)/chunks/\(a)/\(b)/\(h)"
    }

    private func ensureDirectory(for id: ChunkID) throws {
        let h = id.hex
        let a = "\(directory)/chunks/\(h.prefix(2))"
        let b = "\(a)/\(h.dropFirst(2).prefix(2))"
        lock.lock(); let known = madeDirs.contains(b); lock.unlock()
        if known { return }
        try Posix.makeDirectory(a)
        try Posix.makeDirectory(b)
        lock.lock(); madeDirs.insert(b); lock.unlock()
    }

    static func blob(_ id: ChunkID) -> Data { Data(id.bytes) }
    static func id(_ d: Data) -> ChunkID? { ChunkID(bytes: d) }

    public func contains(_ id: ChunkID) throws -> Bool {
        try wrap { try db.read { db in try Int.fetchOne(db, sql: "SELECT 1 FROM chunks WHERE id = ?", arguments: [Self.blob(id)]) != nil } }
    }

    public func read(_ id: ChunkID) throws -> [UInt8] {
        let bytes: [UInt8]
        let (place, indexed) = try locate(id)
        do { bytes = try read(place, checking: id) } catch let e as ContentError where e.code == .notFound {
            throw ContentError(.notFound, "chunk \(id.short) is not in the store at \(directory)")
        }
        guard case .record = place else { return try hashed(bytes, id, place) }
        lock.lock()
        let now = _clock(), interval = _verifyInterval
        let verified = verifiedPending[id] ?? indexed
        // A time in the future (a clock set back) does not count.
        if interval > 0, let v = verified, v <= now, now - v < interval {
            trustedReads += 1
            lock.unlock()
            return bytes
        }
        lock.unlock()
        let out = try hashed(bytes, id, place)
        // With no interval nothing is trusted, so nothing is recorded (no index writes while reading).
        guard interval > 0 else { return out }
        lock.lock()
        verifiedPending[id] = now
        let flush = verifiedPending.count >= Self.verifiedBatch
        lock.unlock()
        if flush { try? flushVerified() }
        return out
    }

    /// `bytes` when they hash to `id`; else the damage, said for a person.
    private func hashed(_ bytes: [UInt8], _ id: ChunkID, _ place: ChunkPlace) throws -> [UInt8] {
        lock.lock(); hashedReads += 1; lock.unlock()
        let actual = ChunkID.of(bytes)
        guard actual == id else {
            throw ContentError(.idMismatch, "chunk \(id.short) is damaged on disk (\(describe(place)) hashes to \(actual.short)); run `stoq store verify --repair` and put the content again")
        }
        return bytes
    }

    /// The verification times held in memory, taken for writing.
    private func takeVerified() -> [ChunkID: Int64] {
        lock.lock(); defer { lock.unlock() }
        let v = verifiedPending
        verifiedPending.removeAll(keepingCapacity: true)
        return v
    }

    /// Writes the verification times held in memory to the index (one transaction).
    public func flushVerified() throws {
        let v = takeVerified()
        guard !v.isEmpty else { return }
        try wrap {
            try db.write { db in
                let st = try db.cachedStatement(sql: "UPDATE chunks SET verified = ? WHERE id = ?")
                for (id, t) in v { try st.execute(arguments: [t, Self.blob(id)]) }
            }
        }
    }

    public func writeChunk(_ id: ChunkID, _ bytes: [UInt8]) throws {
        if packSet == nil { try ensureDirectory(for: id) }
        lock.lock()
        var injected = false
        if let left = _failAfter {
            if bytes.count > left { injected = true; _failAfter = 0 } else { _failAfter = left - bytes.count }
        }
        unsynced = true
        lock.unlock()
        if injected {
            throw ContentError(.diskFull, "write \(path(of: id)): No space left on device (injected); the disk holding the store is full — free space or point --store elsewhere (the store is left consistent)")
        }
        if let packSet {
            try packSet.append(id, bytes)
            return
        }
        try bytes.withUnsafeBytes { try Posix.writeFileAtomically(path(of: id), $0, mode: 0o444, durable: false, tempDirectory: directory + "/tmp") }
        // Again after the write: a commit on another thread that cleared the flag while this file was
        // being written must not leave the next commit thinking nothing needs syncing.
        lock.lock(); unsynced = true; lock.unlock()
    }

    public func commit(_ batch: CommitBatch) throws {
        lock.lock(); let needSync = unsynced; unsynced = false; lock.unlock()
        var lengths = [(pack: Int, length: Int64)]()
        // Packs: every record appended so far is made durable (a no-op when none was).
        if let packSet { lengths = try packSet.sync() } else if needSync { try Posix.syncFileSystem(directory + "/chunks") }
        let now = clock()
        let verified = takeVerified()
        try wrap {
            try db.write { db in
                // A record's bytes were hashed when written (its id is their hash, computed by the writer).
                let ins = try db.cachedStatement(sql: "INSERT OR IGNORE INTO chunks (id, size, created, last_access, pack, pack_offset, verified) VALUES (?, ?, ?, ?, ?, ?, ?)")
                for c in batch.chunks {
                    if case .record(let n, let offset, _)? = packSet?.pendingPlace(c.id) {
                        try ins.execute(arguments: [Self.blob(c.id), c.size, now, now, n, offset, now])
                    } else {
                        try ins.execute(arguments: [Self.blob(c.id), c.size, now, now, nil, nil, nil])
                    }
                }
                let ver = try db.cachedStatement(sql: "UPDATE chunks SET verified = ? WHERE id = ?")
                for (id, t) in verified { try ver.execute(arguments: [t, Self.blob(id)]) }
                let len = try db.cachedStatement(sql: Self.recordPackLength)
                for l in lengths { try len.execute(arguments: [l.pack, l.length]) }
                let edge = try db.cachedStatement(sql: "INSERT OR IGNORE INTO edges (parent, child) VALUES (?, ?)")
                for e in batch.edges { try edge.execute(arguments: [Self.blob(e.parent), Self.blob(e.child)]) }
                let man = try db.cachedStatement(sql: "INSERT OR REPLACE INTO manifests (id, kind, size, content_type) VALUES (?, ?, ?, ?)")
                for m in batch.manifests { try man.execute(arguments: [Self.blob(m.id), m.kind, Int64(m.size), m.contentType]) }
                let pi = try db.cachedStatement(sql: "INSERT OR REPLACE INTO plain_index (tag, id) VALUES (?, ?)")
                for p in batch.plainIndex { try pi.execute(arguments: [Self.blob(p.tag), Self.blob(p.id)]) }
                let pin = try db.cachedStatement(sql: "INSERT OR REPLACE INTO pins (id, name, created) VALUES (?, ?, ?)")
                for p in batch.pins { try pin.execute(arguments: [Self.blob(p.id.manifest), p.name, now]) }
            }
        }
        packSet?.committed(batch.chunks.map(\.id))
    }

    public func lookupPlain(_ tags: [ChunkID]) throws -> [ChunkID: ChunkID] {
        var out = [ChunkID: ChunkID]()
        try Self.inGroups(tags, db: db, sql: Self.lookupPlainSQL) { row in
            if let t = Self.id(row[0]), let id = Self.id(row[1]) { out[t] = id }
        }
        return out
    }

    public func containing(_ ids: [ChunkID]) throws -> Set<ChunkID> {
        var out = Set<ChunkID>()
        try Self.inGroups(ids, db: db, sql: Self.containingSQL) { row in
            if let id = Self.id(row[0]) { out.insert(id) }
        }
        return out
    }

    /// Statement sizes for the many-id queries: the smallest that holds what is left is used, a short
    /// group padded with repeats of its last id (so there are three statement texts, made once).
    static let idGroups = [1, 16, 256]
    static func placeholders(_ n: Int) -> String { Array(repeating: "?", count: n).joined(separator: ",") }
    static let lookupPlainSQL = idGroups.map { "SELECT p.tag, p.id FROM plain_index p JOIN chunks c ON c.id = p.id WHERE p.tag IN (\(placeholders($0)))" }
    static let containingSQL = idGroups.map { "SELECT id FROM chunks WHERE id IN (\(placeholders($0)))" }

    /// Runs `sql[k]` (with ``idGroups``[k] placeholders) over `ids` in groups and hands each row to `row`.
    /// Each SELECT is atomic by itself, so no read transaction is opened around them (the store's lock
    /// keeps other writers out; this process's own commits only add rows).
    static func inGroups(_ ids: [ChunkID], db pool: DatabasePool, sql: [String], _ row: (Row) throws -> Void) throws {
        guard !ids.isEmpty else { return }
        try wrapStatic {
            try pool.unsafeRead { db in
                var start = 0
                while start < ids.count {
                    let left = ids.count - start
                    let k = idGroups.firstIndex { $0 >= left } ?? (idGroups.count - 1)
                    let group = idGroups[k]
                    let part = ids[start..<min(start + group, ids.count)]
                    start += group
                    var args = part.map { Self.blob($0) as (any DatabaseValueConvertible)? }
                    while args.count < group { args.append(args.last!) }
                    let rows = try Row.fetchCursor(db.cachedStatement(sql: sql[k]), arguments: StatementArguments(args))
                    while let r = try rows.next() { try row(r) }
                }
            }
        }
    }

    static func wrapStatic<T>(_ f: () throws -> T) throws -> T {
        do { return try f() } catch { throw map(error) }
    }

    public func pin(_ id: ContentID, name: String) throws {
        guard try contains(id.manifest) else { throw ContentError(.notFound, "\(id) is not in the store at \(directory)") }
        var b = CommitBatch()
        b.pins = [(id, name)]
        try commit(b)
    }

    public func unpin(_ id: ContentID) throws {
        let n = try wrap { try db.write { db in try db.execute(sql: "DELETE FROM pins WHERE id = ?", arguments: [Self.blob(id.manifest)]); return db.changesCount } }
        guard n > 0 else { throw ContentError(.notFound, "\(id) is not pinned") }
    }

    public func pins() throws -> [Pin] {
        try wrap {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT p.id, p.name, m.kind, m.size FROM pins p LEFT JOIN manifests m ON m.id = p.id ORDER BY p.name").compactMap { row in
                    guard let id = Self.id(row[0]) else { return nil }
                    return Pin(id: ContentID(id), name: row[1], kind: row[2] ?? "?", size: UInt64(row[3] as Int64? ?? 0))
                }
            }
        }
    }

    public func referenceCount(_ id: ChunkID) throws -> Int {
        try wrap { try db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM edges WHERE child = ?", arguments: [Self.blob(id)]) ?? 0 } }
    }

    public func touch(_ ids: [ChunkID], now: Int64) throws {
        try wrap {
            try db.write { db in
                let st = try db.cachedStatement(sql: "UPDATE chunks SET last_access = ? WHERE id = ?")
                for i in ids { try st.execute(arguments: [now, Self.blob(i)]) }
            }
        }
    }

    static let liveCTE = """
        WITH RECURSIVE live(id) AS (SELECT id FROM pins UNION SELECT e.child FROM edges e JOIN live l ON e.parent = l.id)
        """

    public func gc() throws -> GCReport {
        // Metadata first (one transaction), files after: a crash in between leaves orphan files only.
        let dead: [(ChunkID, Int64, Bool)] = try wrap {
            try db.write { db in
                try db.execute(sql: "CREATE TEMP TABLE IF NOT EXISTS dead_chunks (id BLOB PRIMARY KEY, size INTEGER, pack INTEGER, pack_offset INTEGER) WITHOUT ROWID; DELETE FROM dead_chunks;")
                try db.execute(sql: Self.liveCTE + " INSERT INTO dead_chunks SELECT id, size, pack, pack_offset FROM chunks WHERE id NOT IN (SELECT id FROM live)")
                // Pack records become dead space, recorded so verify does not take them for a crash's orphans.
                try db.execute(sql: "INSERT OR IGNORE INTO dead_records (pack, pack_offset, size) SELECT pack, pack_offset, size FROM dead_chunks WHERE pack IS NOT NULL")
                let rows = try Row.fetchAll(db, sql: "SELECT id, size, pack FROM dead_chunks").compactMap { r -> (ChunkID, Int64, Bool)? in
                    guard let id = Self.id(r[0]) else { return nil }
                    return (id, r[1], (r[2] as Int64?) != nil)
                }
                try db.execute(sql: """
                    DELETE FROM chunks WHERE id IN (SELECT id FROM dead_chunks);
                    DELETE FROM edges WHERE parent IN (SELECT id FROM dead_chunks);
                    DELETE FROM manifests WHERE id IN (SELECT id FROM dead_chunks);
                    DELETE FROM plain_index WHERE id IN (SELECT id FROM dead_chunks);
                    DELETE FROM dead_chunks;
                    """)
                return rows
            }
        }
        // Chunk files go now; pack records are dead space that compaction reclaims.
        for (id, _, inPack) in dead where !inPack { try Posix.remove(path(of: id)) }
        var report = GCReport(removedChunks: dead.count, freedBytes: dead.reduce(0) { $0 + $1.1 })
        if packSet != nil {
            let c = try wrap { try compactPacks() }
            report.packsCompacted = c.packs
            report.packBytesReclaimed = c.reclaimed
        }
        return report
    }

    @discardableResult
    public func evict(_ ids: [ChunkID]) throws -> Int64 {
        guard !ids.isEmpty else { return 0 }
        // Metadata first (one transaction), files after: a crash in between leaves orphan files only.
        let removed: [(ChunkID, Int64, Bool)] = try wrap {
            try db.write { db in
                var out = [(ChunkID, Int64, Bool)]()
                for id in ids {
                    let blob = Self.blob(id)
                    let referenced = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM edges WHERE child = ?) OR EXISTS (SELECT 1 FROM pins WHERE id = ?)", arguments: [blob, blob]) ?? true
                    guard !referenced, let row = try Row.fetchOne(db, sql: "SELECT size, pack, pack_offset FROM chunks WHERE id = ?", arguments: [blob]) else { continue }
                    if let n = row[1] as Int64?, let offset = row[2] as Int64? {
                        try db.execute(sql: "INSERT OR IGNORE INTO dead_records (pack, pack_offset, size) VALUES (?, ?, ?)", arguments: [n, offset, row[0] as Int64])
                    }
                    try db.execute(sql: "DELETE FROM chunks WHERE id = ?; DELETE FROM edges WHERE parent = ?; DELETE FROM manifests WHERE id = ?; DELETE FROM plain_index WHERE id = ?",
                                   arguments: [blob, blob, blob, blob])
                    out.append((id, row[0], (row[1] as Int64?) != nil))
                }
                return out
            }
        }
        // A pack record becomes dead space (the next gc's compaction reclaims it).
        for (id, _, inPack) in removed where !inPack { try Posix.remove(path(of: id)) }
        return removed.reduce(0) { $0 + $1.1 }
    }

    /// Walks `chunks/`: content files by id, and temp file paths.
    func scanFiles() throws -> (files: [ChunkID: ChunkPlace], temps: [String], strays: [String]) {
        var files = [ChunkID: ChunkPlace](), temps = [String](), strays = [String]()
        let root = directory + "/chunks"
        // A store made in packs format has no chunks/ folder.
        for a in Posix.isDirectory(root) ? try Posix.listDirectory(root) : [] {
            let pa = root + "/" + a
            guard Posix.isDirectory(pa) else { (a.hasPrefix(".tmp-") ? { temps.append(pa) } : { strays.append(pa) })(); continue }
            for b in try Posix.listDirectory(pa) {
                let pb = pa + "/" + b
                guard Posix.isDirectory(pb) else { (b.hasPrefix(".tmp-") ? { temps.append(pb) } : { strays.append(pb) })(); continue }
                for name in try Posix.listDirectory(pb) {
                    let p = pb + "/" + name
                    if name.hasPrefix(".tmp-") { temps.append(p) } else if let id = ChunkID(hex: name), path(of: id) == p { files[id] = .file(p) } else { strays.append(p) }
                }
            }
        }
        // Temp files of chunk writes (older stores also left them beside the chunks, found above).
        let tmp = directory + "/tmp"
        if Posix.isDirectory(tmp) { temps += try Posix.listDirectory(tmp).map { tmp + "/" + $0 } }
        return (files, temps, strays)
    }

    /// Removes what interrupted chunk writes left in `tmp/` (opening holds the store's lock, so no
    /// writer is running).
    private func removeTempFiles() throws -> Int {
        let tmp = directory + "/tmp"
        let temps = try Posix.listDirectory(tmp)
        for t in temps { try Posix.remove(tmp + "/" + t) }
        return temps.count
    }

    public func verify(repair: Bool) throws -> VerifyReport {
        var r = VerifyReport()
        // A damaged index is rebuilt first (the old one is kept in the quarantine), so nothing below
        // trusts an index SQLite itself finds broken.
        if let problem = try integrityProblem() {
            var q = Quarantine(store: directory)
            try replaceIndex { try q.moveIndex() }
            r.indexRebuilt = try rebuildIndex(because: .damaged(problem), quarantine: q)
        }
        let recordedPlaces: [(ChunkID, ChunkPlace)] = try wrap {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT id, pack, pack_offset, size FROM chunks").compactMap { row in
                    guard let id = Self.id(row[0]) else { return nil }
                    if let n = row[1] as Int64?, let offset = row[2] as Int64? { return (id, .record(pack: Int(n), offset: offset, size: row[3])) }
                    return (id, .file(path(of: id)))
                }
            }
        }
        let recorded = recordedPlaces.map(\.0)
        var pq = Quarantine(store: directory)
        var scan = try scanFiles()
        let packScan = try scanPacks(quarantine: &pq, dead: try deadRecords())
        // Pack records, and where each damaged one is (the quarantine takes a copy of those).
        var places = [ChunkID: ChunkPlace]()
        for (id, p) in packScan.valid where scan.files[id] == nil { scan.files[id] = p }
        var damagedRecords = [ChunkID: ChunkPlace]()
        for (id, p) in packScan.damaged { damagedRecords[id] = p }
        var bad = [ChunkID]()
        // Every chunk the manifests on disk name, indexed or not: `--repair` never takes those away.
        var referenced = Set<ChunkID>()
        for (id, place) in recordedPlaces {
            r.checked += 1
            places[id] = place
            let present: Bool
            switch place {
            case .file: present = scan.files[id] != nil
            case .record(let n, let offset, let size): present = recordPresent(pack: n, offset: offset, size: size)
            }
            guard present else { r.missing.append(id); bad.append(id); continue }
            switch examine(place, as: id) {
            case .damaged: r.damaged.append(id); bad.append(id)
            case .manifest(let m, _): referenced.formUnion(m.children)
            case .sealed(let index, _): referenced.formUnion(index.entries.map(\.id))
            case .data, .unreadable: break
            }
        }
        let known = Set(recorded)
        // Chunks pinned content references but the metadata no longer records (dropped by an earlier repair).
        let unrecorded: [ChunkID] = try wrap {
            try db.read { db in try Data.fetchAll(db, sql: Self.liveCTE + " SELECT id FROM live WHERE id NOT IN (SELECT id FROM chunks)").compactMap(Self.id) }
        }
        // (Those whose files are still there are unindexed, below: a repair records them again.)
        for id in unrecorded where !bad.contains(id) && scan.files[id] == nil { r.missing.append(id); bad.append(id) }
        // Files the index does not record: damaged ones, manifests, chunks a manifest names (indexed
        // again by a repair), and the rest (orphans, quarantined by a repair).
        var unrecordedFiles = [ChunkID: Int]()
        var unrecordedManifests = [ChunkID: AnyManifest]()
        var unrecordedSealed = [ChunkID: SealedIndex]()
        var damagedFiles = [ChunkID]()
        for (id, place) in scan.files where !known.contains(id) {
            places[id] = place
            switch examine(place, as: id) {
            case .damaged: damagedFiles.append(id)
            case .manifest(let m, let size): unrecordedManifests[id] = m; unrecordedFiles[id] = size; referenced.formUnion(m.children)
            case .sealed(let index, let size):
                unrecordedSealed[id] = index; unrecordedFiles[id] = size; referenced.formUnion(index.entries.map(\.id))
            case .data(let size): unrecordedFiles[id] = size
            case .unreadable: break
            }
        }
        let referencedInIndex: Set<ChunkID> = try wrap {
            try db.read { db in
                let st = try db.cachedStatement(sql: "SELECT 1 FROM edges WHERE child = ? LIMIT 1")
                return Set(try unrecordedFiles.keys.filter { try Int.fetchOne(st, arguments: [Self.blob($0)]) != nil })
            }
        }
        for id in unrecordedFiles.keys {
            if unrecordedManifests[id] != nil || unrecordedSealed[id] != nil || referenced.contains(id) || referencedInIndex.contains(id) { r.unindexed.append(id) } else { r.orphaned.append(id) }
        }
        r.unindexed.sort(); r.orphaned.sort()
        for (id, p) in damagedRecords where !known.contains(id) && scan.files[id] == nil { damagedFiles.append(id); places[id] = p }
        r.damaged += damagedFiles.sorted()
        r.tempFiles = scan.temps.count
        if !bad.isEmpty {
            let badSet = Set(bad)
            let pins = try self.pins()
            for p in pins {
                let reach = try wrap {
                    try db.read { db in
                        try Data.fetchAll(db, sql: "WITH RECURSIVE live(id) AS (SELECT ? UNION SELECT e.child FROM edges e JOIN live l ON e.parent = l.id) SELECT id FROM live", arguments: [Self.blob(p.id.manifest)]).compactMap(Self.id)
                    }
                }
                if !badSet.isDisjoint(with: reach) { r.brokenPins.append(p.id) }
            }
        }
        if repair {
            // Index first: chunks manifests name come back (their roots pinned), then the metadata of bad
            // chunks goes, then files move to the quarantine.
            if !r.unindexed.isEmpty {
                // Records found in the packs are indexed at the place the scan found them.
                for id in r.unindexed { if case .record? = places[id] { packSet?.setPending(id, places[id]!) } }
                let files = r.unindexed.map { (id: $0, size: unrecordedFiles[$0] ?? 0) }
                let manifests = r.unindexed.compactMap { id in unrecordedManifests[id].map { (id, $0) } }
                let allReferenced = referenced.union(referencedInIndex)
                let sealed = r.unindexed.compactMap { id in unrecordedSealed[id].map { (id, $0) } }
                r.recoveredPins = try index(files: files, manifests: manifests, sealed: sealed, isReferenced: { allReferenced.contains($0) },
                                            pinLabel: "recovered by store verify --repair")
            }
            try wrap {
                try db.write { db in
                    let st = try db.cachedStatement(sql: "DELETE FROM chunks WHERE id = ?")
                    for id in bad { try st.execute(arguments: [Self.blob(id)]) }
                    let pi = try db.cachedStatement(sql: "DELETE FROM plain_index WHERE id = ?")
                    for id in bad { try pi.execute(arguments: [Self.blob(id)]) }
                }
            }
            var q = pq
            for id in r.damaged {
                if case .record? = places[id] { try quarantineRecord(&q, id, places[id]!, why: "damaged: the record's bytes no longer hash to its id") } else {
                    try q.move(path(of: id), why: "damaged: the bytes no longer hash to the name")
                }
            }
            for id in r.orphaned {
                if case .record? = places[id] { try quarantineRecord(&q, id, places[id]!, why: "orphaned: no manifest on disk names it") } else {
                    try q.move(path(of: id), why: "orphaned: no manifest on disk names it")
                }
            }
            for t in scan.temps { try q.move(t, why: "temp file of an interrupted write") }
            r.quarantine = q.created ? q.path : nil
            r.quarantinedFiles = q.moved
            r.repaired = true
        }
        return r
    }

    public func stats() throws -> StoreStats {
        try wrap {
            try db.read { db in
                let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(SUM(size), 0), (SELECT COUNT(*) FROM pins) FROM chunks")!
                return StoreStats(chunks: row[0], bytes: row[1], pins: row[2])
            }
        }
    }

    /// Manifest metadata recorded for `id` (kind, size, content type), if any.
    public func manifestInfo(_ id: ChunkID) throws -> (kind: String, size: UInt64, contentType: String)? {
        try wrap {
            try db.read { db in
                guard let r = try Row.fetchOne(db, sql: "SELECT kind, size, content_type FROM manifests WHERE id = ?", arguments: [Self.blob(id)]) else { return nil }
                return (r[0], UInt64(r[1] as Int64), r[2])
            }
        }
    }
}
