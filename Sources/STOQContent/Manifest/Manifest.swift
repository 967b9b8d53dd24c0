import Crypto

/// Merkle root over chunk ids: leaves `SHA-256(0x00 ‖ id)`, nodes `SHA-256(0x01 ‖ left ‖ right)`,
/// an odd node promoted unchanged; the root of no ids is `SHA-256("")`.
public enum Merkle {
    /// The root over `ids`.
    public static func root(_ ids: [ChunkID]) -> ChunkID {
        if ids.isEmpty { return ChunkID.of([UInt8]()) }
        var level = ids.map { ChunkID.of([0] + $0.bytes) }
        while level.count > 1 {
            var next = [ChunkID]()
            next.reserveCapacity((level.count + 1) / 2)
            var i = 0
            while i + 1 < level.count {
                next.append(ChunkID.of([1] + level[i].bytes + level[i + 1].bytes))
                i += 2
            }
            if i < level.count { next.append(level[i]) }
            level = next
        }
        return level[0]
    }
}

/// A file manifest (one node of a file's manifest tree).
///
/// Binary layout, big-endian (version 1):
/// ```
/// "STQM" | version u8 = 1 | kind u8 (1 = leaf: entries are chunks, 2 = node: entries are manifests)
/// content-type length u8 (≤ 127) | content type (printable ASCII)
/// total size u64 | entry count u32 (1...65536, 0 only for an empty file) | Merkle root (32)
/// entries: id (32) | offset u64 | size (leaf: u32 ≤ 16 MiB; node: u64)
/// leaf only: key-table length u32 | key table (see ``KeyTable``; 28 + 32·count bytes)
/// ```
/// Offsets must start at 0 and be contiguous, sizes positive, their sum the total size, and the
/// Merkle root must match the ids; nothing may follow. The manifest is stored as a chunk and its
/// SHA-256 is the content id.
public struct FileManifest: Sendable, Equatable {
    /// The kind of node.
    public enum Kind: UInt8, Sendable { case leaf = 1, node = 2 }
    /// One entry: a chunk (leaf) or a sub-manifest (node) covering `offset ..< offset + size`.
    public struct Entry: Sendable, Equatable {
        /// Stored id (ciphertext chunk or sub-manifest).
        public var id: ChunkID
        /// Offset in the file.
        public var offset: UInt64
        /// Plaintext bytes covered.
        public var size: UInt64
        /// Creates an entry.
        public init(id: ChunkID, offset: UInt64, size: UInt64) { self.id = id; self.offset = offset; self.size = size }
    }

    /// Leaf or node.
    public var kind: Kind
    /// MIME type (may be empty on inner nodes).
    public var contentType: String
    /// File size in bytes.
    public var totalSize: UInt64
    /// Entries in file order.
    public var entries: [Entry]
    /// Sealed key table (leaf only).
    public var sealedKeys: [UInt8]

    /// Magic bytes.
    public static let magic: [UInt8] = Array("STQM".utf8)
    /// Format version written.
    public static let version: UInt8 = 1
    /// The most entries one manifest may hold.
    public static let maxEntries = 65536
    /// Entries per leaf and per node when building a tree (keeps each manifest well under 1 MiB).
    public static let defaultFanout = 8192

    /// Creates a manifest.
    public init(kind: Kind, contentType: String, totalSize: UInt64, entries: [Entry], sealedKeys: [UInt8] = []) {
        self.kind = kind
        self.contentType = contentType
        self.totalSize = totalSize
        self.entries = entries
        self.sealedKeys = sealedKeys
    }

    /// The Merkle root over the entry ids.
    public var merkleRoot: ChunkID { Merkle.root(entries.map(\.id)) }

    /// Encodes the manifest.
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic); w.u8(Self.version); w.u8(kind.rawValue)
        let ct = Array(contentType.utf8.prefix(127))
        w.u8(UInt8(ct.count)); w.raw(ct)
        w.u64(totalSize); w.u32(UInt32(entries.count)); w.id(merkleRoot)
        for e in entries {
            w.id(e.id); w.u64(e.offset)
            if kind == .leaf { w.u32(UInt32(e.size)) } else { w.u64(e.size) }
        }
        if kind == .leaf { w.u32(UInt32(sealedKeys.count)); w.raw(sealedKeys) }
        return w.bytes
    }

    /// Decodes and validates a manifest; safe on arbitrary bytes.
    /// - Throws: ``ContentError`` `.malformed` (with the reason and byte position) or `.unsupportedVersion`.
    public static func decode(_ bytes: [UInt8]) throws -> FileManifest {
        var r = ByteReader(bytes, what: "file manifest")
        guard Array(try r.raw(4)) == magic else { throw r.fail("bad magic (not a STOQ file manifest)") }
        let version = try r.u8()
        guard version == 1 else { throw ContentError(.unsupportedVersion, "file manifest version \(version); this build reads version 1 — upgrade stoq") }
        guard let kind = Kind(rawValue: try r.u8()) else { throw r.fail("unknown manifest kind") }
        let ctLen = Int(try r.u8())
        guard ctLen <= 127 else { throw r.fail("content type longer than 127 bytes") }
        let ctBytes = try r.raw(ctLen)
        guard ctBytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { throw r.fail("content type is not printable ASCII") }
        let total = try r.u64()
        let count = Int(try r.u32())
        guard count <= maxEntries else { throw r.fail("\(count) entries, more than the limit \(maxEntries)") }
        guard count > 0 || total == 0 else { throw r.fail("no entries for a non-empty file") }
        let entrySize = kind == .leaf ? 44 : 48
        try r.need(32 + count * entrySize)
        let root = try r.id()
        var entries = [Entry]()
        entries.reserveCapacity(count)
        var expected: UInt64 = 0
        for i in 0..<count {
            let id = try r.id()
            let offset = try r.u64()
            let size = kind == .leaf ? UInt64(try r.u32()) : try r.u64()
            guard size > 0, kind == .node || size <= UInt64(FastCDC.maximumMaxSize) else { throw r.fail("entry \(i) has size \(size)") }
            guard offset == expected else { throw r.fail("entry \(i) starts at \(offset), expected \(expected) (entries must be contiguous)") }
            let (sum, overflow) = expected.addingReportingOverflow(size)
            guard !overflow, sum <= total else { throw r.fail("entries exceed the total size \(total)") }
            expected = sum
            entries.append(Entry(id: id, offset: offset, size: size))
        }
        guard expected == total else { throw r.fail("entries cover \(expected) bytes, total size says \(total)") }
        var sealed = [UInt8]()
        if kind == .leaf {
            let n = Int(try r.u32())
            guard n == 28 + 32 * count || (count == 0 && n == 0) else { throw r.fail("key table of \(n) bytes for \(count) entries") }
            sealed = Array(try r.raw(n))
        }
        try r.end()
        let m = FileManifest(kind: kind, contentType: String(decoding: ctBytes, as: UTF8.self), totalSize: total, entries: entries, sealedKeys: sealed)
        guard m.merkleRoot == root else { throw r.fail("Merkle root does not match the entries (forged or damaged manifest)") }
        return m
    }
}

/// A directory manifest: sorted, unique entries (name, mode, kind, and the content id and size of a
/// file or directory, or the target of a symbolic link).
///
/// Layout, big-endian: `"STQD" | version u8 | count u32 (≤ 65536) | Merkle root (32)` then per entry
/// `name length u16 (1...255) | name (UTF-8) | mode u32 (≤ 0o7777) | kind u8` followed by
/// - kind 1 (file) or 2 (directory): `content id (32) | size u64`;
/// - kind 3 (symbolic link, version 2 only): `target length u16 (1...4095) | target (UTF-8, no NUL)`.
///
/// Version 1 has file and directory entries only; version 2 is written exactly when at least one
/// entry is a link (a version 2 manifest without a link is refused, so each tree has one encoding and
/// trees without links keep the ids and the format older readers know). The Merkle root is over the
/// entries' ids in order, where a link's id is SHA-256 of its target bytes. Names may not be empty,
/// ".", "..", or contain "/" or NUL, and must be strictly increasing bytewise; nothing may follow.
/// A link's target is kept as written: it may be absolute or climb with "..", like tar; the reader
/// creates the link and never follows it.
public struct DirectoryManifest: Sendable, Equatable {
    /// The kind of a directory entry.
    public enum EntryKind: UInt8, Sendable {
        /// A regular file (its id is a file manifest).
        case file = 1
        /// A directory (its id is a directory manifest).
        case directory = 2
        /// A symbolic link (its target is in the entry; its id is SHA-256 of the target, not a chunk).
        case symlink = 3
    }
    /// One entry.
    public struct Entry: Sendable, Equatable {
        /// File name (validated).
        public var name: String
        /// Permission bits (0o7777 at most; a link's are not restored, Linux has none of its own).
        public var mode: UInt32
        /// File, directory or link.
        public var kind: EntryKind
        /// The entry's content id; for a link, SHA-256 of its target (nothing to fetch: see ``isLink``).
        public var id: ContentID
        /// Bytes (file size, or the total of a subtree; 0 for a link).
        public var size: UInt64
        /// A link's target as written (nil for files and directories).
        public var target: String?
        /// Whether this entry is a symbolic link (it references no chunk).
        public var isLink: Bool { kind == .symlink }

        /// Creates a file or directory entry.
        public init(name: String, mode: UInt32, kind: EntryKind, id: ContentID, size: UInt64) {
            self.name = name; self.mode = mode; self.kind = kind; self.id = id; self.size = size; self.target = nil
        }

        /// Creates a symbolic-link entry.
        /// - Parameters:
        ///   - name: the link's name in its directory.
        ///   - target: what the link points at, as written (validated by ``DirectoryManifest/validate(target:)``).
        ///   - mode: the link's permission bits as `lstat` gave them (kept, never applied).
        public init(name: String, linkTo target: String, mode: UInt32 = 0o777) {
            self.name = name; self.mode = mode; self.kind = .symlink
            self.id = ContentID(ChunkID.of(Array(target.utf8))); self.size = 0; self.target = target
        }
    }

    /// Entries sorted by name.
    public var entries: [Entry]
    /// Magic bytes.
    public static let magic: [UInt8] = Array("STQD".utf8)
    /// The longest link target accepted (PATH_MAX − 1 on Linux).
    public static let maxTargetLength = 4095

    /// Creates a manifest; entries are sorted by name, names and link targets validated.
    /// - Throws: ``ContentError/Code/invalidName`` for a bad or duplicate name or a bad link target.
    public init(entries: [Entry]) throws {
        let sorted = entries.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
        for (i, e) in sorted.enumerated() {
            try Self.validate(name: e.name)
            if i > 0 && sorted[i - 1].name == e.name { throw ContentError(.invalidName, "duplicate name \"\(e.name)\"") }
            guard (e.kind == .symlink) == (e.target != nil) else {
                throw ContentError(.invalidArgument, "entry \(String(reflecting: e.name)): a link entry needs a target and only a link has one")
            }
            if let t = e.target {
                try Self.validate(target: t)
                guard e.id.manifest == ChunkID.of(Array(t.utf8)), e.size == 0 else {
                    throw ContentError(.invalidArgument, "link entry \(String(reflecting: e.name)): build it with Entry(name:linkTo:)")
                }
            }
            guard e.mode <= 0o7777 else { throw ContentError(.invalidArgument, "entry \(String(reflecting: e.name)): mode \(String(e.mode, radix: 8)) has bits beyond 0o7777") }
        }
        self.entries = sorted
    }

    /// Checks a name: 1...255 bytes, not "." or "..", no "/" or NUL.
    public static func validate(name: String) throws {
        let u = Array(name.utf8)
        guard !u.isEmpty, u.count <= 255, name != ".", name != "..", !u.contains(0x2F), !u.contains(0) else {
            throw ContentError(.invalidName, "invalid entry name \(String(reflecting: name)): names are 1...255 bytes, not \".\" or \"..\", without \"/\" or NUL")
        }
    }

    /// Checks a link target: 1...4095 bytes of UTF-8 without NUL (it may be absolute or contain "..").
    public static func validate(target: String) throws {
        let u = Array(target.utf8)
        guard !u.isEmpty, u.count <= maxTargetLength, !u.contains(0) else {
            throw ContentError(.invalidName, "invalid link target \(String(reflecting: target)): targets are 1...\(maxTargetLength) bytes without NUL")
        }
    }

    /// The format version this manifest is written in: 2 when it holds a link, else 1.
    public var version: UInt8 { entries.contains(where: \.isLink) ? 2 : 1 }

    /// Encodes.
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic); w.u8(version); w.u32(UInt32(entries.count)); w.id(Merkle.root(entries.map(\.id.manifest)))
        for e in entries {
            let n = Array(e.name.utf8)
            w.u16(UInt16(n.count)); w.raw(n); w.u32(e.mode); w.u8(e.kind.rawValue)
            if let t = e.target {
                let tb = Array(t.utf8)
                w.u16(UInt16(tb.count)); w.raw(tb)
            } else {
                w.id(e.id.manifest); w.u64(e.size)
            }
        }
        return w.bytes
    }

    /// Decodes and validates; safe on arbitrary bytes. Reads versions 1 and 2.
    public static func decode(_ bytes: [UInt8]) throws -> DirectoryManifest {
        var r = ByteReader(bytes, what: "directory manifest")
        guard Array(try r.raw(4)) == magic else { throw r.fail("bad magic (not a STOQ directory manifest)") }
        let version = try r.u8()
        guard version == 1 || version == 2 else {
            throw ContentError(.unsupportedVersion, "directory manifest version \(version); this build reads versions 1 and 2 — upgrade stoq")
        }
        let count = Int(try r.u32())
        guard count <= FileManifest.maxEntries else { throw r.fail("\(count) entries, more than the limit") }
        // The smallest entry (a one-byte name and a one-byte link target) is 10 bytes: bound the count
        // by the bytes present before reserving anything.
        try r.need(32 + count * (version == 1 ? 48 : 10))
        let root = try r.id()
        var entries = [Entry]()
        entries.reserveCapacity(count)
        var previous: [UInt8]? = nil
        for _ in 0..<count {
            let n = Int(try r.u16())
            guard (1...255).contains(n) else { throw r.fail("name length \(n)") }
            let nameBytes = Array(try r.raw(n))
            guard let name = String(validating: nameBytes, as: UTF8.self) else { throw r.fail("name is not UTF-8") }
            do { try validate(name: name) } catch let e as ContentError { throw ContentError(.invalidName, "directory manifest: \(e.reason)") }
            if let p = previous, !p.lexicographicallyPrecedes(nameBytes) { throw r.fail("names not strictly sorted") }
            previous = nameBytes
            let mode = try r.u32()
            guard mode <= 0o7777 else { throw r.fail("mode \(String(mode, radix: 8)) has bits beyond 0o7777") }
            guard let kind = EntryKind(rawValue: try r.u8()) else { throw r.fail("unknown entry kind") }
            switch kind {
            case .file, .directory:
                let id = ContentID(try r.id())
                let size = try r.u64()
                entries.append(Entry(name: name, mode: mode, kind: kind, id: id, size: size))
            case .symlink:
                guard version >= 2 else { throw r.fail("a link entry in a version 1 manifest (links need version 2)") }
                let t = Int(try r.u16())
                guard (1...maxTargetLength).contains(t) else { throw r.fail("link target length \(t)") }
                let targetBytes = Array(try r.raw(t))
                guard !targetBytes.contains(0), let target = String(validating: targetBytes, as: UTF8.self) else {
                    throw r.fail("link target is not UTF-8 without NUL")
                }
                entries.append(Entry(name: name, linkTo: target, mode: mode))
            }
        }
        try r.end()
        if version == 2 && !entries.contains(where: \.isLink) { throw r.fail("version 2 without a link entry (such a directory is written as version 1)") }
        guard Merkle.root(entries.map(\.id.manifest)) == root else { throw r.fail("Merkle root does not match the entries") }
        var m = try DirectoryManifest(entries: [])
        m.entries = entries
        return m
    }
}

/// Either kind of manifest, decoded by its magic.
public enum AnyManifest: Sendable, Equatable {
    /// A file (leaf or node).
    case file(FileManifest)
    /// A directory.
    case directory(DirectoryManifest)

    /// Decodes by magic; safe on arbitrary bytes.
    public static func decode(_ bytes: [UInt8]) throws -> AnyManifest {
        if bytes.starts(with: DirectoryManifest.magic) { return .directory(try DirectoryManifest.decode(bytes)) }
        return .file(try FileManifest.decode(bytes))
    }

    /// The fuzz entry point: decodes arbitrary bytes, must never crash, and re-encodes whatever
    /// decodes to check the encoding is canonical.
    public static func fuzz(_ data: [UInt8]) {
        guard let m = try? decode(data) else { return }
        switch m {
        case .file(let f): precondition(f.encode() == data, "file manifest encoding is not canonical")
        case .directory(let d): precondition(d.encode() == data, "directory manifest encoding is not canonical")
        }
    }

    /// Ids of the chunks this manifest references directly (chunks, sub-manifests, or entries'
    /// manifests; a link entry references none).
    public var children: [ChunkID] {
        switch self {
        case .file(let f): return f.entries.map(\.id)
        case .directory(let d): return d.entries.filter { !$0.isLink }.map(\.id.manifest)
        }
    }
}
