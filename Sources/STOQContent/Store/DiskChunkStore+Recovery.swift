import Foundation
import GRDB

// Rebuilding a disk store's index from its chunk files, and the quarantine that repairs move files to.
//
// The chunk files are the truth: each is named by the SHA-256 of its bytes, and the manifests among them
// (chunks that decode as a STOQ file or directory manifest: magic "STQM"/"STQD" and a full, validated
// decode) name every other chunk of their content. So an index that is lost or damaged can be rebuilt
// without the publisher key:
// - every file whose bytes hash to its name is recorded as a chunk (one that does not is moved to the
//   quarantine as damaged);
// - every manifest is recorded with its edges to the chunks it names;
// - a **root** is a manifest that no other manifest on disk names. Roots are pinned (label
//   "recovered …"), so `gc` keeps them; content that was unpinned but not yet collected comes back
//   pinned too (unpin it again), and when a parent manifest is itself lost its children become roots.
//   Nothing that any manifest names is left unreachable.
// What cannot be rebuilt: pin labels, access times, and the convergent index (`plain_index`, keyed by
// the publisher's secret), so the next put of already stored content seals its chunks again to find
// them (it writes nothing new).

/// Why the index was rebuilt.
public enum IndexProblem: Sendable, Equatable, CustomStringConvertible {
    /// `meta.sqlite` did not exist while chunk files did.
    case missing
    /// `meta.sqlite` recorded no chunk while chunk files existed (an emptied or replaced file).
    case empty
    /// SQLite could not read `meta.sqlite`, or its integrity check failed (the reason says which).
    case damaged(String)

    /// In words.
    public var description: String {
        switch self {
        case .missing: return "the index (meta.sqlite) was missing"
        case .empty: return "the index (meta.sqlite) was empty while chunk files exist"
        case .damaged(let why): return "the index (meta.sqlite) was damaged (\(why))"
        }
    }
}

/// What a rebuild of the index found and did.
public struct IndexRebuildReport: Sendable, Equatable, CustomStringConvertible {
    /// Why it ran.
    public var problem: IndexProblem
    /// Chunk files recorded (their bytes hash to their names).
    public var chunks = 0
    /// Of those, manifests (recorded with their edges).
    public var manifests = 0
    /// Roots pinned: manifests no other manifest names.
    public var pins: [ContentID] = []
    /// Chunks manifests name that are not on disk (reported as missing by `store verify`).
    public var missing = 0
    /// Files moved to the quarantine (damaged chunk files, and the old index when it was damaged).
    public var quarantined = 0
    /// The quarantine folder used, if any.
    public var quarantine: String?

    /// A summary for a person, saying what was rebuilt and where anything moved.
    public var description: String {
        func n(_ count: Int, _ word: String) -> String { "\(count) \(word)\(count == 1 ? "" : "s")" }
        var s = "\(problem); rebuilt it from the chunk files: \(n(chunks, "chunk")), \(n(manifests, "manifest")), \(n(pins.count, "root")) pinned as \"recovered …\" (unpin what you no longer want)"
        if missing > 0 { s += "; \(n(missing, "chunk")) the manifests name not on disk (run `stoq store verify`)" }
        if let q = quarantine { s += "; \(n(quarantined, "file")) moved to \(q) (see README.txt there)" }
        return s + "; nothing was deleted"
    }
}

/// A folder `<store>/quarantine/<UTC time>/` that holds files taken out of a store at their relative
/// paths, created on the first move, with a README saying how to put them back.
struct Quarantine {
    let store: String
    let path: String
    private(set) var created = false
    private(set) var moved = 0

    init(store: String, now: Date = Date()) {
        self.store = store
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        var p = store + "/quarantine/" + f.string(from: now)
        var n = 1
        while Posix.exists(p) { n += 1; p = store + "/quarantine/" + f.string(from: now) + "-\(n)" }
        self.path = p
    }

    /// Moves `file` (inside the store) to the same relative path under the quarantine folder.
    /// A file already gone is skipped.
    mutating func move(_ file: String, why: String) throws {
        guard Posix.exists(file) else { return }
        try makeFolder()
        let prefix = store.hasSuffix("/") ? store : store + "/"
        let relative = file.hasPrefix(prefix) ? String(file.dropFirst(prefix.count)) : "other/" + (file.split(separator: "/").last.map(String.init) ?? "file")
        let target = path + "/" + relative
        try Posix.makeDirectories(Posix.parent(target), mode: 0o700)
        guard rename(file, target) == 0 else { throw Posix.error("rename into the quarantine", file) }
        moved += 1
        // The list is a courtesy: a full disk must not fail the move, so its write errors are ignored.
        if let fd = try? FileDescriptor.open(path + "/MANIFEST.txt", flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode: 0o644) {
            try? fd.writeAll(Array("\(relative)\t\(why)\n".utf8))
            fd.close()
        }
    }

    /// Writes a copy of bytes taken out of a pack (a damaged or orphaned record, a torn tail) at
    /// `relative` under the quarantine folder; the pack keeps them as dead space until compaction.
    mutating func copy(_ bytes: [UInt8], as relative: String, why: String) throws {
        try makeFolder()
        let target = path + "/" + relative
        try Posix.makeDirectories(Posix.parent(target), mode: 0o700)
        let fd = try FileDescriptor.open(target, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o444)
        do {
            try fd.writeAll(bytes)
            try fd.sync()
            fd.close()
        } catch {
            // A partial copy (a full disk) is no copy: it goes, and gives its space back. The bytes are
            // still in the pack.
            fd.close()
            unlink(target)
            throw error
        }
        moved += 1
        if let list = try? FileDescriptor.open(path + "/MANIFEST.txt", flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode: 0o644) {
            try? list.writeAll(Array("\(relative)\t\(why)\n".utf8))
            list.close()
        }
    }

    /// Moves the index (`meta.sqlite` and its `-wal`/`-shm` files) aside.
    mutating func moveIndex() throws {
        for suffix in ["", "-wal", "-shm"] { try move(store + "/meta.sqlite" + suffix, why: "the index, replaced by a rebuild from the chunk files") }
    }

    private mutating func makeFolder() throws {
        guard !created else { return }
        try Posix.makeDirectories(path, mode: 0o700)
        let readme = """
            Files `stoq` took out of the store \(store), at their paths relative to it; MANIFEST.txt
            says why each was moved. Nothing was deleted.

            To put a file back, move it to the same path under the store, then run
            `stoq store verify --store \(store)`: a chunk any manifest names is indexed again by
            `stoq store verify --repair`. A chunk no manifest names is quarantined again by the next repair.
            meta.sqlite* files are a replaced index: the store's index was rebuilt from the chunk files.
            When you no longer need these files, remove this folder.

            """
        // Best effort, like the list: on a full disk the moves still happen.
        if let fd = try? FileDescriptor.open(path + "/README.txt", flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644) {
            try? fd.writeAll(Array(readme.utf8))
            fd.close()
        }
        created = true
    }
}

/// The index as opened, and whatever was wrong with it.
struct OpenedIndex {
    var pool: DatabasePool
    var problem: IndexProblem?
    var quarantine: Quarantine
}

extension DiskChunkStore {
    /// Index files up to this size get SQLite's quick check on every open; larger ones in `store verify`.
    static let quickCheckLimit: Int64 = 64 << 20

    static func isDamage(_ error: any Error) -> String? {
        guard let e = error as? DatabaseError, e.resultCode == .SQLITE_CORRUPT || e.resultCode == .SQLITE_NOTADB else { return nil }
        return e.message ?? "\(e.resultCode)"
    }

    static func openPool(_ path: String) throws -> DatabasePool {
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        config.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: config)
        try pool.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS chunks (id BLOB PRIMARY KEY, size INTEGER NOT NULL, created INTEGER NOT NULL, last_access INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS edges (parent BLOB NOT NULL, child BLOB NOT NULL, PRIMARY KEY (parent, child)) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS edges_child ON edges(child);
                CREATE TABLE IF NOT EXISTS manifests (id BLOB PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS plain_index (tag BLOB PRIMARY KEY, id BLOB NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS pins (id BLOB PRIMARY KEY, name TEXT NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS packs (pack INTEGER PRIMARY KEY, length INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS dead_records (pack INTEGER NOT NULL, pack_offset INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (pack, pack_offset)) WITHOUT ROWID;
                """)
            // Pack files (StoreFormat.packs): a chunk's pack and record offset; NULL for a chunk file.
            // Added in place to an index of the older layout (its rows keep NULL: their files are read as before).
            let columns = try Row.fetchAll(db, sql: "PRAGMA table_info(chunks)").map { $0["name"] as String }
            if !columns.contains("pack") { try db.execute(sql: "ALTER TABLE chunks ADD COLUMN pack INTEGER") }
            if !columns.contains("pack_offset") { try db.execute(sql: "ALTER TABLE chunks ADD COLUMN pack_offset INTEGER") }
            // When a pack record's bytes were last hashed and found whole (Unix seconds; NULL: not yet).
            if !columns.contains("verified") { try db.execute(sql: "ALTER TABLE chunks ADD COLUMN verified INTEGER") }
        }
        return pool
    }

    /// SQLite's check of the whole file: nil when it is fine, else what is wrong.
    static func check(_ pool: DatabasePool, full: Bool) -> String? {
        do {
            let result = try pool.read { db in try String.fetchOne(db, sql: full ? "PRAGMA integrity_check(1)" : "PRAGMA quick_check(1)") }
            if let result, result != "ok" { return result }
            // The tables must read end to end too.
            _ = try pool.read { db in try Int.fetchOne(db, sql: "SELECT (SELECT COUNT(*) FROM chunks) + (SELECT COUNT(*) FROM edges) + (SELECT COUNT(*) FROM pins)") }
            return nil
        } catch {
            return isDamage(error) ?? "\(error)"
        }
    }

    /// Opens `meta.sqlite`, telling a new store from one whose index was lost, emptied or damaged.
    /// A damaged index (and a write-ahead log left without its database) is moved to the quarantine
    /// and a new, empty one created, for ``rebuildIndex(because:quarantine:)`` to fill.
    static func openIndex(directory: String) throws -> OpenedIndex {
        let path = directory + "/meta.sqlite"
        var quarantine = Quarantine(store: directory)
        var problem: IndexProblem? = nil
        if !Posix.exists(path) {
            problem = .missing
            // A log without its database would be replayed into the new one: move it aside.
            if Posix.exists(path + "-wal") || Posix.exists(path + "-shm") { try quarantine.moveIndex() }
        } else if (try? Posix.info(path).size) == 0 {
            problem = .empty
        }
        var damage: String? = nil
        var pool: DatabasePool? = nil
        do {
            let p = try openPool(path)
            pool = p
            if let size = try? Posix.info(path).size, size <= quickCheckLimit, let why = check(p, full: false) { damage = why }
        } catch {
            guard let why = isDamage(error) else { throw error }
            damage = why
        }
        if let damage {
            try? pool?.close()
            pool = nil
            try quarantine.moveIndex()
            pool = try openPool(path)
            problem = .damaged(damage)
        }
        guard let pool else { throw ContentError(.database, "the index \(path) did not open") }
        switch problem {
        case .damaged?: break
        default:
            // A store with chunk files and an index that records none lost its index (a new store has neither).
            let recorded = try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM chunks") ?? 0 }
            if recorded == 0, try hasChunkFiles(directory) {
                if problem == nil { problem = .empty }
            } else {
                problem = nil
            }
        }
        return OpenedIndex(pool: pool, problem: problem, quarantine: quarantine)
    }

    /// Whether `chunks/` holds any file, or `packs/` any record (stops at the first).
    static func hasChunkFiles(_ directory: String) throws -> Bool {
        let packs = directory + "/packs"
        if Posix.isDirectory(packs) {
            for name in try Posix.listDirectory(packs) where name.hasSuffix(".pack") {
                if let size = try? Posix.info(packs + "/" + name).size, size > PackSet.headerSize { return true }
            }
        }
        let root = directory + "/chunks"
        guard Posix.isDirectory(root) else { return false }
        for a in try Posix.listDirectory(root) where Posix.isDirectory(root + "/" + a) {
            for b in try Posix.listDirectory(root + "/" + a) where Posix.isDirectory(root + "/" + a + "/" + b) {
                if try !Posix.listDirectory(root + "/" + a + "/" + b).filter({ !$0.hasPrefix(".tmp-") }).isEmpty { return true }
            }
        }
        return false
    }

    /// What a chunk file holds.
    enum Examined {
        /// Its bytes do not hash to its name.
        case damaged
        /// A manifest (validated), and the file's size.
        case manifest(AnyManifest, size: Int)
        /// A sealed content's index (validated), and the file's size: its entries are referenced.
        case sealed(SealedIndex, size: Int)
        /// Any other chunk (ciphertext), with its size.
        case data(Int)
        /// It could not be read (a permission or I/O problem: left alone).
        case unreadable
    }

    /// Reads a chunk file or pack record, checks its hash, and decodes it when it carries a manifest's magic.
    func examine(_ place: ChunkPlace, as id: ChunkID) -> Examined {
        guard let bytes = try? read(place) else { return .unreadable }
        guard ChunkID.of(bytes) == id else { return .damaged }
        if bytes.starts(with: FileManifest.magic) || bytes.starts(with: DirectoryManifest.magic), let m = try? AnyManifest.decode(bytes) {
            return .manifest(m, size: bytes.count)
        }
        if SealedIndex.looksLike(bytes), let index = try? SealedIndex.decode(bytes) { return .sealed(index, size: bytes.count) }
        return .data(bytes.count)
    }

    /// SQLite's full integrity check of the open index: nil when it is fine.
    func integrityProblem() throws -> String? { Self.check(db, full: true) }

    /// Records chunk files in the index: every chunk, each manifest with its kind and edges, and
    /// each manifest `isReferenced` does not name pinned as a root (unless it is pinned already).
    /// - Returns: the roots newly pinned.
    func index(files: [(id: ChunkID, size: Int)], manifests: [(ChunkID, AnyManifest)], sealed: [(ChunkID, SealedIndex)] = [],
               isReferenced: (ChunkID) -> Bool, pinLabel: String) throws -> [ContentID] {
        var batch = CommitBatch()
        batch.chunks = files
        // Kinds as a put records them: "dir", "file" for a file's top manifest, "leaf"/"node" below it.
        var below = Set<ChunkID>()
        for (_, m) in manifests {
            if case .file(let f) = m, f.kind == .node { below.formUnion(f.entries.map(\.id)) }
        }
        var roots = [ContentID]()
        for (id, m) in manifests {
            switch m {
            case .directory(let d):
                batch.manifests.append((id, "dir", d.entries.reduce(UInt64(0)) { $0 &+ $1.size }, "inode/directory"))
            case .file(let f):
                let kind = below.contains(id) ? (f.kind == .leaf ? "leaf" : "node") : "file"
                batch.manifests.append((id, kind, f.totalSize, f.contentType))
            }
            for c in m.children { batch.edges.append((id, c)) }
            if !isReferenced(id) { roots.append(ContentID(id)) }
        }
        for (id, index) in sealed {
            batch.manifests.append((id, "sealed", 0, ""))
            for e in index.entries { batch.edges.append((id, e.id)) }
            if !isReferenced(id) { roots.append(ContentID(id)) }
        }
        // A root still pinned keeps its label.
        let pinned = Set(try pins().map(\.id))
        roots.removeAll { pinned.contains($0) }
        roots.sort { $0.manifest.hex < $1.manifest.hex }
        let day = ISO8601DateFormatter().string(from: Date())
        batch.pins = roots.map { ($0, "\(pinLabel) \(day)") }
        try commit(batch)
        return roots
    }

    /// Rebuilds the index from the chunk files (see the top of this file for what a root is).
    func rebuildIndex(because problem: IndexProblem, quarantine: Quarantine) throws -> IndexRebuildReport {
        var q = quarantine
        var report = IndexRebuildReport(problem: problem)
        var damagedPositions = [(Int, Int64, Int)]()
        var scan = try scanFiles()
        // The packs: a torn tail is copied to the quarantine and cut; damaged records are copied out.
        let packScan = try scanPacks(quarantine: &q, dead: [])
        for (id, p) in packScan.valid where scan.files[id] == nil { scan.files[id] = p; packSet?.setPending(id, p) }
        for (id, p) in packScan.damaged where scan.files[id] == nil {
            guard case .record(let n, let offset, let size) = p, let bytes = try? read(p) else { continue }
            _ = size
            try q.copy(bytes, as: "packs/\(PackSet.name(n)).\(offset).\(id.hex)", why: "damaged: the record's bytes no longer hash to its id (found rebuilding the index)")
            damagedPositions.append((n, offset, bytes.count))
        }
        var files = [(id: ChunkID, size: Int)]()
        var manifests = [(ChunkID, AnyManifest)]()
        var sealed = [(ChunkID, SealedIndex)]()
        var referenced = Set<ChunkID>()
        for (id, p) in scan.files.sorted(by: { $0.key.hex < $1.key.hex }) {
            switch examine(p, as: id) {
            case .damaged:
                if case .file(let path) = p { try q.move(path, why: "damaged: the bytes no longer hash to the name (found rebuilding the index)") }
            case .unreadable: continue
            case .data(let size): files.append((id, size))
            case .manifest(let m, let size):
                files.append((id, size)); manifests.append((id, m)); referenced.formUnion(m.children)
            case .sealed(let index, let size):
                files.append((id, size)); sealed.append((id, index)); referenced.formUnion(index.entries.map(\.id))
            }
        }
        report.chunks = files.count
        report.manifests = manifests.count
        let present = Set(files.map(\.id))
        report.missing = referenced.subtracting(present).count
        report.pins = try index(files: files, manifests: manifests, sealed: sealed, isReferenced: { referenced.contains($0) }, pinLabel: "recovered (index rebuilt)")
        // The packs' lengths (all of each is now checked) and the damaged records, dead space from here on.
        if let packSet {
            var lengths = [(Int, Int64)]()
            for n in try packSet.numbers() { lengths.append((n, try Posix.info(packSet.path(n)).size)) }
            try wrap {
                try db.write { db in
                    for (n, l) in lengths { try db.execute(sql: "INSERT OR REPLACE INTO packs (pack, length) VALUES (?, ?)", arguments: [n, l]) }
                    for (n, o, size) in damagedPositions {
                        try db.execute(sql: "INSERT OR IGNORE INTO dead_records (pack, pack_offset, size) VALUES (?, ?, ?)", arguments: [n, o, size])
                    }
                }
            }
        }
        report.quarantined = q.moved
        report.quarantine = q.created ? q.path : nil
        return report
    }
}
