import Crypto
import STOQContent
import STOQEdge
import STOQNode

/// The read key for a content id, or nil when this node may not decrypt it (private content).
///
/// A node fills it: today with the key its own `publisher.key` (or `--publisher-key`) derives,
/// which opens what that publisher put; public content's keys handed down by an origin plug in here.
public typealias ReadKeyLookup = @Sendable (ContentID) async -> SymmetricKey?

/// A running node as the HTTP front door sees it: its store, then (on an edge) its upstream
/// through the edge's chunk provider (which caches what it fetched and already shares one upstream
/// fetch among concurrent misses); its name directory; and a read-key lookup.
public struct NodeContentSource: HTTPContentSource {
    private let store: any ChunkStore
    private let edge: EdgeChunkProvider?
    private let names: NameDirectory
    private let keys: ReadKeyLookup

    /// Wraps a node.
    /// - Parameters:
    ///   - node: the running node.
    ///   - readKey: which content the node may decrypt.
    public init(node: Node, readKey: @escaping ReadKeyLookup) {
        self.store = node.store
        self.edge = node.edge
        self.names = node.names
        self.keys = readKey
    }

    public func chunk(_ id: ChunkID, reader: ObjectIdentifier?) async throws -> SourcedChunk? {
        if let edge {
            let cached = (try? store.contains(id)) ?? false
            // With a reader, the edge follows its position in the file and fetches ahead of it.
            let bytes: [UInt8]?
            if let reader { bytes = try await edge.chunk(id, reader: reader, fill: FillProgress()) } else { bytes = try await edge.chunk(id) }
            return bytes.map { SourcedChunk(bytes: $0, fromCache: cached) }
        }
        // Not an edge: the store is all there is (its read checks the bytes against the id).
        do {
            return SourcedChunk(bytes: try store.read(id), fromCache: true)
        } catch let error as ContentError where error.code == .notFound {
            return nil
        }
    }

    public func readKey(for content: ContentID) async -> SymmetricKey? { await keys(content) }

    public func resolve(name: String) async throws -> NameBinding? {
        let record: NameRecord?
        do {
            record = try await names.resolve(name, subscribe: false, from: nil)
        } catch let error as NameRecordError {
            throw HTTPProblem(502, "the record this node got for '\(ContentRoute.printable(name))' was refused (\(error.code)); try again later")
        }
        guard let record else { return nil }
        let ttl = await names.remainingTTL(of: name) ?? record.ttlSeconds
        return NameBinding(name: name, content: record.content, version: record.version, maxAge: ttl)
    }

    public func nameChanges() async -> AsyncStream<String>? { await names.changes() }

    /// A lookup that asks each of `lookups` in turn and takes the first key found (for example the
    /// read keys of public content handed down by an origin, then the node's own publisher key).
    public static func firstKey(of lookups: [ReadKeyLookup]) -> ReadKeyLookup {
        { id in
            for lookup in lookups {
                if let key = await lookup(id) { return key }
            }
            return nil
        }
    }

    /// The lookup of a node that can read what one publisher key opens (its store's
    /// `publisher.key`, or the file given with `--publisher-key`); nil keys: it can read nothing.
    public static func publisherReadKey(_ keys: PublisherKeys?) -> ReadKeyLookup {
        let key = keys?.readKey
        return { _ in key }
    }

    /// The lookup of a running node's front door: the read keys of public contents first (the
    /// node's own `public.keys`, and on an edge those its upstream hands down), then the publisher
    /// key `publisher`, but only for a content whose key table it opens. So a node never lists
    /// another publisher's directory whose files it could not decrypt.
    public static func nodeReadKey(node: Node, publisher: PublisherKeys?) -> ReadKeyLookup {
        let publicKeys = node.publicKeys
        let checked = PublisherKeyCheck(key: publisher?.readKey, load: loader(node))
        return firstKey(of: [
            { id in await publicKeys.readKey(for: id).map { SymmetricKey(data: $0) } },
            { id in await checked.key(for: id) },
        ])
    }

    /// How a key is checked against a content on `node`: its manifests through the edge (which
    /// fetches upstream and caches) or from the store.
    static func loader(_ node: Node) -> @Sendable (ChunkID) async throws -> [UInt8]? {
        if let edge = node.edge { return { id in try await edge.chunk(id) } }
        let store = node.store
        return { id in
            do { return try store.read(id) } catch let error as ContentError where error.code == .notFound { return nil }
        }
    }
}

/// The node's publisher read key, handed out only for a content whose key table it opens
/// (``PublicKeyDirectory/check(key:root:load:)``); answers are remembered (at most
/// ``capacity`` ids; when full the memory is dropped and rebuilt).
public actor PublisherKeyCheck {
    /// Contents remembered at most.
    static let capacity = 4096
    private let key: SymmetricKey?
    private let load: @Sendable (ChunkID) async throws -> [UInt8]?
    private var known: [ContentID: Bool] = [:]

    /// A check of `key` (nil: no key, nothing opens) loading manifests with `load`.
    public init(key: SymmetricKey?, load: @escaping @Sendable (ChunkID) async throws -> [UInt8]?) {
        self.key = key
        self.load = load
    }

    /// The key when it opens `content`; nil when it does not, or when that cannot be told yet
    /// (a manifest not available: asked again next time).
    public func key(for content: ContentID) async -> SymmetricKey? {
        guard let key else { return nil }
        if let opens = known[content] { return opens ? key : nil }
        let raw = key.withUnsafeBytes { [UInt8]($0) }
        let answer = await PublicKeyDirectory.check(key: raw, root: content, load: load)
        let opens: Bool
        switch answer {
        case .opens: opens = true
        case .doesNotOpen: opens = false
        case .cannotTell: return nil
        }
        if known.count >= Self.capacity { known.removeAll() }
        known[content] = opens
        return opens ? key : nil
    }
}
