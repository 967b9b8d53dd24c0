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
}
