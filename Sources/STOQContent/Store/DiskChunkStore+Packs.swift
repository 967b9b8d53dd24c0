import Foundation
import GRDB

// A disk store's pack files (StoreFormat.packs): where a chunk is, torn tails, compaction, migration.
//
// The index (`meta.sqlite`) gives each chunk its pack and record offset (`chunks.pack`, `chunks.pack_offset`;
// NULL for a chunk file of the older layout), each pack the length its last commit made durable
// (`packs`), and the records gc, evict and repairs dropped (`dead_records`: dead space that compaction
// reclaims and that verify does not take for a crash's orphans). The packs are the truth: each record
// carries its id, which is the SHA-256 of its bytes, so a lost index is rebuilt by reading them.

extension DiskChunkStore {
    /// Where `id`'s bytes are: its pack record when the index (or a write not yet committed) says so,
    /// else its chunk file.
    func place(of id: ChunkID) throws -> ChunkPlace { try locate(id).place }

    /// ``place(of:)`` and when the chunk's bytes were last hashed and found whole (Unix seconds; nil:
    /// never, or not tracked — chunk files, records found by a rebuild).
    func locate(_ id: ChunkID) throws -> (place: ChunkPlace, verified: Int64?) {
        if let packSet {
            if let p = packSet.pendingPlace(id) { return (p, nil) }
            // One SELECT is atomic by itself: no read transaction around it (a third of a read's cost).
            let row = try wrap {
                try db.unsafeRead { db in
                    try Row.fetchOne(db.cachedStatement(sql: "SELECT pack, pack_offset, size, verified FROM chunks WHERE id = ?"), arguments: [Self.blob(id)])
                }
            }
            if let row, let n = row[0] as Int64?, let offset = row[1] as Int64? {
                return (.record(pack: Int(n), offset: offset, size: row[2]), row[3] as Int64?)
            }
        }
        return (.file(path(of: id)), nil)
    }

    /// The stored bytes at a place (not verified).
    func read(_ place: ChunkPlace) throws -> [UInt8] {
        switch place {
        case .file(let p): return try Posix.readFile(p)
        case .record(let n, let offset, let size):
            guard let packSet else { throw ContentError(.notFound, "the store \(directory) has no packs") }
            return try packSet.read(pack: n, offset: offset, size: size)
        }
    }

    /// The bytes at a place, the record header checked against `id` (a pack record).
    func read(_ place: ChunkPlace, checking id: ChunkID) throws -> [UInt8] {
        guard case .record(let n, let offset, let size) = place, let packSet else { return try read(place) }
        return try packSet.read(pack: n, offset: offset, size: size, id: id)
    }

    /// A place in words, for messages.
    func describe(_ place: ChunkPlace) -> String {
        switch place {
        case .file(let p): return p
        case .record(let n, let offset, _): return "\(directory)/packs/\(PackSet.name(n)) at offset \(offset)"
        }
    }

    /// Whether a record's pack exists and holds the whole record.
    func recordPresent(pack n: Int, offset: Int64, size: Int) -> Bool {
        guard let packSet, let info = try? Posix.info(packSet.path(n)) else { return false }
        return info.size >= offset + Int64(PackSet.recordHeader + size)
    }

    /// Cuts every record after each pack's committed length: records a crash or a failed put (a full
    /// disk) left behind, whole or torn, that no commit made durable and so nothing the index names.
    /// Cutting is a truncate, which needs no free space (copying them to the quarantine would, and on
    /// a full disk cannot). As a guard against a length recorded short, a record past the committed
    /// length that the index does name at that place is kept, with everything before it, and the
    /// length is raised to its end. A pack left with no record and no committed length is removed.
    /// - Returns: the bytes cut.
    func recoverPackTails() throws -> Int64 {
        guard let packSet else { return 0 }
        let lengths: [Int: Int64] = try db.read { db in
            Dictionary(try Row.fetchAll(db, sql: "SELECT pack, length FROM packs").map { (Int($0[0] as Int64), $0[1] as Int64) }, uniquingKeysWith: max)
        }
        var dropped: Int64 = 0
        let numbers = try packSet.numbers()
        defer {
            // New records continue the last pack when all of it is committed (checked again here: the
            // loop below may have cut or removed it).
            if let last = numbers.last, let l = lengths[last], (try? Posix.info(packSet.path(last)).size) == l { packSet.resume(last, at: l) }
        }
        for n in numbers {
            let size = try Posix.info(packSet.path(n)).size
            let committed = lengths[n] ?? PackSet.headerSize
            guard size > committed || size < PackSet.headerSize else { continue }
            if size < PackSet.headerSize {
                // A pack whose header was torn holds no record: nothing committed can be in it.
                if lengths[n] == nil { packSet.forget(n); try Posix.remove(packSet.path(n)); dropped += size }
                continue
            }
            // The records past the committed length, and whether the index names any of them there.
            let scan = try packSet.scan(n, from: committed)
            var keep = committed
            let found = (scan.records + scan.damaged).filter { $0.offset + Int64(PackSet.recordHeader + $0.size) > keep }
            if !found.isEmpty {
                let indexed: [Int64] = try db.read { db in
                    let st = try db.cachedStatement(sql: "SELECT 1 FROM chunks WHERE id = ? AND pack = ? AND pack_offset = ?")
                    return try found.filter { try Int.fetchOne(st, arguments: [Self.blob($0.id), n, $0.offset]) != nil }
                        .map { $0.offset + Int64(PackSet.recordHeader + $0.size) }
                }
                keep = max(keep, indexed.max() ?? keep)
            }
            if keep < size {
                if keep == PackSet.headerSize && lengths[n] == nil {
                    // Nothing in it was ever committed: the whole file goes (a removal needs no space either).
                    try packSet.remove(n)
                } else {
                    try packSet.truncate(n, to: keep)
                }
                dropped += size - keep
            }
            // Dead-record rows past the cut would name offsets the next records reuse. (Written only when
            // there is something to write: on a full disk the index may not be able to grow.)
            let staleDead = try db.read { db in
                try Int.fetchOne(db, sql: "SELECT 1 FROM dead_records WHERE pack = ? AND pack_offset >= ? LIMIT 1", arguments: [n, keep]) != nil
            }
            if keep > committed || staleDead {
                try db.write { db in
                    if keep > committed { try db.execute(sql: Self.recordPackLength, arguments: [n, keep]) }
                    try db.execute(sql: "DELETE FROM dead_records WHERE pack = ? AND pack_offset >= ?", arguments: [n, keep])
                }
            }
        }
        return dropped
    }

    /// The statement that records a pack's committed length: it only ever grows (two commits that
    /// synced in one order may write their lengths in the other; the shorter must not win, or opening
    /// would cut records the index names). Arguments: pack, length.
    static let recordPackLength = "INSERT OR REPLACE INTO packs (pack, length) VALUES (?1, MAX(?2, COALESCE((SELECT length FROM packs WHERE pack = ?1), 0)))"

    /// Every pack record: valid ones by id (the first found of an id written twice), damaged ones, and
    /// the records the index lists as dead (skipped). Torn tails found here (a rebuild, whose index
    /// lost the packs' lengths) are copied to the quarantine and cut.
    func scanPacks(quarantine q: inout Quarantine, dead: Set<PackPosition>) throws -> (valid: [ChunkID: ChunkPlace], damaged: [(ChunkID, ChunkPlace)]) {
        var valid = [ChunkID: ChunkPlace](), damaged = [(ChunkID, ChunkPlace)]()
        guard let packSet else { return (valid, damaged) }
        for n in try packSet.numbers() {
            let scan = try packSet.scan(n)
            for r in scan.records where valid[r.id] == nil && !dead.contains(PackPosition(pack: n, offset: r.offset)) {
                valid[r.id] = .record(pack: n, offset: r.offset, size: r.size)
            }
            for r in scan.damaged where !dead.contains(PackPosition(pack: n, offset: r.offset)) {
                damaged.append((r.id, .record(pack: n, offset: r.offset, size: r.size)))
            }
            if scan.end < scan.fileSize, scan.fileSize >= PackSet.headerSize {
                let tail = try Posix.readFile(packSet.path(n)).dropFirst(Int(scan.end))
                try q.copy(Array(tail), as: "packs/\(PackSet.name(n)).tail-\(scan.end)", why: "torn tail of a pack: bytes after its last whole record, cut from the pack")
                try packSet.truncate(n, to: scan.end)
            }
        }
        return (valid, damaged)
    }

    /// The positions of the records the index lists as dead.
    func deadRecords() throws -> Set<PackPosition> {
        try wrap {
            try db.read { db in
                Set(try Row.fetchAll(db, sql: "SELECT pack, pack_offset FROM dead_records").map { PackPosition(pack: Int($0[0] as Int64), offset: $0[1]) })
            }
        }
    }

    /// Copies a record's bytes to the quarantine (for a damaged or orphaned record) and lists the record
    /// as dead, so compaction reclaims it and the next verify does not report it again.
    func quarantineRecord(_ q: inout Quarantine, _ id: ChunkID, _ place: ChunkPlace, why: String) throws {
        guard case .record(let n, let offset, let size) = place, let packSet else { return }
        let bytes = (try? packSet.read(pack: n, offset: offset, size: size)) ?? []
        try q.copy(bytes, as: "packs/\(PackSet.name(n)).\(offset).\(id.hex)", why: why)
        try wrap {
            try db.write { db in
                try db.execute(sql: "INSERT OR IGNORE INTO dead_records (pack, pack_offset, size) VALUES (?, ?, ?)", arguments: [n, offset, size])
            }
        }
    }

    /// Rewrites the packs whose live bytes are below `maxLive` of their size: their live records are
    /// copied (and checked against their ids) to the pack being written, made durable, the index moved
    /// to the new places in one transaction, and only then the old pack removed. A crash at any point
    /// leaves either the old pack named by the index or the new one (the other copy is dead space).
    /// A pack holding a damaged live record is left for `store verify --repair`.
    /// - Returns: packs rewritten and bytes given back.
    @discardableResult
    public func compactPacks(maxLive: Double = 0.5) throws -> (packs: Int, reclaimed: Int64) {
        guard let packSet else { return (0, 0) }
        let live: [Int: Int64] = try db.read { db in
            Dictionary(try Row.fetchAll(db, sql: "SELECT pack, SUM(size) + COUNT(*) * \(PackSet.recordHeader) FROM chunks WHERE pack IS NOT NULL GROUP BY pack")
                .map { (Int($0[0] as Int64), $0[1] as Int64) }, uniquingKeysWith: +)
        }
        var candidates = [(Int, Int64)]()
        for n in try packSet.numbers() {
            let size = try Posix.info(packSet.path(n)).size
            let body = size - PackSet.headerSize
            guard body > 0, Double(live[n] ?? 0) < maxLive * Double(body) else { continue }
            candidates.append((n, size))
        }
        guard !candidates.isEmpty else { return (0, 0) }
        // New records go to a new pack, never into one being rewritten.
        packSet.closeCurrent()
        var packs = 0, reclaimed: Int64 = 0
        for (n, size) in candidates {
            let rows: [(ChunkID, Int64, Int)] = try db.read { db in
                try Row.fetchAll(db, sql: "SELECT id, pack_offset, size FROM chunks WHERE pack = ?", arguments: [n]).compactMap { r in
                    guard let id = Self.id(r[0]) else { return nil }
                    return (id, r[1], r[2])
                }
            }
            var moved = [(ChunkID, Int, Int64)]()
            var intact = true
            for (id, offset, count) in rows {
                guard let bytes = try? packSet.read(pack: n, offset: offset, size: count), ChunkID.of(bytes) == id else { intact = false; break }
                if case .record(let m, let o, _) = try packSet.append(id, bytes) { moved.append((id, m, o)) }
            }
            guard intact else { continue }
            let lengths = try packSet.sync()
            try db.write { db in
                let st = try db.cachedStatement(sql: "UPDATE chunks SET pack = ?, pack_offset = ? WHERE id = ?")
                for (id, m, o) in moved { try st.execute(arguments: [m, o, Self.blob(id)]) }
                let len = try db.cachedStatement(sql: Self.recordPackLength)
                for l in lengths { try len.execute(arguments: [l.pack, l.length]) }
                try db.execute(sql: "DELETE FROM packs WHERE pack = ?; DELETE FROM dead_records WHERE pack = ?", arguments: [n, n])
            }
            packSet.committed(moved.map(\.0))
            try packSet.remove(n)
            packs += 1
            reclaimed += size - Int64(moved.count * PackSet.recordHeader) - Int64(rows.reduce(0) { $0 + $1.2 })
        }
        return (packs, reclaimed)
    }

    /// Moves the chunk files of the older layout into packs (format packs only): each file is read,
    /// checked against its name, appended; the index is pointed at the records in batches (durable
    /// first), and only then are the files removed. A damaged file is left where it is, for
    /// `store verify --repair`. Safe to interrupt and run again.
    /// - Returns: the chunk files moved.
    @discardableResult
    public func migrateToPacks(batch: Int = 4096) throws -> Int {
        guard let packSet else {
            throw ContentError(.invalidArgument, "the store \(directory) keeps chunk files; open it with --store-format packs to migrate it")
        }
        let rows: [ChunkID] = try wrap {
            try db.read { db in try Data.fetchAll(db, sql: "SELECT id FROM chunks WHERE pack IS NULL").compactMap(Self.id) }
        }
        var moved = 0
        var start = 0
        while start < rows.count {
            let part = rows[start..<min(start + batch, rows.count)]
            start += batch
            var done = [(ChunkID, Int, Int64)]()
            for id in part {
                guard let bytes = try? Posix.readFile(path(of: id)), ChunkID.of(bytes) == id else { continue }
                if case .record(let n, let o, _) = try packSet.append(id, bytes) { done.append((id, n, o)) }
            }
            let lengths = try packSet.sync()
            try wrap {
                try db.write { db in
                    let st = try db.cachedStatement(sql: "UPDATE chunks SET pack = ?, pack_offset = ? WHERE id = ?")
                    for (id, n, o) in done { try st.execute(arguments: [n, o, Self.blob(id)]) }
                    let len = try db.cachedStatement(sql: Self.recordPackLength)
                    for l in lengths { try len.execute(arguments: [l.pack, l.length]) }
                }
            }
            packSet.committed(done.map(\.0))
            for (id, _, _) in done { try? Posix.remove(path(of: id)) }
            moved += done.count
        }
        return moved
    }

    /// Files and bytes the store uses, for `stoq store stats` and the benchmark.
    public func footprint() throws -> (packs: Int, packBytes: Int64, indexBytes: Int64) {
        let packs = try packSet?.numbers().count ?? 0
        let packBytes = try packSet?.totalBytes() ?? 0
        // The log folded into the database first, so the figure is the index itself.
        _ = try? db.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
        var index: Int64 = 0
        for suffix in ["", "-wal"] { index += (try? Posix.info(directory + "/meta.sqlite" + suffix).size) ?? 0 }
        return (packs, packBytes, index)
    }
}

/// A record's position: pack number and offset.
struct PackPosition: Hashable {
    var pack: Int
    var offset: Int64
}
