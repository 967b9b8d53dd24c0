import Crypto
import Foundation

/// What a restore wrote.
public struct RestoreReport: Sendable, Equatable {
    /// Files written.
    public var files = 0
    /// Directories created.
    public var directories = 0
    /// Symbolic links created (their targets as stored).
    public var links = 0
    /// Bytes written.
    public var bytes: Int64 = 0
}

/// Reads content back from a ``ChunkStore``: walks manifests, verifies every chunk against its id,
/// opens key tables with the publisher's read key, decrypts, and writes files and directories with
/// their modes, and symbolic links with their targets as stored. Names are validated again before any
/// path is joined, so a forged manifest cannot write outside the output directory, and an existing
/// symlink in the way is refused, not followed. A link's *target* is restored as written, wherever it
/// points (as tar does): the reader creates links and never follows one.
public struct ContentReader: Sendable {
    /// The store read from.
    public let store: any ChunkStore
    /// The key that opens key tables: a publisher's read key, or one public content's key.
    public let readKey: SymmetricKey
    /// The metadata key of a content read with its own key (``SealedMetadata``): opens the
    /// manifests of a sealed private content. Nil when reading with a publisher's read key.
    public let metaKey: SymmetricKey?
    /// Called with the byte count of each chunk a restore writes (progress bars).
    public var onBytes: (@Sendable (Int) -> Void)? = nil

    /// Creates a reader of a publisher's content (its read key opens everything it put privately).
    public init(store: any ChunkStore, keys: PublisherKeys) {
        self.store = store
        self.readKey = keys.readKey
        self.metaKey = nil
    }

    /// Creates a reader with a given key: a public or shared content's own read key
    /// (``PublicKeyring``), or a sealed private content's content key (its manifests are opened
    /// with the metadata key derived from it).
    /// - Parameter readKey: 32 bytes.
    public init(store: any ChunkStore, readKey: [UInt8]) {
        self.store = store
        self.readKey = SymmetricKey(data: readKey)
        self.metaKey = readKey.count == 32 ? SealedMetadata.metaKey(contentKey: readKey) : nil
    }

    /// The decoded root manifest of `id` (for a sealed content, the manifest its index seals).
    public func manifest(_ id: ContentID) throws -> AnyManifest {
        try decode(store.read(id.manifest))
    }

    /// Decodes a manifest chunk: a manifest in the clear, a sealed content's index (opened to its
    /// root manifest), or a sealed manifest.
    private func decode(_ bytes: [UInt8]) throws -> AnyManifest {
        if SealedIndex.looksLike(bytes) {
            guard let metaKey else {
                throw ContentError(.decryptionFailed, "this is a sealed private content: its names and keys open only with its own content key, which travels wrapped for a reader (a ticket from `stoq share ID --reader FILE`); read it with `stoq get TICKET`")
            }
            let inner = try SealedMetadata.openRoot(try SealedIndex.decode(bytes), metaKey: metaKey)
            return try decode(SealedMetadata.openManifest(store.read(inner), metaKey: metaKey))
        }
        if bytes.starts(with: FileManifest.magic) || bytes.starts(with: DirectoryManifest.magic) || metaKey == nil {
            return try AnyManifest.decode(bytes)
        }
        return try AnyManifest.decode(SealedMetadata.openManifest(bytes, metaKey: metaKey!))
    }

    /// The plaintext bytes a restore of `id` writes: a file's size, or the total of a
    /// directory's files (links count nothing).
    public func plainSize(_ id: ContentID) throws -> UInt64 {
        switch try manifest(id) {
        case .file(let m): return m.totalSize
        case .directory(let d): return d.entries.reduce(UInt64(0)) { $0 &+ ($1.isLink ? 0 : $1.size) }
        }
    }

    /// Streams a file's plaintext in order.
    /// - Parameters:
    ///   - id: a file content id.
    ///   - body: receives each decrypted chunk.
    public func forEachChunk(ofFile id: ContentID, _ body: ([UInt8]) throws -> Void) throws {
        guard case .file(let m) = try manifest(id) else { throw ContentError(.invalidArgument, "\(id) is a directory, not a file") }
        try walk(m, depth: 0, body)
    }

    private func walk(_ m: FileManifest, depth: Int, _ body: ([UInt8]) throws -> Void) throws {
        guard depth < 8 else { throw ContentError(.malformed, "file manifest tree deeper than 8 levels") }
        switch m.kind {
        case .leaf:
            let ks = try KeyTable.open(m.sealedKeys, count: m.entries.count, readKey: readKey)
            for (e, k) in zip(m.entries, ks) {
                let stored = try store.read(e.id)
                try body(try ConvergentCipher.open(stored, key: k, expectedSize: Int(e.size)))
            }
        case .node:
            for e in m.entries {
                guard case .file(let sub) = try decode(store.read(e.id)) else {
                    throw ContentError(.malformed, "sub-manifest \(e.id.short) is not a file manifest")
                }
                guard sub.totalSize == e.size else {
                    throw ContentError(.malformed, "sub-manifest \(e.id.short) covers \(sub.totalSize) bytes, its parent says \(e.size)")
                }
                try walk(sub, depth: depth + 1, body)
            }
        }
    }

    /// A whole file in memory (tests, small files).
    public func readFile(_ id: ContentID) throws -> [UInt8] {
        var out = [UInt8]()
        try forEachChunk(ofFile: id) { out += $0 }
        return out
    }

    /// Restores `id` to `path`: a file is written there; a directory is created there (or merged into
    /// an existing directory) with its entries inside.
    /// - Throws: `.pathEscape` for a bad name or a symlink in the way, plus read/decrypt errors.
    public func restore(_ id: ContentID, to path: String, mode: UInt32? = nil) throws -> RestoreReport {
        var report = RestoreReport()
        try restore(id, to: path, mode: mode, depth: 0, report: &report)
        // Recording the access is for eviction policies only: a full disk must not fail a restore.
        try? store.touch([id.manifest], now: Int64(Date().timeIntervalSince1970))
        return report
    }

    private func restore(_ id: ContentID, to path: String, mode: UInt32?, depth: Int, report: inout RestoreReport) throws {
        guard depth < 256 else { throw ContentError(.malformed, "directories nested more than 256 deep") }
        if Posix.exists(path), try Posix.info(path).isSymlink {
            throw ContentError(.pathEscape, "\(path) is a symlink; refusing to write through it (it could point outside the output directory)")
        }
        switch try manifest(id) {
        case .file(let m):
            if Posix.exists(path), try Posix.info(path).isDirectory {
                throw ContentError(.invalidArgument, "\(path) is a directory; give a file path for a file content id")
            }
            try writeFile(m, to: path, mode: mode ?? 0o644)
            report.files += 1
            report.bytes += Int64(m.totalSize)
        case .directory(let d):
            try Posix.makeDirectory(path, mode: 0o700)
            report.directories += 1
            for e in d.entries {
                do { try DirectoryManifest.validate(name: e.name) } catch {
                    throw ContentError(.pathEscape, "entry name \(String(reflecting: e.name)) would escape \(path); refusing (forged manifest?)")
                }
                let child = path + "/" + e.name
                switch e.kind {
                case .file: try restore(e.id, to: child, mode: e.mode, depth: depth + 1, report: &report)
                case .directory: try restore(e.id, to: child, mode: e.mode, depth: depth + 1, report: &report)
                case .symlink:
                    guard let target = e.target else { throw ContentError(.malformed, "link entry \(String(reflecting: e.name)) has no target") }
                    try writeLink(target, at: child)
                    report.links += 1
                }
            }
            try Posix.chmod(path, mode ?? 0o755)
        }
    }

    /// Creates the link under a temporary name and renames it into place, so an existing file is
    /// replaced whole; an existing directory or link at `path` is refused, never written through.
    private func writeLink(_ target: String, at path: String) throws {
        if Posix.exists(path) {
            let info = try Posix.info(path)
            if info.isSymlink, (try? Posix.readLink(path)) == target { return }
            guard info.isRegular else {
                throw ContentError(.pathEscape, "\(path) already exists and is \(info.kindDescription); refusing to replace it with a link (restore into an empty directory)")
            }
        }
        let tmp = "\(Posix.parent(path))/.stoq-get-\(UInt64.random(in: 0...UInt64.max))"
        try Posix.symlink(target, at: tmp)
        guard rename(tmp, path) == 0 else {
            let e = Posix.error("rename", path)
            try? Posix.remove(tmp)
            throw e
        }
    }

    private func writeFile(_ m: FileManifest, to path: String, mode: UInt32) throws {
        let dir = Posix.parent(path)
        let tmp = "\(dir)/.stoq-get-\(UInt64.random(in: 0...UInt64.max))"
        let fd = try FileDescriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        var written: UInt64 = 0
        do {
            try walk(m, depth: 0) { chunk in
                try fd.writeAll(chunk)
                written += UInt64(chunk.count)
                onBytes?(chunk.count)
            }
            guard written == m.totalSize else { throw ContentError(.malformed, "restored \(written) bytes, manifest says \(m.totalSize)") }
            try fd.sync()
            fd.close()
            try Posix.chmod(tmp, mode)
            guard rename(tmp, path) == 0 else { throw Posix.error("rename", path) }
        } catch {
            fd.close()
            try? Posix.remove(tmp)
            throw error
        }
    }
}
