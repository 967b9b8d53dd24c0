import Crypto
import Foundation

/// One uploaded chunk sealed and written: what the store's metadata must record for it.
public struct StoredUploadChunk: Sendable, Hashable {
    /// The convergent tag (SHA-256 of the chunk key): the store's plaintext index key.
    public var tag: ChunkID
    /// The sealed chunk's id.
    public var id: ChunkID
    /// The sealed chunk's size.
    public var size: Int
    /// Whether its bytes were written now (false: the store held them already).
    public var written: Bool
}

extension ContentPublisher {
    /// The convergent tags of an upload's chunks (parallel to ``UploadTree/chunks``).
    public func tags(of tree: UploadTree) -> [ChunkID] {
        tree.chunks.map { ChunkID.of(cipher.chunkKey(plaintextHash: $0.hash)) }
    }

    /// The indices of the chunks of `tree` the store lacks (the first index of each distinct chunk),
    /// in order: what the origin asks the uploader for.
    /// - Parameter also: tags known to be stored though not yet committed (an upload in progress).
    public func missing(_ tree: UploadTree, also: Set<ChunkID> = []) throws -> [Int] {
        let tags = tags(of: tree)
        var out: [Int] = []
        var seen = Set<ChunkID>()
        for start in stride(from: 0, to: tags.count, by: 1000) {
            let slice = Array(tags[start..<min(start + 1000, tags.count)])
            let known = try store.lookupPlain(slice)
            for (k, tag) in slice.enumerated() where known[tag] == nil && !also.contains(tag) && seen.insert(tag).inserted {
                out.append(start + k)
            }
        }
        return out
    }

    /// Verifies one uploaded chunk against what the offer said (length and SHA-256 of the
    /// plaintext), seals it as a local put would (compressed unless its type is already
    /// compressed), and writes it to the store unless it is there. The caller records the result
    /// in the store's metadata (``commitUploaded(_:)``).
    /// - Throws: ``ContentError`` `.idMismatch` when the bytes are not the chunk offered.
    public func storeUploadedChunk(_ bytes: [UInt8], as expected: UploadChunk, contentType: String) throws -> StoredUploadChunk {
        guard bytes.count == expected.length else {
            throw ContentError(.idMismatch, "the chunk has \(bytes.count) bytes; the offer said \(expected.length)")
        }
        let hash = ChunkID.of(bytes)
        guard hash == expected.hash else {
            throw ContentError(.idMismatch, "the chunk's SHA-256 is not the one offered (\(hash.short) instead of \(expected.hash.short)); nothing was stored")
        }
        let compress = Self.compresses(contentType)
        let sealed = try bytes.withUnsafeBytes { try cipher.seal($0, plaintextHash: hash, tryCompression: compress) }
        let tag = ChunkID.of(cipher.chunkKey(plaintextHash: hash))
        if try store.contains(sealed.id) {
            return StoredUploadChunk(tag: tag, id: sealed.id, size: sealed.bytes.count, written: false)
        }
        try store.writeChunk(sealed.id, sealed.bytes)
        return StoredUploadChunk(tag: tag, id: sealed.id, size: sealed.bytes.count, written: true)
    }

    /// Records uploaded chunks in the store's metadata (chunk table and plaintext index), so a
    /// later offer finds them: an interrupted upload is not asked for them again.
    public func commitUploaded(_ chunks: [StoredUploadChunk]) throws {
        guard !chunks.isEmpty else { return }
        var batch = CommitBatch()
        for c in chunks {
            batch.chunks.append((c.id, c.size))
            batch.plainIndex.append((c.tag, c.id))
        }
        try store.commit(batch)
    }

    /// Whether a local put compresses chunks of this content type.
    static func compresses(_ type: String) -> Bool {
        !alreadyCompressed.contains(type) && !type.hasPrefix("image/") && !type.hasPrefix("video/") && !type.hasPrefix("audio/")
    }

    /// Builds and stores the manifests of an uploaded tree whose chunks are all stored, and pins
    /// it under `name`: the result is the content a local ``put(path:name:readKey:)`` of the same
    /// files gives (same id).
    /// - Parameter readKey: as for ``put(path:name:readKey:)`` (nil: private; a public content's own key).
    /// - Throws: ``ContentError`` `.notFound` when a chunk is not stored yet.
    public func putUploaded(_ tree: UploadTree, name: String, readKey: [UInt8]? = nil) throws -> PutReport {
        let tableKey: SymmetricKey
        if let readKey {
            guard readKey.count == 32 else { throw ContentError(.invalidArgument, "a content read key is 32 bytes, got \(readKey.count)") }
            tableKey = SymmetricKey(data: readKey)
        } else {
            tableKey = cipher.keys.readKey
        }
        let session = Session(store: store, tableKey: tableKey)
        let tags = tags(of: tree)
        var ids: [ChunkID: ChunkID] = [:]
        for start in stride(from: 0, to: tags.count, by: 1000) {
            let known = try store.lookupPlain(Array(tags[start..<min(start + 1000, tags.count)]))
            ids.merge(known) { a, _ in a }
        }
        var next = 0
        func file(_ f: UploadFile) throws -> PutReport {
            var report = PutReport(id: ContentID(ChunkID.of([UInt8]())))
            report.files = 1
            var entries: [FileManifest.Entry] = []
            var keys: [[UInt8]] = []
            var offset: UInt64 = 0
            for c in f.chunks {
                let tag = tags[next]
                next += 1
                guard let id = ids[tag] else {
                    throw ContentError(.notFound, "chunk \(next - 1) (\(c.hash.short)) of the upload is not stored yet; send it before the commit")
                }
                entries.append(.init(id: id, offset: offset, size: UInt64(c.length)))
                keys.append(cipher.chunkKey(plaintextHash: c.hash))
                offset += UInt64(c.length)
                report.bytes += Int64(c.length)
                report.chunks += 1
            }
            let root = try buildTree(entries: entries, keys: keys, contentType: f.contentType, total: offset, session: session, report: &report)
            report.id = ContentID(root)
            try session.maybeCommit()
            return report
        }
        func directory(_ es: [UploadEntry]) throws -> PutReport {
            var manifestEntries: [DirectoryManifest.Entry] = []
            var total = PutReport(id: ContentID(ChunkID.of([UInt8]())))
            var size: UInt64 = 0
            for e in es {
                let r: PutReport
                switch e.node {
                case .link(let target):
                    manifestEntries.append(.init(name: e.name, linkTo: target, mode: e.mode))
                    total.links += 1
                    continue
                case .directory(let children):
                    r = try directory(children)
                    manifestEntries.append(.init(name: e.name, mode: e.mode, kind: .directory, id: r.id, size: UInt64(r.bytes)))
                case .file(let f):
                    r = try file(f)
                    manifestEntries.append(.init(name: e.name, mode: e.mode, kind: .file, id: r.id, size: UInt64(r.bytes)))
                }
                size += UInt64(r.bytes)
                total.add(r)
            }
            total.id = try storeDirectoryManifest(manifestEntries, size: size, named: "", session: session, report: &total)
            return total
        }
        var report: PutReport
        switch tree.root {
        case .file(let f): report = try file(f)
        case .directory(let es): report = try directory(es)
        case .link: throw ContentError(.invalidArgument, "an upload's root is a file or a directory, not a link")
        }
        session.batch.pins.append((report.id, name))
        try session.commit()
        return report
    }
}
