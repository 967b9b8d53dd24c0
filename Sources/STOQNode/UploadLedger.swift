import STOQContent

/// Why an upload request was refused: an ERROR code and a message for people.
public struct UploadRefusal: Error, Sendable, Equatable {
    /// The ERROR code (``UploadProtocol``).
    public var code: UInt64
    /// What happened and what to do.
    public var message: String
    /// Creates a refusal.
    public init(_ code: UInt64, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// ERROR codes of the upload requests.
public enum UploadProtocol {
    /// The request was malformed, or names an upload or chunk that does not exist.
    public static let badRequest: UInt64 = 0x1
    /// The origin failed (its store, its publisher key).
    public static let internalError: UInt64 = 0x2
    /// Refused: a bound was reached (uploads per connection, uploads at once, chunks in flight).
    public static let limitExceeded: UInt64 = 0x4
    /// The identity is not allowed to make this request (not a publisher of this origin).
    public static let forbidden: UInt64 = 0x5
}

/// The uploads in progress on an origin: sans-IO bookkeeping (the clock is passed in), bounded.
///
/// An upload is owned by the connection that offered it; only that connection sends its chunks
/// and commits it. An upload idle for ``Limits/idle`` is dropped (its chunks stay stored and
/// indexed, so an offer of the same content after a lost connection asks only for the rest).
public struct UploadLedger<Owner: Hashable & Sendable>: Sendable {
    /// The bounds.
    public struct Limits: Sendable {
        /// Uploads one connection holds open at once.
        public var perConnection = 4
        /// Uploads open at once on the node.
        public var total = 64
        /// Chunks of one upload being received at once.
        public var chunksInFlight = 32
        /// An upload without a request for this long is dropped.
        public var idle: Duration = .seconds(300)
        /// Creates the default limits.
        public init() {}
    }

    /// One upload in progress.
    public struct Session: Sendable {
        /// Its id (random).
        public let id: UInt64
        /// The connection that offered it.
        public let owner: Owner
        /// What was offered.
        public let tree: UploadTree
        /// The pin name.
        public let name: String
        /// Whether the content is public.
        public let isPublic: Bool
        /// Chunk indices still lacking.
        public internal(set) var needed: Set<Int>
        /// Chunk indices being received now.
        public internal(set) var inFlight: Set<Int> = []
        /// Chunks received in this upload.
        public internal(set) var received = 0
        /// Plaintext bytes received in this upload.
        public internal(set) var receivedBytes: Int64 = 0
        /// When it was last used.
        var lastActive: ContinuousClock.Instant
        /// When it was offered.
        let opened: ContinuousClock.Instant = .now
    }

    /// The bounds in force.
    public let limits: Limits
    private var sessions: [UInt64: Session] = [:]

    /// Creates an empty ledger.
    public init(limits: Limits = Limits()) { self.limits = limits }

    /// Uploads open now.
    public var count: Int { sessions.count }

    /// Opens an upload of `tree` whose chunks `needed` the store lacks.
    /// - Throws: ``UploadRefusal`` `limitExceeded` when the connection or the node holds too many.
    public mutating func open(owner: Owner, tree: UploadTree, name: String, isPublic: Bool, needed: [Int], now: ContinuousClock.Instant,
                              id: UInt64 = UInt64.random(in: 1 ... .max)) throws(UploadRefusal) -> UInt64 {
        expire(now: now)
        guard sessions.values.filter({ $0.owner == owner }).count < limits.perConnection else {
            throw UploadRefusal(UploadProtocol.limitExceeded, "this connection already has \(limits.perConnection) uploads open; commit or finish one first")
        }
        guard sessions.count < limits.total else {
            throw UploadRefusal(UploadProtocol.limitExceeded, "the origin has \(limits.total) uploads open; try again in a minute")
        }
        var id = id
        while sessions[id] != nil { id &+= 1 }
        sessions[id] = Session(id: id, owner: owner, tree: tree, name: name, isPublic: isPublic, needed: Set(needed), lastActive: now)
        return id
    }

    /// Starts receiving chunk `index` of upload `id` (`length` bytes announced).
    /// - Returns: what the offer said of it, and its file's content type.
    /// - Throws: ``UploadRefusal`` for an unknown upload, another connection's upload, an index out
    ///   of range, a length that differs from the offer, or too many chunks at once.
    public mutating func beginChunk(id: UInt64, owner: Owner, index: Int, length: Int, now: ContinuousClock.Instant) throws(UploadRefusal) -> (chunk: UploadChunk, contentType: String) {
        guard var s = try session(id, owner: owner, now: now) else {
            throw UploadRefusal(UploadProtocol.badRequest, "no upload \(id) is open on this connection (it was committed, or dropped after \(limits.idle) idle); offer the content again")
        }
        guard index >= 0, index < s.tree.chunks.count else {
            throw UploadRefusal(UploadProtocol.badRequest, "upload \(id) has \(s.tree.chunks.count) chunks; there is no chunk \(index)")
        }
        let chunk = s.tree.chunks[index]
        guard chunk.length == length else {
            throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of upload \(id) was offered with \(chunk.length) bytes, not \(length)")
        }
        guard s.inFlight.count < limits.chunksInFlight else {
            throw UploadRefusal(UploadProtocol.limitExceeded, "upload \(id) already has \(limits.chunksInFlight) chunks in flight; send fewer at once")
        }
        guard s.inFlight.insert(index).inserted else {
            throw UploadRefusal(UploadProtocol.badRequest, "chunk \(index) of upload \(id) is already being received")
        }
        s.lastActive = now
        sessions[id] = s
        return (chunk, s.tree.chunkTypes[index])
    }

    /// Ends the receipt of chunk `index`: `stored` when it was verified and stored.
    /// - Returns: the distinct chunks the upload still lacks.
    @discardableResult
    public mutating func endChunk(id: UInt64, index: Int, stored: Bool, now: ContinuousClock.Instant) -> Int {
        guard var s = sessions[id] else { return 0 }
        s.inFlight.remove(index)
        if stored, index < s.tree.chunks.count {
            // NEED lists the first index of each distinct chunk, so one receipt satisfies it.
            if s.needed.remove(index) != nil {
                s.received += 1
                s.receivedBytes += Int64(s.tree.chunks[index].length)
            }
        }
        s.lastActive = now
        sessions[id] = s
        return s.needed.count
    }

    /// Closes upload `id` for its commit.
    /// - Throws: ``UploadRefusal`` when it is unknown, another connection's, or still lacks chunks.
    public mutating func takeForCommit(id: UInt64, owner: Owner, now: ContinuousClock.Instant) throws(UploadRefusal) -> Session {
        guard let s = try session(id, owner: owner, now: now) else {
            throw UploadRefusal(UploadProtocol.badRequest, "no upload \(id) is open on this connection; offer the content again")
        }
        guard s.needed.isEmpty, s.inFlight.isEmpty else {
            throw UploadRefusal(UploadProtocol.badRequest, "upload \(id) still lacks \(s.needed.count) chunks (\(s.inFlight.count) arriving); send them before the commit")
        }
        sessions[id] = nil
        return s
    }

    /// Drops every upload of `owner` (its connection closed).
    public mutating func drop(owner: Owner) {
        sessions = sessions.filter { $0.value.owner != owner }
    }

    /// Drops the uploads idle for ``Limits/idle``.
    public mutating func expire(now: ContinuousClock.Instant) {
        sessions = sessions.filter { now - $0.value.lastActive < limits.idle }
    }

    private mutating func session(_ id: UInt64, owner: Owner, now: ContinuousClock.Instant) throws(UploadRefusal) -> Session? {
        expire(now: now)
        guard let s = sessions[id] else { return nil }
        guard s.owner == owner else {
            throw UploadRefusal(UploadProtocol.forbidden, "upload \(id) belongs to another connection; offer the content on this one")
        }
        return s
    }
}
