import Foundation
import NIOCore
import STOQContent
import STOQExchange
import STOQWire

/// One sealed upload in progress (UPLOAD_OFFER with flag bit 1; docs/PROTOCOL.md, "Uploading a
/// sealed content"): the uploader sealed the content itself, so the origin stores its chunks as
/// given (each checked against its SHA-256 id) and learns no name, type or key.
struct SealedUpload {
    let owner: ObjectIdentifier
    let name: String
    let index: SealedIndex
    let indexBytes: [UInt8]
    var needed: Set<Int>
    var inFlight: Set<Int> = []
    var received = 0
    /// Bytes of the chunks received in this upload.
    var receivedBytes: Int64 = 0
    var lastActivity: ContinuousClock.Instant
    /// When it was offered.
    let opened: ContinuousClock.Instant = .now
}

/// The most sealed uploads open at once on an origin (the oldest idle one is dropped beyond it).
let maximumOpenSealedUploads = 64
/// How long a sealed upload may stay idle before it is dropped.
let sealedUploadIdle: Duration = .seconds(600)

extension UploadCoordinator {
    /// Opens a sealed upload of the content whose root sealed index is `indexBytes`.
    /// - Returns: the upload id and the indices (into the index's entries) of the chunks the store lacks.
    /// - Throws: ``UploadRefusal`` for an index that does not decode, has no sealed root, or has
    ///   inner indexes (a content of more than 65,536 chunks: not uploadable this way yet).
    public func offerSealed(owner: ObjectIdentifier, indexBytes: [UInt8], name: String) throws(UploadRefusal) -> (id: UInt64, needed: [Int]) {
        let index: SealedIndex
        do { index = try SealedIndex.decode(indexBytes) } catch {
            throw UploadRefusal(UploadProtocol.badRequest, "a sealed upload offers its root sealed index (STQE); this one does not decode: \((error as? ContentError)?.reason ?? "\(error)")")
        }
        guard index.sealedRoot.count == SealedIndex.sealedRootLength else {
            throw UploadRefusal(UploadProtocol.badRequest, "the offered sealed index has no sealed root: offer the content's root index, not an inner one")
        }
        guard index.entries.allSatisfy({ $0.kind == .chunk }) else {
            throw UploadRefusal(UploadProtocol.badRequest, "the sealed content has inner indexes (more than 65,536 chunks); uploading it is not supported yet: put it into the origin's store directly")
        }
        dropIdleSealedUploads()
        guard sealedUploads.count < maximumOpenSealedUploads else {
            throw UploadRefusal(UploadProtocol.badRequest, "the origin has \(maximumOpenSealedUploads) sealed uploads open; commit or finish one first")
        }
        var needed: [Int] = []
        do {
            for (i, e) in index.entries.enumerated() {
                if try !store.contains(e.id) { needed.append(i) }
            }
        } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not read its store: \(error)")
        }
        var id = UInt64.random(in: 1 ... .max)
        while sealedUploads[id] != nil { id = UInt64.random(in: 1 ... .max) }
        sealedUploads[id] = SealedUpload(owner: owner, name: name, index: index, indexBytes: indexBytes, needed: Set(needed), lastActivity: .now)
        logger.info("sealed upload offered", metadata: ["upload": "\(id)", "chunks": "\(index.entries.count)", "needed": "\(needed.count)"])
        return (id, needed)
    }

    /// Whether `id` is a sealed upload (its chunks and commit take the sealed path).
    public func isSealedUpload(_ id: UInt64) -> Bool { sealedUploads[id] != nil }

    /// Starts receiving chunk `index` of sealed upload `id`: its entry in the index.
    func beginSealedChunk(id: UInt64, owner: ObjectIdentifier, index: Int, length: Int) throws(UploadRefusal) -> SealedIndex.Entry {
        guard var upload = sealedUploads[id] else {
            throw UploadRefusal(UploadProtocol.badRequest, "no sealed upload \(id) is open; offer the content again")
        }
        guard upload.owner == owner else { throw UploadRefusal(UploadProtocol.forbidden, "upload \(id) belongs to another connection; offer the content on this one") }
        guard upload.index.entries.indices.contains(index) else {
            throw UploadRefusal(UploadProtocol.badRequest, "sealed upload \(id) has \(upload.index.entries.count) chunks; there is no chunk \(index)")
        }
        let entry = upload.index.entries[index]
        guard length <= Int(entry.size) + 64 else {
            throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of sealed upload \(id) has \(length) bytes; its index entry allows at most \(Int(entry.size) + 64)")
        }
        guard upload.needed.contains(index), !upload.inFlight.contains(index) else {
            throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of sealed upload \(id) was not asked for, or is already arriving")
        }
        upload.inFlight.insert(index)
        upload.lastActivity = .now
        sealedUploads[id] = upload
        return entry
    }

    /// Ends the receipt of a sealed chunk: stores `bytes` when they are the entry's (SHA-256 = id).
    /// - Returns: the chunks the upload still lacks.
    func endSealedChunk(id: UInt64, index: Int, bytes: [UInt8]?) throws(UploadRefusal) -> Int {
        guard var upload = sealedUploads[id] else { return 0 }
        upload.inFlight.remove(index)
        defer { sealedUploads[id] = upload }
        guard let bytes else { return upload.needed.count }
        let entry = upload.index.entries[index]
        guard ChunkID.of(bytes) == entry.id else {
            stats.badChunks += 1
            throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of sealed upload \(id): its SHA-256 is not the id the index lists (\(entry.id.short)); nothing was stored")
        }
        do {
            if try !store.contains(entry.id) {
                try store.writeChunk(entry.id, bytes)
                var batch = CommitBatch()
                batch.chunks.append((entry.id, bytes.count))
                try store.commit(batch)
            }
        } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not store chunk \(index): \((error as? ContentError)?.reason ?? "\(error)")")
        }
        upload.needed.remove(index)
        upload.received += 1
        upload.receivedBytes += Int64(bytes.count)
        upload.lastActivity = .now
        stats.chunks += 1
        stats.bytes += Int64(bytes.count)
        return upload.needed.count
    }

    /// Commits sealed upload `id`: stores its index, records the index's edges to its chunks, and
    /// pins it (as `stoq put --sealed` on the origin would).
    func commitSealed(id: UInt64, owner: ObjectIdentifier) throws(UploadRefusal) -> (id: ContentID, chunks: Int, storedBytes: Int64, receipt: UploadReceipt) {
        guard let upload = sealedUploads[id] else { throw UploadRefusal(UploadProtocol.badRequest, "no sealed upload \(id) is open; offer the content again") }
        guard upload.owner == owner else { throw UploadRefusal(UploadProtocol.forbidden, "upload \(id) belongs to another connection; offer the content on this one") }
        guard upload.needed.isEmpty, upload.inFlight.isEmpty else {
            throw UploadRefusal(UploadProtocol.badRequest, "sealed upload \(id) still lacks \(upload.needed.count) chunks; send them before the commit")
        }
        let root = ChunkID.of(upload.indexBytes)
        let content = ContentID(root)
        var storedBytes: Int64 = 0
        do {
            for e in upload.index.entries {
                if try !store.contains(e.id) {
                    throw UploadRefusal(UploadProtocol.badRequest, "chunk \(e.id.short) of sealed upload \(id) is no longer stored; offer the content again")
                }
            }
            var batch = CommitBatch()
            if try !store.contains(root) {
                try store.writeChunk(root, upload.indexBytes)
                storedBytes = Int64(upload.indexBytes.count)
            }
            batch.chunks.append((root, upload.indexBytes.count))
            batch.manifests.append((root, "sealed", 0, ""))
            for e in upload.index.entries { batch.edges.append((root, e.id)) }
            batch.pins.append((content, upload.name))
            try store.commit(batch)
        } catch let refusal as UploadRefusal {
            throw refusal
        } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not pin the sealed content: \((error as? ContentError)?.reason ?? "\(error)")")
        }
        sealedUploads[id] = nil
        stats.committed += 1
        logger.info("sealed upload committed", metadata: ["upload": "\(id)", "content": "\(content)", "chunks": "\(upload.index.entries.count)", "chunks_received": "\(upload.received)"])
        let receipt = UploadReceipt(chunks: upload.received, bytes: upload.receivedBytes, duration: .now - upload.opened)
        return (content, upload.index.entries.count, storedBytes, receipt)
    }

    func dropIdleSealedUploads() {
        let now = ContinuousClock.now
        for (id, u) in sealedUploads where now - u.lastActivity > sealedUploadIdle && u.inFlight.isEmpty { sealedUploads[id] = nil }
    }
}

extension PeerClient {
    /// Offers a sealed content (its root sealed index) to the origin, for pinning under `name`.
    /// - Returns: the upload's id and the indices of the index entries whose chunks the origin lacks.
    public func uploadSealedOffer(indexBytes: [UInt8], entries: Int, name: String) async throws -> (id: UInt64, needed: [Int]) {
        let message = UploadMessage.offer(flags: .sealed, name: name, tree: indexBytes)
        switch try await uploadRequest(message.encoded()) {
        case .need(let id, _, let indices):
            guard indices.allSatisfy({ $0 < UInt64(entries) }) else {
                throw NodeError(.protocolViolation, "\(self.name) asked for a chunk the sealed index does not list")
            }
            return (id, indices.map { Int($0) })
        case let other:
            throw NodeError(.protocolViolation, "the origin answered UPLOAD_OFFER with \(other.frame().type)")
        }
    }
}

/// Uploads a sealed content from a local store into an origin: offers its root index, sends the
/// chunks the origin lacks (stored bytes, as they are), and commits.
public enum SealedUploader {
    /// What was sent.
    public struct Report: Sendable {
        /// The content id the origin pinned (the root index's id).
        public var content: ContentID
        /// Chunks the index lists.
        public var chunks: Int
        /// Chunks sent.
        public var sentChunks: Int
        /// Bytes sent (stored, sealed bytes).
        public var sentBytes: Int64
    }

    /// Uploads the sealed content `id` held in `store` to the origin `client` is connected to.
    /// - Throws: ``NodeError`` when the origin pins another id than `id`; ``UploadRefused``; store errors.
    public static func upload(_ id: ContentID, from store: any ChunkStore, to client: PeerClient, name: String, concurrency: Int = 8) async throws -> Report {
        let indexBytes = try store.read(id.manifest)
        let index = try SealedIndex.decode(indexBytes)
        let (upload, needed) = try await client.uploadSealedOffer(indexBytes: indexBytes, entries: index.entries.count, name: name)
        var sent: Int64 = 0
        let width = max(1, min(concurrency, 32))
        try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0, done = 0
            while next < needed.count || done < next {
                while next < needed.count && next - done < width {
                    let i = needed[next]
                    next += 1
                    let bytes = try store.read(index.entries[i].id)
                    group.addTask {
                        _ = try await client.uploadChunk(id: upload, index: i, bytes: bytes)
                        return bytes.count
                    }
                }
                guard let n = try await group.next() else { break }
                sent += Int64(n)
                done += 1
            }
        }
        let (content, _) = try await client.uploadCommit(id: upload)
        guard content == id else {
            throw NodeError(.protocolViolation, "the origin pinned \(content), not the sealed content \(id) it was sent")
        }
        return Report(content: content, chunks: index.entries.count, sentChunks: needed.count, sentBytes: sent)
    }
}
