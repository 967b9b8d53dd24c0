import STOQContent

/// Read-ahead for one client reading one manifest's chunks: says which chunks to fetch ahead.
///
/// A read of the chunk right after the previous one (or of the first chunk) is a sequential
/// hit: the window of chunks kept in flight ahead of the reader starts at
/// ``Configuration/initialWindow`` and doubles with every sequential hit up to
/// ``Configuration/maximumWindow``. Any other read is random access: the window resets to
/// zero and read-ahead stops until the reader is sequential again. Chunks already suggested
/// are not suggested twice (unless ``forget(_:)`` says the fetch failed or the chunk was evicted).
public struct Prefetcher: Sendable {
    /// Tuning.
    public struct Configuration: Sendable, Equatable {
        /// Chunks fetched ahead after the first sequential read.
        public var initialWindow: Int
        /// Most chunks ever fetched ahead.
        public var maximumWindow: Int
        /// How far out of order a read may be and still count as sequential: a reader that keeps
        /// several requests in flight (a swarm client pipelines) asks for chunk `n + 2` before
        /// `n + 1` arrives. A read up to this many positions past the furthest read counts as a
        /// sequential step; a read up to this many positions behind it is a late one and changes
        /// nothing. 0: only the very next chunk is sequential.
        public var reorderTolerance: Int

        /// Creates a configuration.
        /// - Parameters:
        ///   - initialWindow: chunks fetched ahead after the first sequential read (default 2).
        ///   - maximumWindow: upper bound of the window (default 32).
        ///   - reorderTolerance: see ``reorderTolerance`` (default 0).
        public init(initialWindow: Int = 2, maximumWindow: Int = 32, reorderTolerance: Int = 0) {
            precondition(initialWindow >= 1 && maximumWindow >= initialWindow, "Prefetcher: need 1 <= initialWindow <= maximumWindow")
            precondition(reorderTolerance >= 0, "Prefetcher: reorderTolerance must not be negative")
            self.initialWindow = initialWindow
            self.maximumWindow = maximumWindow
            self.reorderTolerance = reorderTolerance
        }
    }

    /// The manifest's chunks in reading order.
    public let chunks: [ChunkID]
    /// Tuning.
    public let configuration: Configuration
    /// Chunks currently kept in flight ahead of the reader (0 after random access).
    public private(set) var window: Int = 0
    /// Reads that followed the previous read.
    public private(set) var sequentialHits: UInt64 = 0
    /// Reads that did not.
    public private(set) var randomAccesses: UInt64 = 0

    private var lastRead: Int?
    private var suggested: Set<Int> = []
    private var positions: [ChunkID: Int] = [:]

    /// Creates read-ahead state for one reader of one manifest.
    /// - Parameters:
    ///   - chunks: the chunk ids of the manifest, in order.
    ///   - configuration: tuning.
    public init(chunks: [ChunkID], configuration: Configuration = Configuration()) {
        self.chunks = chunks
        self.configuration = configuration
        for (index, id) in chunks.enumerated() where positions[id] == nil { positions[id] = index }
    }

    /// The reader asked for the chunk at `index`.
    /// - Parameter index: the position in ``chunks``.
    /// - Returns: the indices to fetch ahead now, in order (none already suggested).
    public mutating func handleRead(index: Int) -> [Int] {
        guard chunks.indices.contains(index) else { return [] }
        let tolerance = configuration.reorderTolerance
        if let last = lastRead, index <= last, last - index <= tolerance {
            return []  // a repeated or late request (pipelined reader) changes nothing
        }
        let sequential = lastRead.map { index > $0 && index - $0 <= 1 + tolerance } ?? (index <= tolerance)
        lastRead = index
        suggested.remove(index)
        if sequential {
            sequentialHits += 1
            window = window == 0 ? configuration.initialWindow : min(window * 2, configuration.maximumWindow)
        } else {
            randomAccesses += 1
            window = 0
            suggested.removeAll(keepingCapacity: true)
            return []
        }
        var ahead: [Int] = []
        let end = min(chunks.count, index + 1 + window)
        for next in (index + 1)..<max(index + 1, end) where !suggested.contains(next) {
            suggested.insert(next)
            ahead.append(next)
        }
        // Forget suggestions the reader has passed.
        suggested = suggested.filter { $0 > index }
        return ahead
    }

    /// The reader asked for chunk `id` (the first position of that id in the manifest is used,
    /// or the one right after the previous read when the id repeats there).
    /// - Returns: the chunk ids to fetch ahead now.
    public mutating func handleRead(id: ChunkID) -> [ChunkID] {
        let index: Int
        if let last = lastRead, last + 1 < chunks.count, chunks[last + 1] == id {
            index = last + 1
        } else if let first = positions[id] {
            index = first
        } else {
            return []
        }
        return handleRead(index: index).map { chunks[$0] }
    }

    /// A suggested prefetch failed or its chunk left the cache: it may be suggested again.
    /// - Parameter index: the position in ``chunks``.
    public mutating func forget(_ index: Int) {
        suggested.remove(index)
    }
}
