import Crypto
import Foundation

/// One chunk of an uploaded file: the SHA-256 of its plaintext and its length.
public struct UploadChunk: Hashable, Sendable {
    /// SHA-256 of the chunk's plaintext bytes.
    public var hash: ChunkID
    /// Its length in bytes (1 to ``UploadTree/maximumChunkLength``).
    public var length: Int
    /// Creates a chunk description.
    public init(hash: ChunkID, length: Int) {
        self.hash = hash
        self.length = length
    }
}

/// A file of an upload: its content type (which decides compression, as in a local put) and its
/// chunks in order, as the uploader's chunker cut them.
public struct UploadFile: Hashable, Sendable {
    /// The MIME type (at most 255 bytes).
    public var contentType: String
    /// The chunks in file order.
    public var chunks: [UploadChunk]
    /// Creates a file description.
    public init(contentType: String, chunks: [UploadChunk]) {
        self.contentType = contentType
        self.chunks = chunks
    }
    /// The file's size: the sum of its chunk lengths.
    public var size: UInt64 { chunks.reduce(0) { $0 + UInt64($1.length) } }
}

/// A node of an uploaded tree.
public indirect enum UploadNode: Hashable, Sendable {
    /// A regular file.
    case file(UploadFile)
    /// A directory and its entries (names unique, in the order given).
    case directory([UploadEntry])
    /// A symbolic link, stored as written (never followed).
    case link(target: String)
}

/// A named entry of an uploaded directory.
public struct UploadEntry: Hashable, Sendable {
    /// The entry's name (``DirectoryManifest/validate(name:)``).
    public var name: String
    /// Permission bits (0o7777 at most).
    public var mode: UInt32
    /// What it is.
    public var node: UploadNode
    /// Creates an entry.
    public init(name: String, mode: UInt32, node: UploadNode) {
        self.name = name
        self.mode = mode
        self.node = node
    }
}

/// What an uploader offers an origin (UPLOAD_OFFER, docs/PROTOCOL.md "Uploading content"): the shape
/// of a file or directory and, for every file, the SHA-256 and length of each plaintext chunk. The
/// origin seals and stores the chunks with its own publisher key, so an uploaded content is the
/// same as one put locally on the origin (same ids, same keys, same readers).
///
/// Encoding (big-endian): a node is `kind:u8` then, for a file (0), `typeLength:u16 type
/// chunkCount:u32 (hash:bytes32 length:u32)*`; for a directory (1), `entryCount:u32 (nameLength:u16
/// name mode:u32 node)*`; for a link (2), `targetLength:u16 target`. The root is a file or a
/// directory. Every bound below is checked while decoding, before anything is allocated for it.
public struct UploadTree: Hashable, Sendable {
    /// The most chunks an upload holds (at the default 16 KiB average, 2 GiB).
    public static let maximumChunks = 131_072
    /// The most entries (files, directories, links) an upload holds.
    public static let maximumEntries = 65_536
    /// The deepest directory nesting.
    public static let maximumDepth = 64
    /// The largest chunk (the chunking policy's maximum).
    public static let maximumChunkLength = ChunkingPolicy.standard.maxSize
    /// The longest content type.
    public static let maximumContentTypeLength = 255
    /// The longest encoding.
    public static let maximumEncodedLength = 8 << 20

    /// The root: a file or a directory.
    public let root: UploadNode
    /// Every chunk of the tree, in encoding order (the indices UPLOAD_NEED and UPLOAD_CHUNK use).
    public let chunks: [UploadChunk]
    /// The content type of the file each chunk belongs to, parallel to ``chunks``.
    public let chunkTypes: [String]
    /// Plaintext bytes of all files.
    public let bytes: Int64

    /// Wraps a root, checking every bound.
    /// - Throws: ``ContentError`` `.invalidArgument`/`.tooLarge` for a tree out of bounds.
    public init(root: UploadNode) throws {
        if case .link = root { throw ContentError(.invalidArgument, "an upload's root is a file or a directory, not a link") }
        var chunks: [UploadChunk] = [], types: [String] = [], entries = 0, bytes: Int64 = 0
        func walk(_ node: UploadNode, depth: Int) throws {
            guard depth <= Self.maximumDepth else { throw ContentError(.tooLarge, "directories nested more than \(Self.maximumDepth) deep") }
            switch node {
            case .file(let f):
                guard f.contentType.utf8.count <= Self.maximumContentTypeLength else { throw ContentError(.tooLarge, "a content type longer than 255 bytes") }
                guard chunks.count + f.chunks.count <= Self.maximumChunks else {
                    throw ContentError(.tooLarge, "more than \(Self.maximumChunks) chunks in one upload; upload the parts separately")
                }
                for c in f.chunks {
                    guard (1...Self.maximumChunkLength).contains(c.length) else {
                        throw ContentError(.invalidArgument, "a chunk of \(c.length) bytes; chunks are 1 to \(Self.maximumChunkLength) bytes")
                    }
                    chunks.append(c)
                    types.append(f.contentType)
                    bytes += Int64(c.length)
                }
            case .directory(let es):
                var names = Set<String>()
                for e in es {
                    entries += 1
                    guard entries <= Self.maximumEntries else { throw ContentError(.tooLarge, "more than \(Self.maximumEntries) entries in one upload") }
                    try DirectoryManifest.validate(name: e.name)
                    guard names.insert(e.name).inserted else { throw ContentError(.invalidName, "the name \(e.name) appears twice in one directory") }
                    guard e.mode <= 0o7777 else { throw ContentError(.invalidArgument, "mode \(String(e.mode, radix: 8)) of \(e.name) is above 7777") }
                    try walk(e.node, depth: depth + 1)
                }
            case .link(let target):
                try DirectoryManifest.validate(target: target)
            }
        }
        try walk(root, depth: 0)
        self.root = root
        self.chunks = chunks
        self.chunkTypes = types
        self.bytes = bytes
    }

    /// The encoding (see the type's documentation).
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        func string(_ s: String) { let u = Array(s.utf8); w.u16(UInt16(u.count)); w.raw(u) }
        func node(_ n: UploadNode) {
            switch n {
            case .file(let f):
                w.u8(0)
                string(f.contentType)
                w.u32(UInt32(f.chunks.count))
                for c in f.chunks { w.id(c.hash); w.u32(UInt32(c.length)) }
            case .directory(let es):
                w.u8(1)
                w.u32(UInt32(es.count))
                for e in es { string(e.name); w.u32(e.mode); node(e.node) }
            case .link(let target):
                w.u8(2)
                string(target)
            }
        }
        node(root)
        return w.bytes
    }

    /// Decodes an offer's tree, refusing anything out of bounds before allocating for it.
    /// - Throws: ``ContentError`` `.malformed`, `.tooLarge`, `.invalidName`, `.invalidArgument`.
    public static func decode(_ bytes: [UInt8]) throws -> UploadTree {
        guard bytes.count <= maximumEncodedLength else { throw ContentError(.tooLarge, "an upload offer of \(bytes.count) bytes; the limit is \(maximumEncodedLength)") }
        var r = ByteReader(bytes, what: "upload offer")
        var chunks = 0, entries = 0
        func string(_ max: Int, _ what: String) throws -> String {
            let n = Int(try r.u16())
            guard n <= max else { throw r.fail("\(what) of \(n) bytes (limit \(max))") }
            guard let s = String(validating: try r.raw(n), as: UTF8.self) else { throw r.fail("\(what) is not UTF-8") }
            return s
        }
        func node(depth: Int) throws -> UploadNode {
            guard depth <= maximumDepth else { throw ContentError(.tooLarge, "upload offer: directories nested more than \(maximumDepth) deep") }
            switch try r.u8() {
            case 0:
                let type = try string(maximumContentTypeLength, "content type")
                let count = Int(try r.u32())
                guard count <= maximumChunks - chunks else { throw ContentError(.tooLarge, "upload offer: more than \(maximumChunks) chunks") }
                try r.need(count * 36)
                chunks += count
                var list: [UploadChunk] = []
                list.reserveCapacity(count)
                for _ in 0..<count {
                    let id = try r.id()
                    let length = Int(try r.u32())
                    guard (1...maximumChunkLength).contains(length) else { throw r.fail("a chunk of \(length) bytes (1 to \(maximumChunkLength))") }
                    list.append(UploadChunk(hash: id, length: length))
                }
                return .file(UploadFile(contentType: type, chunks: list))
            case 1:
                let count = Int(try r.u32())
                guard count <= maximumEntries - entries else { throw ContentError(.tooLarge, "upload offer: more than \(maximumEntries) entries") }
                try r.need(count * 7)
                entries += count
                var list: [UploadEntry] = []
                for _ in 0..<count {
                    let name = try string(255, "entry name")
                    let mode = try r.u32()
                    list.append(UploadEntry(name: name, mode: mode, node: try node(depth: depth + 1)))
                }
                return .directory(list)
            case 2:
                return .link(target: try string(DirectoryManifest.maxTargetLength, "link target"))
            case let k:
                throw r.fail("unknown node kind \(k)")
            }
        }
        let root = try node(depth: 0)
        try r.end()
        return try UploadTree(root: root)
    }

    /// Fuzz entry point: whatever decodes must encode to the same bytes.
    public static func fuzz(_ bytes: [UInt8]) {
        guard let tree = try? decode(bytes) else { return }
        precondition(tree.encode() == bytes, "an upload tree did not survive a round trip")
    }
}

/// Where the bytes of each chunk of a scanned tree are: a file and a range of it.
public struct UploadChunkSource: Sendable, Hashable {
    /// The file's path.
    public var path: String
    /// Offset of the chunk in it.
    public var offset: Int64
    /// Its length.
    public var length: Int
}

/// The result of ``UploadTree/scan(path:policy:workers:)``.
public struct UploadScan: Sendable {
    /// The tree to offer.
    public var tree: UploadTree
    /// Where each chunk's bytes are, parallel to ``UploadTree/chunks``.
    public var sources: [UploadChunkSource]
    /// Entries skipped (FIFOs, sockets, devices, names or link targets STOQ cannot store).
    public var skipped: [String]
}

extension UploadTree {
    /// Chunks a file or directory the way ``ContentPublisher`` does (same policy, same walk), without
    /// storing anything: the uploader's half of a put into a running origin.
    /// - Throws: ``ContentError`` for a path that is neither a file nor a directory, or a tree out of bounds.
    public static func scan(path: String, policy: ChunkingPolicy = .standard, workers: Int = 0) throws -> UploadScan {
        let buffers = SegmentBufferPool()
        var sources: [UploadChunkSource] = []
        var skipped: [String] = []
        func file(_ p: String) throws -> UploadFile {
            let source = try FileSource(path: p)
            let head = try source.read(at: 0, count: 512)
            let type = ContentType.guess(name: p, head: head)
            let chunker = try policy.chunker(for: type)
            var chunks: [UploadChunk] = []
            try ChunkStreamer(chunker: chunker, workers: workers, buffers: buffers).forEachBatch(source) { batch in
                for r in batch.records {
                    chunks.append(UploadChunk(hash: r.hash!, length: r.length))
                    sources.append(UploadChunkSource(path: p, offset: r.offset, length: r.length))
                }
            }
            return UploadFile(contentType: type, chunks: chunks)
        }
        func directory(_ p: String, depth: Int) throws -> [UploadEntry] {
            guard depth < maximumDepth else { throw ContentError(.tooLarge, "\(p): directories nested more than \(maximumDepth) deep") }
            var entries: [UploadEntry] = []
            for name in try Posix.listDirectory(p) {
                let child = p.hasSuffix("/") ? p + name : p + "/" + name
                let info = try Posix.info(child)
                do { try DirectoryManifest.validate(name: name) } catch { skipped.append(child); continue }
                if info.isSymlink {
                    guard let target = try? Posix.readLink(child), (try? DirectoryManifest.validate(target: target)) != nil else {
                        skipped.append(child); continue
                    }
                    entries.append(UploadEntry(name: name, mode: info.mode, node: .link(target: target)))
                } else if info.isDirectory {
                    entries.append(UploadEntry(name: name, mode: info.mode, node: .directory(try directory(child, depth: depth + 1))))
                } else if info.isRegular {
                    entries.append(UploadEntry(name: name, mode: info.mode, node: .file(try file(child))))
                } else {
                    skipped.append(child)
                }
            }
            return entries
        }
        let info = try Posix.info(path, followLinks: true)
        let root: UploadNode
        if info.isDirectory {
            root = .directory(try directory(path, depth: 0))
        } else if info.isRegular {
            root = .file(try file(path))
        } else {
            throw ContentError(.invalidArgument, "\(path) is \(info.kindDescription), not a regular file or a directory; stoq stores only files, directories and the links inside them")
        }
        return UploadScan(tree: try UploadTree(root: root), sources: sources, skipped: skipped)
    }
}
