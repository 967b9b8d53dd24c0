import Crypto
import STOQContent
import Synchronization

/// A chunk as a ``HTTPContentSource`` hands it over.
public struct SourcedChunk: Sendable {
    /// The stored bytes (verified against their id by the source, or authenticated when decrypted).
    public var bytes: [UInt8]
    /// Whether they came from this node's own store (a cache hit) rather than from upstream.
    public var fromCache: Bool

    /// Creates a sourced chunk.
    public init(bytes: [UInt8], fromCache: Bool) {
        self.bytes = bytes
        self.fromCache = fromCache
    }
}

/// What a published name points at now, as an HTTP reader sees it.
public struct NameBinding: Sendable, Equatable {
    /// The name.
    public var name: String
    /// The content it points to.
    public var content: ContentID
    /// The record's version.
    public var version: UInt64
    /// Seconds the record stays valid on this node (its remaining TTL): the `max-age` sent.
    public var maxAge: UInt32

    /// Creates a binding.
    public init(name: String, content: ContentID, version: UInt64, maxAge: UInt32) {
        self.name = name
        self.content = content
        self.version = version
        self.maxAge = maxAge
    }
}

/// Everything the HTTP front door needs from a node: chunks (store first, then upstream), read
/// keys, and names. A node fills it (``NodeContentSource``); tests give a memory one.
public protocol HTTPContentSource: Sendable {
    /// The stored bytes of chunk `id` (data or manifest) from the local store or, on an edge, from
    /// upstream; nil when neither has it. Bytes from a peer must already be verified against `id`.
    /// - Parameter reader: one HTTP response reading a file in order (an edge reads ahead for it),
    ///   or nil.
    /// - Throws: when the upstream cannot be reached (the reader gets 502).
    func chunk(_ id: ChunkID, reader: ObjectIdentifier?) async throws -> SourcedChunk?
    /// The key that opens the key tables of `content`, or nil when this node may not decrypt it
    /// (private content: the reader gets 403).
    func readKey(for content: ContentID) async -> SymmetricKey?
    /// What `name` points at now, or nil when no one knows it.
    /// - Throws: ``HTTPProblem`` or another error when the name cannot be resolved now.
    func resolve(name: String) async throws -> NameBinding?
    /// Names this node learns a new version of (an origin publishing, an edge receiving an
    /// invalidation or a newer record), as they happen; nil when names never change here.
    func nameChanges() async -> AsyncStream<String>?
}

extension HTTPContentSource {
    /// Names never change.
    public func nameChanges() async -> AsyncStream<String>? { nil }
}

/// Shares one fetch among concurrent requests for the same chunk: the first miss starts it, the
/// others wait for its result (request coalescing); a waiter that goes away does not cancel it.
public actor ChunkCoalescer {
    private let source: any HTTPContentSource
    private var inFlight: [ChunkID: Task<SourcedChunk?, any Error>] = [:]
    /// Fetches started at the source (joined requests are not counted).
    public private(set) var started = 0
    /// Requests that joined a fetch already in flight.
    public private(set) var joined = 0

    /// Wraps a source.
    public init(source: any HTTPContentSource) { self.source = source }

    /// The chunk, fetched once however many ask at the same time.
    public func chunk(_ id: ChunkID, reader: ObjectIdentifier? = nil) async throws -> SourcedChunk? {
        if let task = inFlight[id] {
            joined += 1
            return try await task.value
        }
        started += 1
        let source = self.source
        let task = Task { try await source.chunk(id, reader: reader) }
        inFlight[id] = task
        defer { inFlight[id] = nil }
        return try await task.value
    }
}

/// Whether every chunk an exchange used came from the local store.
final class CacheTally: Sendable {
    private let state = Mutex((used: false, missed: false))

    func note(fromCache: Bool) { state.withLock { $0.used = true; if !fromCache { $0.missed = true } } }

    /// `hit`, `miss`, or nil when no chunk was read.
    var outcome: String? { state.withLock { $0.used ? ($0.missed ? "miss" : "hit") : nil } }
}

/// Decoded manifests by id, shared by a responder's requests: ids name immutable bytes, so a
/// manifest checked once is good forever. Bounded by the encoded bytes held (oldest out first).
final class ManifestCache: Sendable {
    private struct State {
        var entries: [ChunkID: (manifest: AnyManifest, size: Int)] = [:]
        var order: [ChunkID] = []
        var bytes = 0
    }
    private let state = Mutex(State())
    /// Most encoded manifest bytes held.
    let capacityBytes: Int

    init(capacityBytes: Int = 32 << 20) { self.capacityBytes = max(0, capacityBytes) }

    func manifest(_ id: ChunkID) -> AnyManifest? { state.withLock { $0.entries[id]?.manifest } }

    func keep(_ id: ChunkID, _ manifest: AnyManifest, size: Int) {
        guard size <= capacityBytes / 4 else { return }
        state.withLock { s in
            guard s.entries[id] == nil else { return }
            s.entries[id] = (manifest, size)
            s.order.append(id)
            s.bytes += size
            var drop = 0
            while s.bytes > capacityBytes, drop < s.order.count {
                if let gone = s.entries.removeValue(forKey: s.order[drop]) { s.bytes -= gone.size }
                drop += 1
            }
            if drop > 0 { s.order.removeFirst(drop) }
        }
    }
}
