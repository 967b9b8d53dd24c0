import Foundation
import STOQAccess
import STOQContent
import STOQIdentity
import STOQTransport

/// The chunks each connection may read on a node run with `--private-reads` because a manifest
/// it was allowed to read lists them (docs/PROTOCOL.md, "Private reads").
///
/// GET_CHUNK names a chunk, not its content. When a connection reads a manifest it is allowed to
/// read (the root of a public content, of a content a read grant covers, or a manifest allowed
/// this way), the node notes the ids the manifest lists, under the **source** that allowed it: a
/// grant id, or the empty source for public content. A later request for one of them is served
/// while that source still allows it (the grant is held, unexpired, unrevoked).
///
/// Bounded: at most ``perConnection`` ids per connection (each source keeps two generations of
/// at most half of it; when the newer fills up, the older is dropped: the least recently used ids
/// go first; a hit moves an id to the newer generation), and at most ``total`` ids on the node
/// (past it, the allowances of the connection used least recently are dropped whole).
///
/// `@unchecked Sendable`: every access goes through `lock`.
public final class ReadAllowances: @unchecked Sendable {
    /// Default bound per connection: 262,144 ids (a 4 GiB file at 16 KiB chunks), ≤ 16 MiB.
    public static let defaultPerConnection = 262_144
    /// Default bound per node: 1,048,576 ids, ≤ 64 MiB.
    public static let defaultTotal = 1_048_576

    /// The most ids one connection holds.
    public let perConnection: Int
    /// The most ids held on the node.
    public let total: Int

    private struct Generations {
        var current = Set<ChunkID>()
        var previous = Set<ChunkID>()
        var used: UInt64 = 0
        var count: Int { current.count + previous.count }
    }
    private struct Held {
        var sources: [[UInt8]: Generations] = [:]
        var used: UInt64 = 0
        var count: Int { sources.values.reduce(0) { $0 + $1.count } }
    }

    private let lock = NSLock()
    private var held: [ObjectIdentifier: Held] = [:]
    private var count = 0
    private var tick: UInt64 = 0

    /// Creates empty allowances.
    /// - Parameters:
    ///   - perConnection: the most ids one connection holds (at least 2).
    ///   - total: the most ids held on the node (at least `perConnection`).
    public init(perConnection: Int = defaultPerConnection, total: Int = defaultTotal) {
        self.perConnection = max(2, perConnection)
        self.total = max(self.perConnection, total)
    }

    /// Lets `connection` read `ids` while `source` allows it (a grant id; empty: public content).
    public func allow(_ ids: [ChunkID], source: [UInt8], connection: ObjectIdentifier) {
        guard !ids.isEmpty else { return }
        lock.withLock {
            tick += 1
            var entry = held[connection] ?? Held()
            var gens = entry.sources[source] ?? Generations()
            let half = perConnection / 2
            for id in ids where !gens.current.contains(id) {
                if gens.previous.remove(id) == nil { count += 1 }
                gens.current.insert(id)
                if gens.current.count >= half {
                    count -= gens.previous.count
                    gens.previous = gens.current
                    gens.current = []
                }
            }
            gens.used = tick
            entry.sources[source] = gens
            entry.used = tick
            // Over the connection's bound (several sources): drop the sources used least recently.
            var held = entry.count
            while held > perConnection, let oldest = entry.sources.filter({ $0.key != source }).min(by: { $0.value.used < $1.value.used }) {
                entry.sources[oldest.key] = nil
                count -= oldest.value.count
                held -= oldest.value.count
            }
            self.held[connection] = entry
            // Over the node's bound: drop whole connections, least recently used first.
            while count > total, let oldest = self.held.filter({ $0.key != connection }).min(by: { $0.value.used < $1.value.used }) {
                self.held[oldest.key] = nil
                count -= oldest.value.count
            }
        }
    }

    /// The source that lets `connection` read `id` (nil: none), moving the id to the newer generation.
    public func source(of id: ChunkID, connection: ObjectIdentifier) -> [UInt8]? {
        lock.withLock {
            guard var entry = held[connection] else { return nil }
            for (source, var gens) in entry.sources {
                if gens.current.contains(id) { return source }
                guard gens.previous.remove(id) != nil else { continue }
                gens.current.insert(id)
                if gens.current.count >= perConnection / 2 {
                    count -= gens.previous.count
                    gens.previous = gens.current
                    gens.current = []
                }
                tick += 1
                gens.used = tick
                entry.used = tick
                entry.sources[source] = gens
                held[connection] = entry
                return source
            }
            return nil
        }
    }

    /// Forgets what `source` allowed `connection` (its grant expired, was revoked or dropped).
    public func drop(source: [UInt8], connection: ObjectIdentifier) {
        lock.withLock {
            guard let gens = held[connection]?.sources.removeValue(forKey: source) else { return }
            count -= gens.count
        }
    }

    /// Forgets a closed connection.
    public func closed(_ connection: ObjectIdentifier) {
        lock.withLock {
            guard let entry = held.removeValue(forKey: connection) else { return }
            count -= entry.count
        }
    }

    /// Ids held for `connection`.
    public func count(for connection: ObjectIdentifier) -> Int { lock.withLock { held[connection]?.count ?? 0 } }

    /// Connections holding allowances, and ids held on the node (status).
    public var stats: (connections: Int, ids: Int) { lock.withLock { (held.count, count) } }
}

/// The `read` right enforced (`stoq node --private-reads`; docs/PROTOCOL.md, "Private reads"):
/// GET_CHUNK and WANT of content that is not public are answered only to the node itself, its
/// operators, publishers and `--private-reader` ids, and to connections that presented a read
/// grant covering the content (then for the chunks its manifests list, ``ReadAllowances``).
/// Everything else gets ERROR 7 saying which grant to present.
public struct ReadGate: Sendable {
    /// What the gate decided for one request.
    public enum Decision: Sendable, Equatable {
        /// Served by the peer's role (nothing to remember).
        case role
        /// Served under `source` (a grant id; empty: public content): what a manifest lists is
        /// noted under it.
        case allowed(source: [UInt8])
        /// Refused; the message is for people (ERROR 7).
        case denied(String)
    }

    /// Roles and grants.
    public let access: AccessPolicy
    /// The per-connection allowances.
    public let allowances: ReadAllowances
    /// Whether a content is public (its read key is handed out: `stoq put --public`).
    public let isPublic: @Sendable (ContentID) async -> Bool

    /// Creates a gate.
    public init(access: AccessPolicy, allowances: ReadAllowances = ReadAllowances(), isPublic: @escaping @Sendable (ContentID) async -> Bool) {
        self.access = access
        self.allowances = allowances
        self.isPublic = isPublic
    }

    /// Whether the peer on `connection` may read chunk `id` (a content's root or any chunk).
    public func decide(_ id: ChunkID, peer: NodeID?, connection: ObjectIdentifier) async -> Decision {
        if access.hasReadRole(peer: peer) { return .role }
        var problem: String?
        if let source = allowances.source(of: id, connection: connection) {
            guard !source.isEmpty else { return .allowed(source: source) }
            if let why = await access.readGrantProblem(source, connection: connection) {
                allowances.drop(source: source, connection: connection)
                problem = why
            } else {
                return .allowed(source: source)
            }
        }
        let decision = await access.check(.read, item: .content(id.bytes), peer: peer, connection: connection)
        if case .grant(let grant) = decision { return .allowed(source: grant) }
        if await isPublic(ContentID(id)) { return .allowed(source: []) }
        guard case .denied(let why) = decision else { return .role }
        var message = "chunk \(id) is not public content on this node (it runs with --private-reads), and this connection was given no read right to it"
        if let problem { message += " (\(problem))" }
        message += ". Present the read grant before any WANT or GET_CHUNK of the content and fetch from its root (the content id): "
        message += why
        return .denied(message)
    }

    /// Notes what a manifest served under `decision` lists (no-op for data chunks and roles).
    public func learn(_ bytes: [UInt8], decision: Decision, connection: ObjectIdentifier) {
        guard case .allowed(let source) = decision, let children = Self.children(of: bytes) else { return }
        allowances.allow(children, source: source, connection: connection)
    }

    /// Notes every chunk of a content (its manifests and data chunks), for a WANT of its root
    /// allowed under `decision`: a reader that has the manifests already (a resumed fetch) asks
    /// for data chunks only.
    public func learn(plan: ContentPlan, decision: Decision, connection: ObjectIdentifier) {
        guard case .allowed(let source) = decision else { return }
        allowances.allow(plan.batch.chunks.map { $0.0 } + plan.dataChunks.map(\.id), source: source, connection: connection)
    }

    /// The ids a manifest (`STQD`, `STQM` or a sealed index `STQE`) lists; nil for anything else.
    public static func children(of bytes: [UInt8]) -> [ChunkID]? {
        if SealedIndex.looksLike(bytes) { return (try? SealedIndex.decode(bytes))?.entries.map(\.id) }
        guard bytes.starts(with: DirectoryManifest.magic) || bytes.starts(with: FileManifest.magic) else { return nil }
        return (try? AnyManifest.decode(bytes))?.children
    }
}
