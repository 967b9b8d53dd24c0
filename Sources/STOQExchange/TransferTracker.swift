import Foundation
import NIOCore
import STOQContent
import STOQIdentity
import STOQTransport

/// A node's live transfers, per peer and content, for `stoq status` and the info log: what it
/// serves (chunk responses to one peer connection, grouped by the content they belong to) and
/// what it fetches (an edge's fills from its upstream, grouped by content).
///
/// Chunks are requested by id, so a served chunk is counted under the content the connection last
/// asked about (its `WANT`), or, before any `WANT`, the first chunk that connection asked for (a
/// fetch starts with the content's root manifest). A transfer is finished when nothing moved for
/// ``idle`` and no response is in flight, or when its connection closes; ``sweep(all:)`` hands the
/// finished ones back (to log one line each) and forgets them.
///
/// Sans-IO: time comes from the injected clock (seconds, monotonic). Bounded: at most
/// ``maximumTransfers`` transfers and as many connections are tracked; beyond that new ones are
/// not tracked (counters elsewhere still count them).
///
/// `@unchecked Sendable`: state behind `lock`.
public final class TransferTracker: @unchecked Sendable {
    /// Which way the bytes go.
    public enum Direction: String, Sendable, Hashable {
        /// This node sends chunks to a peer.
        case serve
        /// This node fetches chunks from peers (an edge filling misses).
        case fetch
    }

    /// One transfer, as `stoq status` shows it.
    public struct Transfer: Sendable, Equatable {
        /// Which way.
        public var direction: Direction
        /// The content (`stoq:…`).
        public var content: String
        /// The peer(s): the requester of a serve, the sources of a fetch (names, see ``PeerNames``).
        public var peers: [String]
        /// Chunk bytes moved so far.
        public var bytes: Int
        /// Chunks completed so far.
        public var chunks: Int
        /// Chunk responses (or fills) in flight now.
        public var inFlight: Int
        /// Seconds since it began.
        public var seconds: Double
        /// Recent rate in bytes/s (over the last one to two seconds; the average before that).
        public var bytesPerSecond: Double
        /// Seconds since bytes last moved.
        public var idleSeconds: Double
    }

    /// A finished transfer: what the info log line says.
    public struct Finished: Sendable, Equatable {
        /// Which way.
        public var direction: Direction
        /// The content (`stoq:…`).
        public var content: String
        /// The peer(s).
        public var peers: [String]
        /// Bytes moved.
        public var bytes: Int
        /// Chunks moved.
        public var chunks: Int
        /// Seconds from the first request to the last byte.
        public var seconds: Double
        /// The access grant the transfer was made under (its 16-byte id; nil: none), as
        /// ``setGrant(_:for:)`` noted it.
        public var grant: [UInt8]? = nil
        /// Average rate in bytes/s over ``seconds``.
        public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : Double(bytes) }
    }

    /// A handle on one chunk response or fill in progress.
    public struct Token: Sendable, Hashable {
        fileprivate let key: Key
    }

    fileprivate struct Key: Hashable {
        var direction: Direction
        /// The connection of a serve (nil for fetches: an edge's fills of one content are one fetch).
        var connection: ObjectIdentifier?
        var content: String
    }

    private struct Entry {
        var peers: [String]
        var bytes = 0
        var chunks = 0
        var inFlight = 0
        var started: Double
        var lastActivity: Double
        var windowStart: Double
        var windowBytes = 0
        var previousStart: Double
        var previousBytes = 0
        /// The grant the transfer was made under.
        var grant: [UInt8]?
        /// Whether its grant was looked up (``claimGrantCheck(_:)``).
        var grantChecked = false
    }

    /// How long a transfer may sit without bytes or requests before it counts as finished.
    public let idle: Double
    /// The most transfers (and connections) tracked at once.
    public let maximumTransfers: Int
    private let now: @Sendable () -> Double
    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]
    /// The content each connection is reading (from its WANT, or its first chunk).
    private var contentOf: [ObjectIdentifier: String] = [:]
    private var finished: [Finished] = []

    /// Creates a tracker.
    /// - Parameters:
    ///   - idle: seconds without progress after which a transfer is finished (default 3).
    ///   - maximumTransfers: bound on transfers and connections tracked (default 4096).
    ///   - now: the clock, in seconds (default: a monotonic clock).
    public init(idle: Double = 3, maximumTransfers: Int = 4096, now: (@Sendable () -> Double)? = nil) {
        self.idle = idle
        self.maximumTransfers = max(1, maximumTransfers)
        if let now {
            self.now = now
        } else {
            let origin = ContinuousClock.now
            self.now = { (ContinuousClock.now - origin).seconds }
        }
    }

    /// Notes that `connection` asked about `content` (its WANT): the chunks it requests next count
    /// under that content.
    public func reading(_ content: ContentID, on connection: ObjectIdentifier) {
        lock.withLock {
            guard contentOf[connection] != nil || contentOf.count < maximumTransfers else { return }
            contentOf[connection] = content.description
        }
    }

    /// The content `connection` is reading (its WANT, or the first chunk it asked for), if known.
    public func content(readBy connection: ObjectIdentifier) -> String? {
        lock.withLock { contentOf[connection] }
    }

    /// A chunk response to `peer` on `connection` begins. Returns nil when the tracker is full.
    public func beginServe(chunk: ChunkID, connection: ObjectIdentifier, peer: String) -> Token? {
        lock.withLock {
            let content: String
            if let known = contentOf[connection] {
                content = known
            } else {
                content = ContentID(chunk).description
                if contentOf.count < maximumTransfers { contentOf[connection] = content }
            }
            return beginLocked(Key(direction: .serve, connection: connection, content: content), peer: peer)
        }
    }

    /// A fill of a chunk of `content` from `peer` begins. Returns nil when the tracker is full.
    public func beginFetch(content: ContentID, peer: String) -> Token? {
        beginFetch(content: content.description, peer: peer)
    }

    /// A fill of a chunk of `content` (as ``content(readBy:)`` named it) from `peer` begins.
    public func beginFetch(content: String, peer: String) -> Token? {
        lock.withLock { beginLocked(Key(direction: .fetch, connection: nil, content: content), peer: peer) }
    }

    private func beginLocked(_ key: Key, peer: String) -> Token? {
        let t = now()
        if entries[key] == nil {
            guard entries.count < maximumTransfers else { return nil }
            entries[key] = Entry(peers: [peer], started: t, lastActivity: t, windowStart: t, previousStart: t)
        } else if !entries[key]!.peers.contains(peer), entries[key]!.peers.count < 16 {
            entries[key]!.peers.append(peer)
        }
        entries[key]!.inFlight += 1
        entries[key]!.lastActivity = t
        return Token(key: key)
    }

    /// The content (`stoq:…`) `token`'s transfer counts under.
    public func content(of token: Token) -> String { token.key.content }

    /// True the first time it is asked for `token`'s transfer: the caller then looks up the grant
    /// the transfer is made under (once per transfer, not per chunk) and notes it with
    /// ``setGrant(_:for:)``.
    public func claimGrantCheck(_ token: Token) -> Bool {
        lock.withLock {
            guard entries[token.key] != nil, !entries[token.key]!.grantChecked else { return false }
            entries[token.key]!.grantChecked = true
            return true
        }
    }

    /// Notes the access grant (its 16-byte id) `token`'s transfer is made under; the audit
    /// record of the transfer names it.
    public func setGrant(_ grant: [UInt8], for token: Token) {
        guard grant.count == 16 else { return }
        lock.withLock { entries[token.key]?.grant = grant }
    }

    /// `bytes` more moved for `token`.
    public func add(_ token: Token?, bytes: Int) {
        guard let token, bytes > 0 else { return }
        lock.withLock {
            guard var e = entries[token.key] else { return }
            let t = now()
            e.bytes += bytes
            if t - e.windowStart >= 1 {
                e.previousStart = e.windowStart
                e.previousBytes = e.windowBytes
                e.windowStart = t
                e.windowBytes = 0
            }
            e.windowBytes += bytes
            e.lastActivity = t
            entries[token.key] = e
        }
    }

    /// The response or fill of `token` ended; `completed` when its chunk went through whole.
    public func end(_ token: Token?, completed: Bool = true) {
        guard let token else { return }
        lock.withLock {
            guard var e = entries[token.key] else { return }
            e.inFlight = max(0, e.inFlight - 1)
            if completed { e.chunks += 1 }
            e.lastActivity = now()
            entries[token.key] = e
        }
    }

    /// `connection` closed: its transfers are finished now, and what it was reading is forgotten.
    public func closed(_ connection: ObjectIdentifier) {
        lock.withLock {
            contentOf[connection] = nil
            for (key, entry) in entries where key.connection == connection {
                finished.append(Self.finish(key, entry))
                entries[key] = nil
            }
        }
    }

    /// The transfers finished since the last call (idle ones are finished now), oldest first.
    /// - Parameter all: finish every transfer, idle or not (the node is closing).
    public func sweep(all: Bool = false) -> [Finished] {
        lock.withLock {
            let t = now()
            for (key, entry) in entries where all || (entry.inFlight == 0 && t - entry.lastActivity >= idle) {
                finished.append(Self.finish(key, entry))
                entries[key] = nil
                // A long-lived connection (an edge's to its upstream) reads one content after
                // another: the next chunk it asks for names the next one.
                if let connection = key.connection, contentOf[connection] == key.content { contentOf[connection] = nil }
            }
            defer { finished.removeAll() }
            return finished
        }
    }

    /// Every transfer still going (also idle ones that the next ``sweep(all:)`` finishes),
    /// oldest first.
    public func snapshot() -> [Transfer] {
        lock.withLock {
            let t = now()
            return entries.sorted { ($0.value.started, $0.key.content) < ($1.value.started, $1.key.content) }.map { key, e in
                // Bytes of the current and the previous window over their time: a rate that follows
                // the last second or two and decays while nothing moves.
                let rate = Double(e.previousBytes + e.windowBytes) / max(t - e.previousStart, 0.001)
                return Transfer(direction: key.direction, content: key.content, peers: e.peers, bytes: e.bytes, chunks: e.chunks,
                                inFlight: e.inFlight, seconds: t - e.started, bytesPerSecond: rate, idleSeconds: t - e.lastActivity)
            }
        }
    }

    /// Transfers tracked now.
    public var count: Int { lock.withLock { entries.count } }

    private static func finish(_ key: Key, _ e: Entry) -> Finished {
        Finished(direction: key.direction, content: key.content, peers: e.peers, bytes: e.bytes, chunks: e.chunks,
                 seconds: max(0, e.lastActivity - e.started), grant: e.grant)
    }
}

/// The names of a node's peers for people: the certificate's common name with the short node id,
/// `edge-1 (3fa2c1d04b5e6f70)`; a reader without a certificate is `anonymous [ADDR]:PORT`.
///
/// Remembers the names of the node ids it saw (bounded), so the routing table and health list
/// can name nodes by id and address.
///
/// `@unchecked Sendable`: state behind `lock`.
public final class PeerNames: @unchecked Sendable {
    /// One peer's identity.
    public struct Identity: Sendable, Hashable {
        /// The certificate's common name (nil when it has none).
        public var name: String?
        /// The node id.
        public var nodeID: NodeID
        /// `NAME (SHORTID)`, or the short id alone.
        public var label: String { name.map { "\($0) (\(nodeID.short))" } ?? nodeID.short }
        /// Creates an identity.
        public init(name: String?, nodeID: NodeID) {
            self.name = name
            self.nodeID = nodeID
        }
    }

    /// The most identities remembered.
    public let maximumEntries: Int
    private let lock = NSLock()
    private var byConnection: [ObjectIdentifier: String] = [:]
    private var byNodeID: [NodeID: Identity] = [:]
    private var byAddress: [String: Identity] = [:]
    private var byLabel: [String: NodeID] = [:]

    /// Creates an empty directory.
    public init(maximumEntries: Int = 4096) { self.maximumEntries = max(1, maximumEntries) }

    /// The identity a certificate chain's leaf proves (nil: no certificate, or unreadable).
    public static func identity(ofChain chain: [[UInt8]]) -> Identity? {
        guard let leaf = chain.first, let info = CertificateInfo(derEncoded: leaf) else { return nil }
        return Identity(name: info.commonName, nodeID: info.nodeID)
    }

    /// `[HOST]:PORT` of a socket address.
    public static func address(_ socket: SocketAddress) -> String {
        "[\(socket.ipAddress ?? "?")]:\(socket.port ?? 0)"
    }

    /// The label of `connection`'s peer, learnt once per connection.
    public func label(of connection: Connection) -> String {
        let key = ObjectIdentifier(connection)
        if let known = lock.withLock({ byConnection[key] }) { return known }
        let address = Self.address(connection.remoteAddress)
        let identity = Self.identity(ofChain: connection.peerCertificateChain)
        let label = identity?.label ?? "anonymous \(address)"
        lock.withLock {
            if byConnection.count < maximumEntries { byConnection[key] = label }
            if let identity {
                if byNodeID[identity.nodeID] != nil || byNodeID.count < maximumEntries { byNodeID[identity.nodeID] = identity }
                if byLabel[label] != nil || byLabel.count < maximumEntries { byLabel[label] = identity.nodeID }
                // A dialled connection's remote address is the peer's listening address.
                if !connection.isServer, byAddress[address] != nil || byAddress.count < maximumEntries { byAddress[address] = identity }
            }
        }
        return label
    }

    /// Forgets a closed connection (the node id and address stay known).
    public func closed(_ connection: ObjectIdentifier) {
        _ = lock.withLock { byConnection.removeValue(forKey: connection) }
    }

    /// The identity of a node id seen on a connection.
    public func identity(of nodeID: NodeID) -> Identity? { lock.withLock { byNodeID[nodeID] } }

    /// The identity of the peer this node dialled at `address` (`[HOST]:PORT`).
    public func identity(atAddress address: String) -> Identity? { lock.withLock { byAddress[address] } }

    /// The node id behind a label ``label(of:)`` gave (nil: an anonymous reader, or not seen).
    public func nodeID(ofLabel label: String) -> NodeID? { lock.withLock { byLabel[label] } }

    /// Every identity seen.
    public var identities: [Identity] { lock.withLock { Array(byNodeID.values) } }

    /// Remembers an identity learnt elsewhere (the node's own).
    public func remember(_ identity: Identity) {
        lock.withLock { byNodeID[identity.nodeID] = identity }
    }
}
