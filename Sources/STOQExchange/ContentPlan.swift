import STOQContent

/// Something that can supply chunks by id: a peer over QUIC, or a local store in tests.
public protocol ChunkSource: Sendable {
    /// A name for reports.
    var name: String { get }
    /// Fetches a chunk; the result must already be verified against `id`.
    /// - Parameter progress: called with the size of each piece as it arrives (stall detection).
    func fetchChunk(_ id: ChunkID, progress: (@Sendable (Int) -> Void)?) async throws -> [UInt8]
    /// Which of the `chunkCount` data chunks of `root` the source can supply (its HAVE).
    /// Defaults to all of them.
    func availability(of root: ContentID, chunkCount: Int) async throws -> ChunkAvailability
}

extension ChunkSource {
    /// Claims every chunk.
    public func availability(of root: ContentID, chunkCount: Int) async throws -> ChunkAvailability { .all }
}

extension PeerClient: ChunkSource {}

/// Everything a content id consists of: its manifests (fetched first, since they name the rest) and
/// the data chunks, with the store metadata that records them.
public struct ContentPlan: Sendable {
    /// The content being fetched.
    public let root: ContentID
    /// Data chunks (ciphertext ids and stored sizes), in file order, without duplicates.
    public private(set) var dataChunks: [(id: ChunkID, size: Int)] = []
    /// Store metadata for the manifests and edges (committed with the data).
    public private(set) var batch = CommitBatch()
    /// Plaintext bytes of the content (sum of file sizes).
    public private(set) var plainBytes: UInt64 = 0
    /// Manifest chunks fetched.
    public private(set) var manifestChunks = 0

    /// The deepest manifest nesting followed.
    public static let maximumDepth = 16

    /// Walks the manifests of `root`, loading each through `load` (local store or network).
    /// - Parameter load: returns a manifest chunk's verified bytes.
    public static func resolve(
        _ root: ContentID,
        load: (ChunkID) async throws -> [UInt8]
    ) async throws -> ContentPlan {
        var plan = ContentPlan(root: root)
        var seenData = Set<ChunkID>()
        var seenManifests = Set<ChunkID>()
        // (manifest chunk id, depth, what it should be)
        var queue: [(ChunkID, Int, Expect)] = [(root.manifest, 0, .any)]
        while let (id, depth, expect) = queue.popLast() {
            guard seenManifests.insert(id).inserted else { continue }
            guard depth <= maximumDepth else {
                throw NodeError(.protocolViolation, "content \(root) nests manifests deeper than \(maximumDepth) levels")
            }
            let bytes = try await load(id)
            plan.manifestChunks += 1
            plan.batch.chunks.append((id, bytes.count))
            if SealedIndex.looksLike(bytes) {
                // A sealed private content: every chunk is listed in the clear, nothing else is.
                guard expect == .any || expect == .sealedIndex else {
                    throw NodeError(.protocolViolation, "manifest \(id.short) of \(root) is a sealed index where its parent names another kind")
                }
                let index = try SealedIndex.decode(bytes)
                guard index.sealedRoot.isEmpty == (expect == .sealedIndex) else {
                    throw NodeError(.protocolViolation, "sealed index \(id.short) of \(root) \(expect == .any ? "seals no root" : "is inner but seals a root")")
                }
                plan.batch.manifests.append((id, "sealed", 0, ""))
                for entry in index.entries {
                    plan.batch.edges.append((id, entry.id))
                    switch entry.kind {
                    case .chunk:
                        if seenData.insert(entry.id).inserted {
                            plan.dataChunks.append((entry.id, Int(entry.size)))
                            plan.plainBytes += UInt64(entry.size)
                        }
                    case .index:
                        queue.append((entry.id, depth + 1, .sealedIndex))
                    }
                }
                continue
            }
            switch (try AnyManifest.decode(bytes), expect) {
            case (.directory(let dir), .any), (.directory(let dir), .directory):
                let size = dir.entries.reduce(UInt64(0)) { $0 + $1.size }
                plan.batch.manifests.append((id, "dir", size, "inode/directory"))
                if depth == 0 { plan.plainBytes = size }
                // A link entry carries its target inline and references no chunk.
                for entry in dir.entries where !entry.isLink {
                    plan.batch.edges.append((id, entry.id.manifest))
                    queue.append((entry.id.manifest, depth + 1, entry.kind == .directory ? .directory : .file))
                }
            case (.file(let file), .any), (.file(let file), .file):
                plan.batch.manifests.append((id, "file", file.totalSize, file.contentType))
                if depth == 0 { plan.plainBytes = file.totalSize }
                try plan.addFile(file, manifest: id, depth: depth, queue: &queue, seenData: &seenData)
            case (.file(let file), .fileNode):
                // A sub-manifest of a large file: its entries are data or further sub-manifests.
                plan.batch.manifests.append((id, "file", file.totalSize, file.contentType))
                try plan.addFile(file, manifest: id, depth: depth, queue: &queue, seenData: &seenData)
            default:
                throw NodeError(.protocolViolation, "manifest \(id.short) of \(root) is not the kind its parent names")
            }
        }
        plan.batch.pins.append((root, "fetched \(root)"))
        return plan
    }

    private enum Expect { case any, file, fileNode, directory, sealedIndex }

    private init(root: ContentID) { self.root = root }

    private mutating func addFile(
        _ file: FileManifest, manifest id: ChunkID, depth: Int,
        queue: inout [(ChunkID, Int, Expect)], seenData: inout Set<ChunkID>
    ) throws {
        for entry in file.entries {
            batch.edges.append((id, entry.id))
            switch file.kind {
            case .leaf:
                // Stored (ciphertext) size is not in the manifest; the plaintext size bounds it.
                if seenData.insert(entry.id).inserted { dataChunks.append((entry.id, Int(entry.size))) }
            case .node:
                queue.append((entry.id, depth + 1, .fileNode))
            }
        }
    }

    /// Records the stored size of a data chunk once it has arrived.
    public mutating func recordStored(_ id: ChunkID, size: Int) {
        batch.chunks.append((id, size))
    }
}
