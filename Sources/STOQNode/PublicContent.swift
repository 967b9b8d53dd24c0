import Crypto
import Foundation
import Logging
import NIOCore
import STOQAudit
import STOQAccess
import STOQContent
import STOQTransport
import STOQWire

/// How a reader on a node (the HTTP front door) gets the read key of a content.
///
/// Only **public** content has a key a node may use for anyone: the key of a content its publisher
/// put with `stoq put --public`, which opens that content and nothing else. Private content has
/// none, even on the origin that stores it: its key tables are sealed with the publisher's read
/// key, which never leaves the publisher, and a node must not serve it in the clear.
public protocol ContentReadKeyLookup: Sendable {
    /// The 32-byte read key of `content` (its root id) when it is public, or nil: private,
    /// unknown, or no upstream could say. The key opens every key table under that root.
    func readKey(for content: ContentID) async -> [UInt8]?
}

/// What a node can say about the read key of a content.
public enum ContentKeyAnswer: Sendable, Equatable {
    /// The content is public: its read key.
    case key([UInt8])
    /// The content is private: no key is handed out. The reason is for people.
    case `private`(String)
    /// Neither this node nor its upstream knows the content.
    case notFound(String)
    /// The node could not find out (no upstream answered, or one handed a key that does not open
    /// the content).
    case unavailable(String)
}

/// The read keys of public contents on a node, and the answer to CONTENT_KEY_REQUEST.
///
/// - On an **origin** (a node without upstream), the keys are the publisher keyring of its store
///   (`public.keys`, written by `stoq put --public`); a content in its store without a key there is
///   private.
/// - On an **edge**, a key it does not hold is asked of its upstream (one request per content at a
///   time), checked against the content (it must open a key table of it), and kept in
///   `learnt-public.keys` in the edge's store directory, at most ``learntCapacity`` keys, so the
///   edge still opens that content while its upstream is unreachable and after a restart. A
///   "private" or "unknown" answer is remembered for ``negativeLifetime`` (bounded), so a flood of
///   requests for private content does not reach the upstream.
public actor PublicKeyDirectory: ContentReadKeyLookup {
    /// The most keys an edge keeps (the oldest are dropped first and asked for again when needed).
    public static let learntCapacity = 65_536
    /// How long "private" and "unknown" answers from upstream are remembered.
    public static let negativeLifetime: Duration = .seconds(30)
    /// The most such answers remembered.
    public static let negativeCapacity = 4096
    /// How many manifests a key check loads at most while looking for a key table.
    public static let checkBudget = 256

    /// Counters for `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Keys handed out (CONTENT_KEY answers and local lookups that found one).
        public var handedOut = 0
        /// Keys learnt from upstream and kept.
        public var learnt = 0
        /// Requests refused because the content is private.
        public var refusedPrivate = 0
        /// Requests sent upstream.
        public var upstreamAsks = 0
        /// Keys from upstream that did not open the content (not kept).
        public var badKeys = 0
    }

    private let own: PublicKeyring?
    private let learnt: PublicKeyring?
    private let store: (any ChunkStore)?
    private let upstream: [PeerAddress]
    private let peers: PeerSet?
    private let load: (@Sendable (ChunkID) async throws -> [UInt8]?)?
    private let logger: Logger
    private var negative: [ContentID: (at: ContinuousClock.Instant, answer: ContentKeyAnswer)] = [:]
    private var asking: [ContentID: Task<ContentKeyAnswer, Never>] = [:]
    private var stats = Counters()

    /// Creates a directory.
    /// - Parameters:
    ///   - own: the publisher keyring (`public.keys`) of the node's store, if any.
    ///   - learnt: where an edge keeps the keys it learnt (nil: nothing kept, e.g. an origin).
    ///   - store: the node's store (an origin calls content it holds but has no key for private).
    ///   - upstream: where an edge asks for keys it lacks.
    ///   - peers: the node's connections to `upstream`.
    ///   - load: the verified bytes of a chunk (an edge's provider: cache, then upstream), used to
    ///     check a key from upstream before it is kept; nil: keys are kept unchecked.
    public init(
        own: PublicKeyring?, learnt: PublicKeyring?, store: (any ChunkStore)?, upstream: [PeerAddress], peers: PeerSet?,
        load: (@Sendable (ChunkID) async throws -> [UInt8]?)? = nil, logger: Logger = Logger(label: "stoq.public")
    ) {
        self.own = own
        self.learnt = learnt
        self.store = store
        self.upstream = upstream
        self.peers = peers
        self.load = load
        self.logger = logger
    }

    /// The directory of a node whose store is in `directory`: its publisher keyring, and for an
    /// edge (with upstream) the keys it learns. A keyring file that cannot be read is logged and
    /// left out (its contents then answer as private: never more readable than intended).
    public static func forStore(
        directory: String, store: any ChunkStore, upstream: [PeerAddress], peers: PeerSet,
        load: (@Sendable (ChunkID) async throws -> [UInt8]?)?, logger: Logger = Logger(label: "stoq.public")
    ) -> PublicKeyDirectory {
        func open(_ path: String, capacity: Int?) -> PublicKeyring? {
            do { return try PublicKeyring(path: path, capacity: capacity) } catch {
                logger.error("cannot read the keyring of public contents; they are treated as private until it is fixed", metadata: ["file": "\(path)", "error": "\(error)"])
                return nil
            }
        }
        let own = open(PublicKeyring.publisherPath(in: directory), capacity: nil)
        let learnt = upstream.isEmpty ? nil : open(PublicKeyring.learntPath(in: directory), capacity: learntCapacity)
        return PublicKeyDirectory(own: own, learnt: learnt, store: store, upstream: upstream, peers: peers, load: load, logger: logger)
    }

    /// The counters.
    public var counters: Counters { stats }

    /// Keys this node holds now (its publisher's and those it learnt).
    public var heldKeys: Int { (own?.count ?? 0) + (learnt?.count ?? 0) }

    public func readKey(for content: ContentID) async -> [UInt8]? {
        if case .key(let key) = await answer(for: content) { return key }
        return nil
    }

    /// What this node says about the read key of `content` (asking upstream when it must).
    public func answer(for content: ContentID) async -> ContentKeyAnswer {
        if let key = own?.key(for: content) ?? learnt?.key(for: content) {
            stats.handedOut += 1
            return .key(key)
        }
        guard !upstream.isEmpty, peers != nil else {
            if let store, (try? store.contains(content.manifest)) == true {
                stats.refusedPrivate += 1
                return .private("\(content) is private: its publisher did not put it with --public, so no node may read it for others")
            }
            return .notFound("this node does not hold \(content)")
        }
        if let known = negative[content] {
            if ContinuousClock.now - known.at < Self.negativeLifetime {
                if case .private = known.answer { stats.refusedPrivate += 1 }
                return known.answer
            }
            negative[content] = nil
        }
        if let task = asking[content] { return await task.value }
        let task = Task { await self.askUpstream(content) }
        asking[content] = task
        let answer = await task.value
        asking[content] = nil
        switch answer {
        case .private, .notFound:
            if case .private = answer { stats.refusedPrivate += 1 }
            if negative.count >= Self.negativeCapacity {
                let now = ContinuousClock.now
                negative = negative.filter { now - $0.value.at < Self.negativeLifetime }
                if negative.count >= Self.negativeCapacity { negative.removeAll() }
            }
            negative[content] = (ContinuousClock.now, answer)
        case .key:
            stats.handedOut += 1
        case .unavailable:
            break
        }
        return answer
    }

    private func askUpstream(_ content: ContentID) async -> ContentKeyAnswer {
        guard let peers else { return .unavailable("no upstream") }
        var problems: [String] = []
        var privateReason: String?
        var allUnknown = true
        for address in peers.healthyFirst(upstream) {
            stats.upstreamAsks += 1
            do {
                let client = try await peers.client(for: address)
                switch try await client.contentKey(for: content) {
                case .key(let key):
                    if let load {
                        switch await Self.check(key: key, root: content, load: load) {
                        case .opens:
                            break
                        case .doesNotOpen:
                            stats.badKeys += 1
                            allUnknown = false
                            logger.warning("an upstream handed a read key that does not open the content; not kept", metadata: ["peer": "\(address)", "content": "\(content)"])
                            problems.append("\(address) handed a key that does not open it")
                            continue
                        case .cannotTell(let why):
                            allUnknown = false
                            problems.append("\(address) handed a key that could not be checked (\(why))")
                            continue
                        }
                    }
                    do {
                        try learnt?.add(content, key: key)
                        stats.learnt += 1
                    } catch {
                        logger.warning("could not keep a learnt read key (it is used, not persisted)", metadata: ["content": "\(content)", "error": "\(error)"])
                    }
                    return .key(key)
                case .private(let reason):
                    privateReason = reason
                    allUnknown = false
                case .notFound(let reason):
                    problems.append("\(address): \(reason)")
                case .unavailable(let reason):
                    allUnknown = false
                    problems.append("\(address): \(reason)")
                }
            } catch {
                allUnknown = false
                problems.append("\(address): \(error)")
            }
        }
        if let privateReason { return .private(privateReason) }
        let summary = problems.joined(separator: "; ")
        return allUnknown ? .notFound("no upstream knows \(content): \(summary)") : .unavailable("could not learn the read key of \(content): \(summary)")
    }

    /// What checking a key against a content found.
    public enum KeyCheck: Sendable, Equatable {
        /// It opened a key table of the content (or the content has no sealed key table at all).
        case opens
        /// A key table of the content did not open with it.
        case doesNotOpen
        /// A manifest could not be loaded or decoded within the budget; the reason says which.
        case cannotTell(String)
    }

    /// Checks that `key` opens the first non-empty key table met in a walk of `root` (at most
    /// ``checkBudget`` manifests, 16 levels).
    public static func check(key: [UInt8], root: ContentID, load: @Sendable (ChunkID) async throws -> [UInt8]?) async -> KeyCheck {
        guard key.count == 32 else { return .doesNotOpen }
        let symmetric = SymmetricKey(data: key)
        var stack: [(ChunkID, Int)] = [(root.manifest, 0)]
        var loads = 0
        while let (id, depth) = stack.popLast() {
            guard depth <= ContentPlan.maximumDepth else { continue }
            loads += 1
            guard loads <= checkBudget else { return .cannotTell("no key table within \(checkBudget) manifests") }
            let bytes: [UInt8]
            do {
                guard let found = try await load(id) else { return .cannotTell("manifest \(id.short) is not available") }
                bytes = found
            } catch {
                return .cannotTell("manifest \(id.short): \(error)")
            }
            if depth == 0, SealedIndex.looksLike(bytes) {
                // A sealed private content: the key must open its sealed root.
                guard let index = try? SealedIndex.decode(bytes) else { return .cannotTell("sealed index \(id.short) is malformed") }
                return (try? SealedMetadata.openRoot(index, metaKey: SealedMetadata.metaKey(contentKey: key))) != nil ? .opens : .doesNotOpen
            }
            guard let manifest = try? AnyManifest.decode(bytes) else { return .cannotTell("manifest \(id.short) is malformed") }
            switch manifest {
            case .directory(let directory):
                for entry in directory.entries.reversed() where !entry.isLink { stack.append((entry.id.manifest, depth + 1)) }
            case .file(let file):
                switch file.kind {
                case .leaf:
                    guard !file.entries.isEmpty else { continue }
                    return (try? KeyTable.open(file.sealedKeys, count: file.entries.count, readKey: symmetric)) != nil ? .opens : .doesNotOpen
                case .node:
                    if let first = file.entries.first { stack.append((first.id, depth + 1)) }
                }
            }
        }
        return .opens
    }
}

/// Purges on a node: drops the cached chunks of a content here (an edge) and passes the purge on to
/// the edges below that subscribed (PURGE_SUBSCRIBE), collecting what they dropped.
///
/// An origin's store is not a cache: a purge there drops nothing and goes on to its edges. A purge
/// carries a random id; a node that sees the same id again (two upstreams, a loop) answers with
/// nothing dropped and does not pass it on. It travels at most
/// ``ContentAccessMessage/maximumDepth`` tiers down, and each tier waits for the one below at most
/// `maximumDepth + 1 − depth` seconds (so a tier answers before the one above gives up on it).
public actor PurgeCoordinator {
    /// The most edges below one node that receive its purges.
    public static let maximumSubscribers = 4096
    /// Purge ids remembered (to answer repeats with nothing).
    public static let rememberedPurges = 1024
    /// The most chunk ids one purge collects (the HAVE bound).
    public static let maximumChunks = 4_194_304
    /// The most manifests one purge walks.
    public static let maximumManifests = 65_536

    /// Counters for `stoq status`.
    public struct Counters: Sendable, Equatable {
        /// Purges taken (repeats excluded).
        public var purges = 0
        /// Chunks dropped here.
        public var droppedChunks = 0
        /// Bytes dropped here.
        public var droppedBytes: Int64 = 0
        /// Purges passed on to edges below that took them.
        public var forwarded = 0
    }

    private let edge: EdgeChunkProvider?
    private let store: any ChunkStore
    private let upstream: [PeerAddress]
    private let peers: PeerSet?
    private let logger: Logger
    private var subscribers: [ObjectIdentifier: Connection] = [:]
    private var recent: [UInt64] = []
    private var recentSet: Set<UInt64> = []
    private var stats = Counters()

    /// Creates a coordinator.
    /// - Parameters:
    ///   - edge: the node's cache (nil: an origin, which drops nothing).
    ///   - store: the node's store (where cached manifests are read).
    ///   - upstream: where manifests this edge no longer caches are read, to name their chunks.
    ///   - peers: the node's connections to `upstream`.
    public init(edge: EdgeChunkProvider?, store: any ChunkStore, upstream: [PeerAddress], peers: PeerSet?, logger: Logger = Logger(label: "stoq.purge")) {
        self.edge = edge
        self.store = store
        self.upstream = upstream
        self.peers = peers
        self.logger = logger
    }

    /// The counters.
    public var counters: Counters { stats }

    /// Edges below that receive purges now.
    public var subscriberCount: Int { subscribers.count }

    /// An edge below subscribed over `connection`; kept until the connection closes.
    /// - Returns: false when ``maximumSubscribers`` are already held.
    public func subscribe(_ connection: Connection) -> Bool {
        let key = ObjectIdentifier(connection)
        if subscribers[key] != nil { return true }
        guard subscribers.count < Self.maximumSubscribers else { return false }
        subscribers[key] = connection
        Task { [weak self] in
            _ = await connection.closed()
            await self?.unsubscribe(key)
        }
        return true
    }

    private func unsubscribe(_ key: ObjectIdentifier) { subscribers[key] = nil }

    /// The connections of the edges below (revocation lists are passed on over them too).
    public var subscriberConnections: [Connection] { Array(subscribers.values) }

    /// Whether `connection` is one this edge dialled to its upstream (purges from there pass).
    public func isUpstream(_ connection: Connection) async -> Bool {
        guard let address = await peers?.address(of: connection) else { return false }
        return upstream.contains(address)
    }

    /// Purges `content` here and below.
    /// - Parameters:
    ///   - purgeID: the purge's id (repeats do nothing).
    ///   - depth: this node's tier (0: the node the purger asked).
    ///   - connection: where the purge came from (never sent back there).
    public func purge(_ content: ContentID, purgeID: UInt64, depth: UInt64, from connection: Connection?) async -> ContentAccessMessage.PurgeTotals {
        var totals = ContentAccessMessage.PurgeTotals()
        guard remember(purgeID) else { return totals }
        stats.purges += 1
        if let edge {
            let ids = await chunkIDs(of: content)
            do {
                let (chunks, bytes) = try await edge.drop(ids)
                totals.localChunks = UInt64(chunks)
                totals.localBytes = UInt64(max(0, bytes))
                stats.droppedChunks += chunks
                stats.droppedBytes += bytes
            } catch {
                logger.warning("a purge could not drop every chunk", metadata: ["content": "\(content)", "error": "\(error)"])
            }
        }
        guard depth < ContentAccessMessage.maximumDepth else { return totals }
        let targets = subscribers.values.filter { $0 !== connection }
        guard !targets.isEmpty else { return totals }
        let wait = Duration.seconds(Int64(ContentAccessMessage.maximumDepth - depth) + 1)
        let answers = await withTaskGroup(of: ContentAccessMessage.PurgeTotals?.self) { group in
            for target in targets {
                group.addTask {
                    let answer: ContentAccessMessage.PurgeTotals?? = await withDeadline(wait) {
                        try? await PeerClient(connection: target, name: "\(target.remoteAddress)").purge(content, purgeID: purgeID, depth: depth + 1)
                    }
                    return answer ?? nil
                }
            }
            var all: [ContentAccessMessage.PurgeTotals?] = []
            for await answer in group { all.append(answer) }
            return all
        }
        for answer in answers {
            if let answer {
                totals.add(below: answer)
                stats.forwarded += 1
            } else {
                totals.addUnanswered()
            }
        }
        logger.info("purged", metadata: ["content": "\(content)", "chunks": "\(totals.localChunks)", "edges_below": "\(totals.edges)"])
        return totals
    }

    /// Whether a purge with this id was taken already (a repeat does nothing).
    func isRepeat(_ purgeID: UInt64) -> Bool { recentSet.contains(purgeID) }

    private func remember(_ purgeID: UInt64) -> Bool {
        guard recentSet.insert(purgeID).inserted else { return false }
        recent.append(purgeID)
        if recent.count > Self.rememberedPurges { recentSet.remove(recent.removeFirst()) }
        return true
    }

    /// The ids of the manifests and data chunks of `content`: manifests from the store, or else
    /// from upstream (verified, not cached). A manifest neither has is skipped (what only it
    /// names cannot be identified). Bounded by ``maximumManifests`` and ``maximumChunks``.
    func chunkIDs(of content: ContentID) async -> [ChunkID] {
        var ids: [ChunkID] = []
        var seen = Set<ChunkID>()
        var stack: [(ChunkID, Int)] = [(content.manifest, 0)]
        var loads = 0
        while let (id, depth) = stack.popLast(), ids.count < Self.maximumChunks {
            guard depth <= ContentPlan.maximumDepth, seen.insert(id).inserted, loads < Self.maximumManifests else { continue }
            loads += 1
            guard let bytes = await manifestBytes(id), let manifest = try? AnyManifest.decode(bytes) else { continue }
            ids.append(id)
            switch manifest {
            case .directory(let directory):
                for entry in directory.entries where !entry.isLink { stack.append((entry.id.manifest, depth + 1)) }
            case .file(let file):
                switch file.kind {
                case .leaf:
                    for entry in file.entries where seen.insert(entry.id).inserted { ids.append(entry.id) }
                case .node:
                    for entry in file.entries { stack.append((entry.id, depth + 1)) }
                }
            }
        }
        return Array(ids.prefix(Self.maximumChunks))
    }

    private func manifestBytes(_ id: ChunkID) async -> [UInt8]? {
        if (try? store.contains(id)) == true, let bytes = try? store.read(id) { return bytes }
        guard let peers else { return nil }
        for address in peers.healthyFirst(upstream) {
            if let client = try? await peers.client(for: address), let bytes = try? await client.fetchChunk(id) { return bytes }
        }
        return nil
    }
}

/// Answers CONTENT_KEY_REQUEST, PURGE and PURGE_SUBSCRIBE (frame types 0x13–0x17).
public struct ContentAccessService: NodeService {
    /// The node's public keys.
    public let keys: PublicKeyDirectory
    /// The node's purges.
    public let purges: PurgeCoordinator
    /// Who may purge (nil: every certificate).
    public let access: AccessPolicy?
    /// Where executed purges are recorded (nil: nowhere).
    public let audit: NodeAudit?

    /// Creates the service.
    public init(keys: PublicKeyDirectory, purges: PurgeCoordinator, access: AccessPolicy? = nil, audit: NodeAudit? = nil) {
        self.keys = keys
        self.purges = purges
        self.audit = audit
        self.access = access
    }

    public var name: String { "content_access" }
    public var frameTypes: ClosedRange<UInt64> { ContentAccessMessage.Types.contentKeyRequest.rawValue...ContentAccessMessage.Types.purgeSubscribe.rawValue }
    public var maximumRequestLength: Int { ContentAccessMessage.maximumPayloadLength }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        var answer: ByteBuffer?
        do {
            switch try ContentAccessMessage.decode(request) {
            case .contentKeyRequest(let wire):
                guard let chunk = ChunkID(bytes: wire.bytes) else { throw WireError(.malformed, "a content id is 32 bytes") }
                switch await keys.answer(for: ContentID(chunk)) {
                case .key(let key): answer = ContentAccessMessage.contentKey(content: wire, key: key).encoded()
                case .private(let reason): answer = STOQMessage.error(code: ContentAccessProtocol.privateCode, message: ContentAccessProtocol.clip(reason)).encoded()
                case .notFound(let reason): answer = STOQMessage.error(code: ContentAccessProtocol.notFoundCode, message: ContentAccessProtocol.clip(reason)).encoded()
                case .unavailable(let reason): answer = STOQMessage.error(code: ChunkErrorCode.internalError, message: ContentAccessProtocol.clip(reason)).encoded()
                }
            case .purge(let wire, let purgeID, let depth):
                guard let chunk = ChunkID(bytes: wire.bytes) else { throw WireError(.malformed, "a content id is 32 bytes") }
                // Issue 15: PURGE needs the purge right (operator, publisher, a grant) unless it comes down from upstream.
                let decision = await access?.check(.purge, item: .content(wire.bytes), peer: connection.peerNodeID, connection: ObjectIdentifier(connection))
                if case .denied(let why) = decision, !(await purges.isUpstream(connection)) {
                    answer = STOQMessage.error(code: AccessPolicy.noGrantCode, message: ContentAccessProtocol.clip(why)).encoded()
                    break
                }
                let started = ContinuousClock.now
                let repeated = await purges.isRepeat(purgeID)
                let totals = await purges.purge(ContentID(chunk), purgeID: purgeID, depth: depth, from: connection)
                answer = ContentAccessMessage.purged(totals).encoded()
                // Issue 15 item 7: the purge, who sent it (an operator, a grant holder, the upstream) and what it dropped here.
                var grant: [UInt8]?
                if case .grant(let id) = decision { grant = id }
                if !repeated { audit?.note(.purged, content: ContentID(chunk), peer: connection.peerNodeID, bytes: Int64(clamping: totals.localBytes),
                            chunks: Int(clamping: totals.localChunks), duration: ContinuousClock.now - started, grant: grant) }
            case .purgeSubscribe:
                if await purges.subscribe(connection) {
                    answer = ContentAccessMessage.purged(.init()).encoded()
                } else {
                    answer = STOQMessage.error(code: ContentAccessProtocol.privateCode, message: "this node already passes purges to \(PurgeCoordinator.maximumSubscribers) edges; no more").encoded()
                }
            case .contentKey, .purged:
                answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "unexpected request \(request.type): CONTENT_KEY and PURGED are answers").encoded()
            }
        } catch {
            answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: ContentAccessProtocol.clip("malformed \(request.type) request: \((error as? WireError)?.reason ?? "\(error)"); see docs/PROTOCOL.md, \"Public content and purge\"")).encoded()
        }
        do {
            if let answer { try await stream.write(answer) }
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    public func status() async -> [String: any Sendable]? {
        let k = await keys.counters
        let p = await purges.counters
        return ["public_keys_held": await keys.heldKeys, "keys_handed_out": k.handedOut, "keys_learnt": k.learnt,
                "refused_private": k.refusedPrivate, "upstream_key_requests": k.upstreamAsks, "bad_keys": k.badKeys,
                "purges": p.purges, "purged_chunks": p.droppedChunks, "purged_bytes": p.droppedBytes, "purges_forwarded": p.forwarded,
                "purge_subscribers": await purges.subscriberCount]
    }
}

/// ERROR codes of the content access requests.
public enum ContentAccessProtocol {
    /// Not found: neither the node nor its upstream knows the content.
    public static let notFoundCode: UInt64 = 0x3
    /// Refused: the content is private (no key is handed out), or a limit was reached.
    public static let privateCode: UInt64 = 0x4
    /// The largest answer a client reads.
    public static let maximumAnswerLength = 2048

    /// `text` cut to fit an ERROR message (1024 bytes), at a character boundary.
    static func clip(_ text: String) -> String {
        guard text.utf8.count > 1000 else { return text }
        var out = ""
        for character in text {
            guard out.utf8.count + character.utf8.count <= 997 else { break }
            out.append(character)
        }
        return out + "..."
    }
}

extension PeerClient {
    /// Asks the peer for the read key of `content`.
    /// - Returns: the key, or what the peer said instead (private, unknown, unavailable).
    /// - Throws: transport errors; ``NodeError`` `.refused` when the peer does not know the request
    ///   (an older node), `.protocolViolation` for a malformed answer.
    public func contentKey(for content: ContentID) async throws -> ContentKeyAnswer {
        let wire = WireID(content.manifest.bytes)!
        switch try await accessRequest(.contentKeyRequest(content: wire)) {
        case .access(.contentKey(let echoed, let key)):
            guard echoed == wire else { throw NodeError(.protocolViolation, "\(name) answered the key request for \(content) with the key of another content") }
            return .key(key)
        case .error(ContentAccessProtocol.privateCode, let message): return .private("\(name): \(message)")
        case .error(ContentAccessProtocol.notFoundCode, let message): return .notFound("\(name): \(message)")
        case .error(ChunkErrorCode.internalError, let message): return .unavailable("\(name): \(message)")
        case .error(_, let message): throw NodeError(.refused, "\(name) refused the key request: \(message)")
        case .access(let other): throw NodeError(.protocolViolation, "\(name) answered CONTENT_KEY_REQUEST with \(other.frame().type)")
        case .none: throw NodeError(.protocolViolation, "\(name) closed the stream without answering CONTENT_KEY_REQUEST")
        }
    }

    /// Asks the peer to purge `content` (drop its cached chunks there and below).
    /// - Returns: what was dropped.
    public func purge(_ content: ContentID, purgeID: UInt64 = UInt64.random(in: 0 ... .max), depth: UInt64 = 0) async throws -> ContentAccessMessage.PurgeTotals {
        let wire = WireID(content.manifest.bytes)!
        switch try await accessRequest(.purge(content: wire, purgeID: purgeID, depth: depth)) {
        case .access(.purged(let totals)): return totals
        case .error(_, let message): throw NodeError(.refused, "\(name) refused the purge: \(message)")
        case .access(let other): throw NodeError(.protocolViolation, "\(name) answered PURGE with \(other.frame().type)")
        case .none: throw NodeError(.protocolViolation, "\(name) closed the stream without answering PURGE")
        }
    }

    /// Tells the peer (this edge's upstream) to pass its purges on over this connection.
    public func subscribePurges() async throws {
        switch try await accessRequest(.purgeSubscribe) {
        case .access(.purged): return
        case .error(_, let message): throw NodeError(.refused, "\(name) refused PURGE_SUBSCRIBE: \(message)")
        case .access(let other): throw NodeError(.protocolViolation, "\(name) answered PURGE_SUBSCRIBE with \(other.frame().type)")
        case .none: throw NodeError(.protocolViolation, "\(name) closed the stream without answering PURGE_SUBSCRIBE")
        }
    }

    private enum AccessAnswer {
        case access(ContentAccessMessage)
        case error(UInt64, String)
    }

    private func accessRequest(_ message: ContentAccessMessage) async throws -> AccessAnswer? {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(message.encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: ContentAccessProtocol.maximumAnswerLength)
        decoder.handle(bytes: try await stream.readAll(limit: ContentAccessProtocol.maximumAnswerLength + 16))
        guard let frame = try decoder.pollFrame() else {
            if decoder.hasPartialFrame { throw NodeError(.protocolViolation, "\(name) sent a truncated answer") }
            return nil
        }
        if ContentAccessMessage.handles(frame.type) { return .access(try ContentAccessMessage.decode(frame)) }
        if case .error(let code, let text) = try STOQMessage.decode(frame) { return .error(code, text) }
        throw NodeError(.protocolViolation, "\(name) answered \(message.frame().type) with \(frame.type)")
    }
}
