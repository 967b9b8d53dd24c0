#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// How a ``DiskChunkStore`` keeps chunk bytes.
public enum StoreFormat: String, Sendable, CaseIterable {
    /// One file per chunk under `chunks/ab/cd/` (the layout of every store made before pack files).
    case files
    /// Append-only pack files under `packs/` (see ``DiskChunkStore`` and docs/OPERATIONS.md).
    case packs
}

/// Where a chunk's bytes are: a chunk file (old layout) or a record in a pack file.
enum ChunkPlace: Sendable, Equatable {
    case file(String)
    /// The record starts at `offset` (its header); the bytes follow the header.
    case record(pack: Int, offset: Int64, size: Int)
}

/// What a scan of one pack found.
struct PackScan {
    /// Records whose bytes hash to their id: (id, record offset, size).
    var records: [(id: ChunkID, offset: Int64, size: Int)] = []
    /// Records whose header reads but whose bytes do not hash to the id (kept for the quarantine).
    var damaged: [(id: ChunkID, offset: Int64, size: Int)] = []
    /// Bytes skipped between records because no record header could be read there.
    var garbageBytes: Int64 = 0
    /// Where the last good record ends: bytes after it are a torn (incomplete) write.
    var end: Int64
    /// The file's size.
    var fileSize: Int64
}

/// The pack files of a store: `packs/NNNNNNNN.pack`, append-only.
///
/// Format (big-endian): a 16-byte header `"STQPACK1"`, version (UInt32 = 1), reserved (UInt32 = 0); then
/// records, each `"STQR"`, length (UInt32), the chunk id (32 bytes, the SHA-256 of the bytes, so it is the
/// record's checksum), and the bytes. A pack grows until the next record would pass the target size (a
/// record larger than the target gets a pack of its own), then the next pack number starts.
///
/// Records written but not yet committed are in ``pending`` (id → place); ``sync()`` makes them durable
/// before the index names them. Thread-safe: every member takes `lock`.
final class PackSet: @unchecked Sendable {
    static let magic: [UInt8] = Array("STQPACK1".utf8)
    static let headerSize: Int64 = 16
    static let recordMagic: [UInt8] = Array("STQR".utf8)
    static let recordHeader = 40
    /// A record claims at most this many bytes (a length above it is damage, not a chunk).
    static let maxRecord = 1 << 30

    let directory: String
    let target: Int64
    private let lock = NSLock()
    private var fds: [Int: FileDescriptor] = [:]
    private var current: (n: Int, end: Int64)?
    private var dirty = Set<Int>()
    private var newFile = false
    private var pending: [ChunkID: ChunkPlace] = [:]

    init(directory: String, target: Int64) throws {
        self.directory = directory
        self.target = max(target, 4096)
        try Posix.makeDirectories(directory)
    }

    deinit { for fd in fds.values { fd.close() } }

    static func name(_ n: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s + ".pack"
    }

    func path(_ n: Int) -> String { directory + "/" + Self.name(n) }

    /// The pack numbers on disk, ascending.
    func numbers() throws -> [Int] {
        try Posix.listDirectory(directory).compactMap { name -> Int? in
            guard name.hasSuffix(".pack"), name.count == 13 else { return nil }
            return Int(name.prefix(8))
        }.sorted()
    }

    private func fd(_ n: Int) throws -> FileDescriptor {
        if let f = fds[n] { return f }
        let f = try Self.openPack(path(n))
        fds[n] = f
        return f
    }

    /// Opens a pack for reading and writing (appending to the last pack, cutting a torn tail). A pack
    /// is read-only on disk (mode 0444), which only root may open for writing as it is: its owner lifts
    /// the mode for the open and puts it back (the descriptor keeps write access). Someone who may only
    /// read the store gets a read-only descriptor (reads work; a write says why it cannot).
    static func openPack(_ path: String) throws -> FileDescriptor {
        if let f = try? FileDescriptor.open(path, flags: O_RDWR | O_CLOEXEC) { return f }
        if chmod(path, 0o644) == 0 {
            defer { _ = chmod(path, 0o444) }
            if let f = try? FileDescriptor.open(path, flags: O_RDWR | O_CLOEXEC) { return f }
        }
        return try FileDescriptor.open(path, flags: O_RDONLY | O_CLOEXEC)
    }

    /// Closes and forgets an open pack (before it is removed or truncated from outside).
    func forget(_ n: Int) {
        lock.lock(); defer { lock.unlock() }
        fds.removeValue(forKey: n)?.close()
        if current?.n == n { current = nil }
    }

    /// Continues the pack `n`, whose whole length (`end`) is committed, instead of starting a new one
    /// with the next record (a store reopened by each command would otherwise start a pack per run).
    /// Only before anything was appended; a pack at or over the target is left closed.
    func resume(_ n: Int, at end: Int64) {
        lock.lock(); defer { lock.unlock() }
        guard current == nil, dirty.isEmpty, pending.isEmpty, end >= Self.headerSize, end < target else { return }
        current = (n, end)
    }

    /// Ends the pack being written: the next record starts a new one.
    func closeCurrent() {
        lock.lock(); defer { lock.unlock() }
        current = nil
    }

    /// The place of a record written but not yet committed.
    func pendingPlace(_ id: ChunkID) -> ChunkPlace? {
        lock.lock(); defer { lock.unlock() }
        return pending[id]
    }

    /// Records a place as pending (a rebuild or repair about to commit records found by a scan).
    func setPending(_ id: ChunkID, _ place: ChunkPlace) {
        lock.lock(); defer { lock.unlock() }
        pending[id] = place
    }

    /// Removes committed ids from the pending map.
    func committed(_ ids: [ChunkID]) {
        lock.lock(); defer { lock.unlock() }
        if pending.isEmpty { return }
        for id in ids { pending.removeValue(forKey: id) }
    }

    /// Appends a record; returns its place (an id already pending is not written twice).
    @discardableResult
    func append(_ id: ChunkID, _ bytes: [UInt8]) throws -> ChunkPlace {
        lock.lock(); defer { lock.unlock() }
        if let p = pending[id] { return p }
        let size = Int64(Self.recordHeader + bytes.count)
        if current == nil || (current!.end + size > target && current!.end > Self.headerSize) {
            try startPack()
        }
        let (n, end) = current!
        var rec = [UInt8]()
        rec.reserveCapacity(Self.recordHeader + bytes.count)
        rec += Self.recordMagic
        let len = UInt32(bytes.count)
        rec += [UInt8(len >> 24), UInt8((len >> 16) & 0xff), UInt8((len >> 8) & 0xff), UInt8(len & 0xff)]
        rec += id.bytes
        rec += bytes
        let f = try fd(n)
        do {
            try Self.pwriteAll(f, rec, at: end)
        } catch {
            // A partial record must not stay at the tail.
            _ = ftruncate(f.raw, off_t(end))
            throw error
        }
        current = (n, end + size)
        dirty.insert(n)
        let place = ChunkPlace.record(pack: n, offset: end, size: bytes.count)
        pending[id] = place
        return place
    }

    /// Starts the next pack (number after the highest on disk).
    private func startPack() throws {
        let n = (try numbers().last ?? 0) + 1
        let f = try FileDescriptor.open(path(n), flags: O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o444)
        fds[n] = f
        let header = Self.magic + [0, 0, 0, 1, 0, 0, 0, 0]
        do { try Self.pwriteAll(f, header, at: 0) } catch { _ = ftruncate(f.raw, 0); throw error }
        current = (n, Self.headerSize)
        newFile = true
    }

    /// Makes every record written so far durable (fsync of each pack written, and of the folder when a
    /// pack was created); returns each such pack's length at that moment.
    func sync() throws -> [(pack: Int, length: Int64)] {
        lock.lock(); defer { lock.unlock() }
        var out = [(Int, Int64)]()
        for n in dirty.sorted() {
            let f = try fd(n)
            try f.sync()
            out.append((n, try f.size()))
        }
        dirty.removeAll()
        if newFile { try Posix.syncDirectory(directory); newFile = false }
        return out
    }

    /// The bytes of a record (not hashed: the caller hashes them when it must). With `id`, the record's
    /// header is read too and must be a record of that id and size (a cheap check that the index points
    /// at the right record, done on every read, hashed or not).
    func read(pack n: Int, offset: Int64, size: Int, id: ChunkID? = nil) throws -> [UInt8] {
        lock.lock()
        let f: FileDescriptor
        do { f = try fd(n) } catch { lock.unlock(); throw error }
        lock.unlock()
        guard let id else {
            let bytes = try f.pread(count: size, at: offset + Int64(Self.recordHeader))
            guard bytes.count == size else {
                throw ContentError(.notFound, "pack \(path(n)) ends inside the record at offset \(offset)")
            }
            return bytes
        }
        let all = try f.pread(count: Self.recordHeader + size, at: offset)
        guard all.count == Self.recordHeader + size else {
            throw ContentError(.notFound, "pack \(path(n)) ends inside the record at offset \(offset)")
        }
        let len = Int(all[4]) << 24 | Int(all[5]) << 16 | Int(all[6]) << 8 | Int(all[7])
        guard all[0..<4].elementsEqual(Self.recordMagic), len == size, all[8..<40].elementsEqual(id.bytes) else {
            throw ContentError(.idMismatch, "chunk \(id.short) is damaged on disk (the record header at offset \(offset) of \(path(n)) is not this chunk's); run `stoq store verify --repair` and put the content again")
        }
        return Array(all[Self.recordHeader...])
    }

    /// Reads the pack from `from` (its header end when nil) and walks its records, hashing each.
    /// A header that does not read is skipped to the next position where a whole, valid record starts.
    func scan(_ n: Int, from: Int64? = nil) throws -> PackScan {
        lock.lock()
        let f: FileDescriptor
        do { f = try fd(n) } catch { lock.unlock(); throw error }
        lock.unlock()
        let size = try f.size()
        let start = max(from ?? Self.headerSize, Self.headerSize)
        var out = PackScan(end: start, fileSize: size)
        if size <= start { out.end = min(start, max(size, 0)); return out }
        let buf = try f.pread(count: Int(size - start), at: start)
        func u32(_ i: Int) -> Int { Int(buf[i]) << 24 | Int(buf[i + 1]) << 16 | Int(buf[i + 2]) << 8 | Int(buf[i + 3]) }
        /// The record at i: nil when no whole header (or length) is there; else id, size and whether it hashes.
        func record(at i: Int) -> (ChunkID, Int, Bool)? {
            guard i + Self.recordHeader <= buf.count, buf[i] == 0x53, buf[i + 1] == 0x54, buf[i + 2] == 0x51, buf[i + 3] == 0x52 else { return nil }
            let len = u32(i + 4)
            guard len <= Self.maxRecord, i + Self.recordHeader + len <= buf.count,
                  let id = ChunkID(bytes: buf[(i + 8)..<(i + 40)]) else { return nil }
            let ok = buf.withUnsafeBufferPointer { ChunkID.of(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[(i + 40)..<(i + 40 + len)])) } == id
            return (id, len, ok)
        }
        var i = 0
        while i < buf.count {
            if let (id, len, ok) = record(at: i) {
                let at = start + Int64(i)
                if ok { out.records.append((id, at, len)) } else { out.damaged.append((id, at, len)) }
                i += Self.recordHeader + len
                out.end = start + Int64(i)
                continue
            }
            // No record here: find the next whole, valid one; none means the rest is a torn tail.
            var j = i + 1
            var found = false
            while j + Self.recordHeader <= buf.count {
                if buf[j] == 0x53, buf[j + 1] == 0x54, buf[j + 2] == 0x51, buf[j + 3] == 0x52, let (_, _, ok) = record(at: j), ok { found = true; break }
                j += 1
            }
            guard found else { break }
            out.garbageBytes += Int64(j - i)
            i = j
        }
        return out
    }

    /// Cuts a pack at `length` (a torn tail) and makes that durable.
    func truncate(_ n: Int, to length: Int64) throws {
        lock.lock(); defer { lock.unlock() }
        let f = try fd(n)
        guard ftruncate(f.raw, off_t(length)) == 0 else { throw Posix.error("truncate", path(n)) }
        try f.sync()
        if current?.n == n { current = (n, length) }
    }

    /// Removes a pack file (compaction, after the index no longer names it).
    func remove(_ n: Int) throws {
        forget(n)
        try Posix.remove(path(n))
        try Posix.syncDirectory(directory)
    }

    /// The total size of the pack files.
    func totalBytes() throws -> Int64 {
        try numbers().reduce(Int64(0)) { $0 + ((try? Posix.info(path($1)).size) ?? 0) }
    }

    static func pwriteAll(_ f: FileDescriptor, _ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = Glibc.pwrite(f.raw, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
                if n >= 0 { done += n; continue }
                if errno == EINTR { continue }
                throw Posix.error("write", f.path)
            }
        }
    }
}
