import Crypto
import Foundation

/// The read keys of **public** contents, kept in a file: content id → the 32-byte key that seals the
/// key tables of that content (and of nothing else).
///
/// A public content (`stoq put --public`) is sealed with a key of its own, 32 random bytes drawn at
/// the put, instead of the publisher's read key (which opens everything the publisher ever put). An
/// origin hands that key to the nodes of its network that ask for it (`CONTENT_KEY`), so an edge can
/// decrypt that content for HTTP readers and nothing else of the publisher's. Private content keeps
/// its key tables sealed with the publisher's read key, which never leaves the publisher.
///
/// Two files use this layout: the publisher's keyring `public.keys` in its store directory (never
/// trimmed: a lost key makes its content unreadable for everyone but the publisher), and an edge's
/// `learnt-public.keys`, the keys it obtained from upstream, bounded by ``capacity`` (the oldest go
/// first; an edge asks again when it needs one it dropped).
///
/// **File layout.** Records of 64 bytes, `contentID:32 ‖ key:32`, appended in the order learnt; a
/// later record for the same content replaces an earlier one; a partial record at the end (a crash
/// during an append) is ignored. Mode 0600. Appends are `O_APPEND` writes of one record followed by
/// `fsync`, so a `stoq put --public` may append while a node reads the file: a node that misses a
/// key reads what was appended since it last looked.
///
/// `@unchecked Sendable`: every mutable field is behind `lock`.
public final class PublicKeyring: @unchecked Sendable {
    /// Bytes per record.
    public static let recordSize = 64
    /// The largest keyring file read (about 16 million keys); a larger one is refused.
    public static let maximumFileBytes = 1 << 30

    /// The publisher keyring's path in a store directory.
    public static func publisherPath(in directory: String) -> String { directory + "/public.keys" }
    /// The path of an edge's keys learnt from upstream, in its store directory.
    public static func learntPath(in directory: String) -> String { directory + "/learnt-public.keys" }

    /// A fresh public read key: 32 random bytes.
    public static func newKey() -> [UInt8] { SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) } }

    /// The file.
    public let path: String
    /// The most keys kept (nil: unbounded, the publisher's own keyring).
    public let capacity: Int?

    private let lock = NSLock()
    private var keys: [ContentID: [UInt8]] = [:]
    /// Content ids, oldest first (for the bound).
    private var order: [ContentID] = []
    /// Bytes of the file already read.
    private var loadedBytes = 0
    /// Records in the file (including superseded and evicted ones), to know when to compact.
    private var fileRecords = 0

    /// Opens (or starts) a keyring; a missing file is an empty keyring.
    /// - Throws: `.io` when the file exists but cannot be read, `.tooLarge` past ``maximumFileBytes``.
    public init(path: String, capacity: Int? = nil) throws {
        self.path = path
        self.capacity = capacity.map { max(1, $0) }
        try lock.withLock { try reloadLocked(full: true) }
    }

    /// The read key of `id` when it is public here, else nil. A miss first reads what another
    /// process appended since the last look.
    public func key(for id: ContentID) -> [UInt8]? {
        lock.withLock {
            if let key = keys[id] { return key }
            try? reloadLocked(full: false)
            return keys[id]
        }
    }

    /// Whether `id` is public here.
    public func contains(_ id: ContentID) -> Bool { key(for: id) != nil }

    /// Keys held now.
    public var count: Int { lock.withLock { keys.count } }

    /// Every content id held, oldest first.
    public var contents: [ContentID] { lock.withLock { order } }

    /// Records `key` for `id` durably (appended and synced before it returns).
    /// - Throws: `.invalidArgument` for a key that is not 32 bytes; `.io`/`.diskFull` on write errors.
    public func add(_ id: ContentID, key: [UInt8]) throws {
        guard key.count == 32 else { throw ContentError(.invalidArgument, "a public read key is 32 bytes, got \(key.count)") }
        try lock.withLock {
            try? reloadLocked(full: false)
            if keys[id] == key { return }
            let fd = try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode: 0o600)
            defer { fd.close() }
            try fd.writeAll(id.manifest.bytes + key)
            try fd.sync()
            loadedBytes += Self.recordSize
            fileRecords += 1
            insertLocked(id, key)
            if let capacity, fileRecords > 2 * capacity { try compactLocked() }
        }
    }

    private func insertLocked(_ id: ContentID, _ key: [UInt8]) {
        if keys.updateValue(key, forKey: id) == nil {
            order.append(id)
        }
        if let capacity, order.count > capacity {
            let drop = order.count - capacity
            for old in order.prefix(drop) { keys[old] = nil }
            order.removeFirst(drop)
        }
    }

    /// Reads the file (whole, or what was appended since the last read).
    private func reloadLocked(full: Bool) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT { if full { keys = [:]; order = []; loadedBytes = 0; fileRecords = 0 }; return }
            throw Posix.error("stat", path)
        }
        let size = Int(st.st_size)
        guard size <= Self.maximumFileBytes else {
            throw ContentError(.tooLarge, "\(path) is \(size) bytes, more than a keyring may be (\(Self.maximumFileBytes)); is it the right file?")
        }
        let whole = full || size < loadedBytes
        let start = whole ? 0 : loadedBytes
        let usable = size - size % Self.recordSize
        guard usable > start else { return }
        let fd = try FileDescriptor.open(path, flags: O_RDONLY | O_CLOEXEC)
        defer { fd.close() }
        let bytes = try fd.pread(count: usable - start, at: Int64(start))
        if whole { keys = [:]; order = []; fileRecords = 0 }
        var offset = 0
        while offset + Self.recordSize <= bytes.count {
            if let chunk = ChunkID(bytes: Array(bytes[offset..<(offset + 32)])) {
                insertLocked(ContentID(chunk), Array(bytes[(offset + 32)..<(offset + 64)]))
            }
            offset += Self.recordSize
            fileRecords += 1
        }
        loadedBytes = start + offset
    }

    /// Rewrites the file with the keys held now (a bounded keyring after many evictions).
    private func compactLocked() throws {
        var out = [UInt8]()
        out.reserveCapacity(order.count * Self.recordSize)
        for id in order { if let key = keys[id] { out += id.manifest.bytes + key } }
        try out.withUnsafeBytes { try Posix.writeFileAtomically(path, $0, mode: 0o600) }
        loadedBytes = out.count
        fileRecords = order.count
    }
}
