import Foundation
import Logging
import NIOCore
import STOQAudit
import STOQAccess
import STOQContent
import STOQExchange
import STOQIdentity
import STOQTransport
import STOQWire

/// An origin's side of uploads (UPLOAD_OFFER, UPLOAD_CHUNK, UPLOAD_COMMIT; docs/PROTOCOL.md,
/// "Uploading content"): the state the requests share. The origin seals and stores every chunk
/// with its own publisher key (its store's `publisher.key`), as `stoq put` on it would, so an
/// uploaded content is served, keyed and read exactly like a local one, at once.
public actor UploadCoordinator {
    /// Counters for `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Uploads committed.
        public var committed = 0
        /// Chunks received, verified and stored.
        public var chunks = 0
        /// Their plaintext bytes.
        public var bytes: Int64 = 0
        /// Chunks an offer did not ask for (the origin held them).
        public var deduplicated = 0
        /// Requests refused because the identity is not a publisher.
        public var forbidden = 0
        /// Chunks refused (wrong length or hash).
        public var badChunks = 0
    }

    /// The node ids (lowercase hex) allowed to upload.
    public let publishers: Set<String>
    let store: any ChunkStore
    private let directory: String
    let logger: Logger
    private var ledger = UploadLedger<ObjectIdentifier>()
    private var publisher: ContentPublisher?
    private var keyring: PublicKeyring?
    private var pending: [StoredUploadChunk] = []
    private var pendingTags: Set<ChunkID> = []
    private var lastFlush = ContinuousClock.now
    var stats = Counters()
    /// Sealed uploads open now (SealedUpload.swift).
    var sealedUploads: [UInt64: SealedUpload] = [:]
    /// Stored chunks recorded in the store's metadata at once (also after a second, and at every
    /// offer and commit).
    static let metadataBatch = 64

    /// Creates the coordinator of an origin whose store is `store`, in `directory`.
    /// - Parameter publishers: node ids (hex) allowed to upload.
    public init(store: any ChunkStore, directory: String, publishers: [String], logger: Logger = Logger(label: "stoq.upload")) {
        self.store = store
        self.directory = directory
        self.publishers = Set(publishers.map { $0.lowercased() })
        self.logger = logger
    }

    /// The counters.
    public var counters: Counters { stats }
    /// Uploads open now.
    public var open: Int { ledger.count }

    /// Refuses an identity that is not a publisher of this origin.
    public func authorize(_ node: NodeID?) throws(UploadRefusal) {
        guard let node else {
            stats.forbidden += 1
            throw UploadRefusal(UploadProtocol.forbidden, "an upload needs a node certificate; connect with the certificate of a publisher (--cert/--key)")
        }
        guard publishers.contains(node.hex) else {
            stats.forbidden += 1
            logger.warning("refused an upload from a node that is not a publisher", metadata: ["node": "\(node.hex)"])
            throw UploadRefusal(UploadProtocol.forbidden, "node \(node.hex) is not a publisher of this origin; its operator must add it with `stoq node --publisher \(node.hex)` (or the config key publishers)")
        }
    }

    /// The publisher (the store's key, created for a store that holds no content yet).
    func contentPublisher() throws(UploadRefusal) -> ContentPublisher {
        if let publisher { return publisher }
        let keys: PublisherKeys
        do {
            switch PublisherKeyFile.state(directory: directory) {
            case .present(let k):
                keys = k
            case .unreadable(let why):
                throw UploadRefusal(UploadProtocol.internalError, "the origin's publisher key cannot be used (\(why)); its operator must fix \(PublisherKeyFile.path(in: directory))")
            case .missing:
                let s = try store.stats()
                guard s.chunks == 0 && s.pins == 0 else {
                    throw UploadRefusal(UploadProtocol.internalError, "the origin's store holds content but its publisher key is missing; its operator must restore \(PublisherKeyFile.path(in: directory))")
                }
                keys = try PublisherKeyFile.create(directory: directory)
                logger.notice("created the publisher key of the store for the first upload (keep a copy)", metadata: ["file": "\(PublisherKeyFile.path(in: directory))"])
            }
        } catch let refusal as UploadRefusal {
            throw refusal
        } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not open its publisher key: \(error)")
        }
        let p = ContentPublisher(store: store, keys: keys)
        publisher = p
        return p
    }

    /// Opens an upload: the indices of the chunks the store lacks, and the upload's id.
    public func offer(owner: ObjectIdentifier, tree: UploadTree, name: String, isPublic: Bool) throws(UploadRefusal) -> (id: UInt64, needed: [Int]) {
        let publisher = try contentPublisher()
        try flush()
        let needed: [Int]
        do { needed = try publisher.missing(tree, also: pendingTags) } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not read its store: \(error)")
        }
        let id = try ledger.open(owner: owner, tree: tree, name: name, isPublic: isPublic, needed: needed, now: .now)
        stats.deduplicated += tree.chunks.count - needed.count
        logger.info("upload offered", metadata: ["upload": "\(id)", "name": "\(name)", "chunks": "\(tree.chunks.count)", "needed": "\(needed.count)", "bytes": "\(tree.bytes)"])
        return (id, needed)
    }

    /// Starts receiving a chunk: what it must be, and who seals it.
    public func beginChunk(id: UInt64, owner: ObjectIdentifier, index: Int, length: Int) throws(UploadRefusal) -> (chunk: UploadChunk, contentType: String, publisher: ContentPublisher) {
        let publisher = try contentPublisher()
        let (chunk, type) = try ledger.beginChunk(id: id, owner: owner, index: index, length: length, now: .now)
        return (chunk, type, publisher)
    }

    /// Ends the receipt of a chunk of `length` plaintext bytes (`stored` nil: it failed; `bad`: its
    /// bytes were not the chunk offered). Returns the chunks the upload still lacks.
    public func endChunk(id: UInt64, index: Int, length: Int, stored: StoredUploadChunk?, bad: Bool) -> Int {
        if let stored {
            pending.append(stored)
            pendingTags.insert(stored.tag)
            stats.chunks += 1
            stats.bytes += Int64(length)
            // Recorded in batches, and at least every second, so chunks of an upload cut off
            // count as held even if nobody offers again before the node stops.
            if pending.count >= Self.metadataBatch || ContinuousClock.now - lastFlush > .seconds(1) { try? flush() }
        }
        if bad { stats.badChunks += 1 }
        return ledger.endChunk(id: id, index: index, stored: stored != nil, now: .now)
    }

    /// Builds, stores and pins an upload whose chunks are all stored.
    /// - Returns: what was built, and what the upload carried (for the audit trail).
    public func commit(id: UInt64, owner: ObjectIdentifier) throws(UploadRefusal) -> (report: PutReport, receipt: UploadReceipt) {
        let session = try ledger.takeForCommit(id: id, owner: owner, now: .now)
        let publisher = try contentPublisher()
        try flush()
        do {
            let key = session.isPublic ? PublicKeyring.newKey() : nil
            let report = try publisher.putUploaded(session.tree, name: session.name, readKey: key)
            if let key {
                if keyring == nil { keyring = try PublicKeyring(path: PublicKeyring.publisherPath(in: directory)) }
                try keyring!.add(report.id, key: key)
            }
            stats.committed += 1
            logger.info("upload committed", metadata: ["upload": "\(id)", "content": "\(report.id)", "name": "\(session.name)",
                                                       "public": "\(session.isPublic)", "bytes": "\(report.bytes)", "chunks_received": "\(session.received)"])
            return (report, UploadReceipt(chunks: session.received, bytes: session.receivedBytes, duration: .now - session.opened))
        } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not build the content: \((error as? ContentError)?.reason ?? "\(error)")")
        }
    }

    /// Records the stored chunks in the store's metadata.
    func flush() throws(UploadRefusal) {
        lastFlush = .now
        guard !pending.isEmpty, let publisher else { return }
        do { try publisher.commitUploaded(pending) } catch {
            throw UploadRefusal(UploadProtocol.internalError, "the origin could not record uploaded chunks: \(error)")
        }
        pending.removeAll()
        pendingTags.removeAll()
    }
}

/// What one upload carried, for the audit trail: chunks and bytes received (chunks the store
/// held already are not sent, nor counted) and the time from offer to commit.
public struct UploadReceipt: Sendable, Equatable {
    /// Chunks received.
    public var chunks: Int
    /// Their bytes.
    public var bytes: Int64
    /// From the offer to the commit.
    public var duration: Duration
}

extension UploadService {
    /// A publisher's certificate, or a grant with the publish right whose scope admits the offer's
    /// name (an upload's chunks and commit need the right, the offer already checked the scope).
    /// - Returns: the id of the grant that allowed the request (nil: a role).
    @discardableResult
    func authorize(_ message: UploadMessage, connection: Connection) async throws(UploadRefusal) -> [UInt8]? {
        guard let access else { try await coordinator.authorize(connection.peerNodeID); return nil }
        var item: AccessItem?
        if case .offer(_, let name, _) = message { item = .name(name) }
        let decision = await access.check(.publish, item: item, peer: connection.peerNodeID, connection: ObjectIdentifier(connection))
        if case .grant(let id) = decision { return id }
        if decision.isAllowed { return nil }
        if case .denied(let why) = decision, await access.hasGrants(ObjectIdentifier(connection)) {
            throw UploadRefusal(AccessPolicy.noGrantCode, why)
        }
        try await coordinator.authorize(connection.peerNodeID)
        return nil
    }
}

/// Answers UPLOAD_OFFER, UPLOAD_CHUNK and UPLOAD_COMMIT (frame types 0x18–0x1B) on an origin, for
/// the identities it lists as publishers (`--publisher NODEID`); anyone else gets ERROR 5.
public struct UploadService: NodeService {
    /// The shared state.
    public let coordinator: UploadCoordinator
    /// Grants with the publish right let others upload too (nil: the publishers alone).
    public let access: AccessPolicy?
    /// Where committed uploads are recorded (nil: nowhere).
    public let audit: NodeAudit?

    /// Creates the service.
    public init(coordinator: UploadCoordinator, access: AccessPolicy? = nil, audit: NodeAudit? = nil) {
        self.coordinator = coordinator
        self.access = access
        self.audit = audit
    }

    public var name: String { "upload" }
    public var frameTypes: ClosedRange<UInt64> { UploadMessage.Types.offer.rawValue...UploadMessage.Types.commit.rawValue }
    public var maximumRequestLength: Int { UploadMessage.maximumPayloadLength }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let owner = ObjectIdentifier(connection)
        var answer: ByteBuffer
        do {
            let message: UploadMessage
            do { message = try UploadMessage.decode(request) } catch {
                throw UploadRefusal(UploadProtocol.badRequest, "malformed \(request.type) request: \(error.reason); see docs/PROTOCOL.md, \"Uploading content\"")
            }
            let grant = try await authorize(message, connection: connection)
            var sealed = false
            switch message {
            case .chunk(let id, _, _), .commit(let id): sealed = await coordinator.isSealedUpload(id)
            default: break
            }
            switch message {
            case .offer(let flags, let name, let bytes) where flags.contains(.sealed):
                guard !flags.contains(.public) else {
                    throw UploadRefusal(UploadProtocol.badRequest, "an upload is public or sealed, not both: a public content's key goes to every node")
                }
                let (id, needed) = try await coordinator.offerSealed(owner: owner, indexBytes: bytes, name: name)
                answer = UploadMessage.need(uploadID: id, remaining: UInt64(needed.count), indices: needed.map { UInt64($0) }).encoded()
            case .chunk(let id, let index, let length) where sealed:
                _ = try await coordinator.beginSealedChunk(id: id, owner: owner, index: Int(index), length: Int(length))
                let bytes: [UInt8]
                do { bytes = try await Self.read(exactly: Int(length), after: remaining, from: stream) } catch {
                    _ = try? await coordinator.endSealedChunk(id: id, index: Int(index), bytes: nil)
                    if let refusal = error as? UploadRefusal { throw refusal }
                    throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of sealed upload \(id) did not arrive whole: \(error)")
                }
                let left = try await coordinator.endSealedChunk(id: id, index: Int(index), bytes: bytes)
                answer = UploadMessage.need(uploadID: id, remaining: UInt64(left), indices: []).encoded()
            case .commit(let id) where sealed:
                let report = try await coordinator.commitSealed(id: id, owner: owner)
                // Issue 15 item 7: the upload received, from whom, under which grant.
                audit?.note(.uploaded, content: report.id, peer: connection.peerNodeID, bytes: report.receipt.bytes,
                            chunks: report.receipt.chunks, duration: report.receipt.duration, grant: grant)
                let totals = UploadMessage.Totals(files: 0, bytes: 0, chunks: UInt64(report.chunks), storedBytes: UInt64(report.storedBytes))
                answer = UploadMessage.committed(uploadID: id, content: WireID(report.id.manifest.bytes)!, totals: totals).encoded()
            case .offer(let flags, let name, let bytes):
                let tree: UploadTree
                do { tree = try UploadTree.decode(bytes) } catch {
                    throw UploadRefusal(UploadProtocol.badRequest, "the offered tree is not valid: \((error as? ContentError)?.reason ?? "\(error)")")
                }
                let (id, needed) = try await coordinator.offer(owner: owner, tree: tree, name: name, isPublic: flags.contains(.public))
                answer = UploadMessage.need(uploadID: id, remaining: UInt64(needed.count), indices: needed.map { UInt64($0) }).encoded()
            case .chunk(let id, let index, let length):
                let (expected, type, publisher) = try await coordinator.beginChunk(id: id, owner: owner, index: Int(index), length: Int(length))
                let stored: StoredUploadChunk
                do {
                    let bytes = try await Self.read(exactly: Int(length), after: remaining, from: stream)
                    stored = try publisher.storeUploadedChunk(bytes, as: expected, contentType: type)
                } catch let e as ContentError where e.code == .idMismatch {
                    _ = await coordinator.endChunk(id: id, index: Int(index), length: 0, stored: nil, bad: true)
                    throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of upload \(id): \(e.reason)")
                } catch {
                    _ = await coordinator.endChunk(id: id, index: Int(index), length: 0, stored: nil, bad: false)
                    if let refusal = error as? UploadRefusal { throw refusal }
                    throw UploadRefusal(UploadProtocol.internalError, "the origin could not store chunk \(index): \((error as? ContentError)?.reason ?? "\(error)")")
                }
                let left = await coordinator.endChunk(id: id, index: Int(index), length: Int(length), stored: stored, bad: false)
                answer = UploadMessage.need(uploadID: id, remaining: UInt64(left), indices: []).encoded()
            case .commit(let id):
                let (report, receipt) = try await coordinator.commit(id: id, owner: owner)
                audit?.note(.uploaded, content: report.id, peer: connection.peerNodeID, bytes: receipt.bytes,
                            chunks: receipt.chunks, duration: receipt.duration, grant: grant)
                let totals = UploadMessage.Totals(files: UInt64(report.files), bytes: UInt64(max(0, report.bytes)), chunks: UInt64(report.chunks), storedBytes: UInt64(max(0, report.storedBytes)))
                answer = UploadMessage.committed(uploadID: id, content: WireID(report.id.manifest.bytes)!, totals: totals).encoded()
            case .need, .committed:
                throw UploadRefusal(UploadProtocol.badRequest, "unexpected request \(request.type): UPLOAD_NEED and a commit's answer are answers")
            }
        } catch let refusal as UploadRefusal {
            answer = STOQMessage.error(code: refusal.code, message: ContentAccessProtocol.clip(refusal.message)).encoded()
        } catch {
            answer = STOQMessage.error(code: UploadProtocol.badRequest, message: ContentAccessProtocol.clip("the upload request failed: \(error)")).encoded()
        }
        do {
            try await stream.write(answer)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    /// Reads the `count` raw bytes that follow a chunk header, then FIN.
    static func read(exactly count: Int, after first: ByteBuffer, from stream: QUICStream) async throws -> [UInt8] {
        var all = first
        while all.readableBytes <= count, let piece = try await stream.read() {
            var piece = piece
            all.writeBuffer(&piece)
        }
        guard all.readableBytes == count else {
            throw UploadRefusal(UploadProtocol.badRequest, "the chunk carried \(all.readableBytes) bytes (or more), not the \(count) announced")
        }
        return all.readBytes(length: count) ?? []
    }

    public func status() async -> [String: any Sendable]? {
        let c = await coordinator.counters
        return ["uploads_committed": c.committed, "upload_chunks": c.chunks, "upload_bytes": c.bytes, "upload_chunks_deduplicated": c.deduplicated,
                "uploads_forbidden": c.forbidden, "upload_bad_chunks": c.badChunks, "uploads_open": await coordinator.open,
                "publishers": await coordinator.publishers.count]
    }
}
