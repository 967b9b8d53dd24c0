import Crypto
import Dispatch

/// Where the chunker reads bytes from: a file (by `pread`) or memory.
public protocol ByteSource: Sendable {
    /// Total length in bytes.
    var count: Int64 { get }
    /// Up to `count` bytes at `offset` (fewer only at the end).
    func read(at offset: Int64, count: Int) throws -> [UInt8]
}

/// An in-memory byte source.
public struct MemorySource: ByteSource {
    /// The bytes.
    public let bytes: [UInt8]
    /// Wraps `bytes`.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    /// The length.
    public var count: Int64 { Int64(bytes.count) }
    /// A copy of the requested range.
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        let lo = Int(min(offset, Int64(bytes.count)))
        let hi = min(lo + count, bytes.count)
        return Array(bytes[lo..<hi])
    }
}

/// A regular file read with `pread`, so several threads can read it at once.
public final class FileSource: ByteSource {
    private let fd: FileDescriptor
    /// The length when opened.
    public let count: Int64

    /// Opens `path` for reading.
    /// - Throws: ``ContentError`` (`.notFound`, `.io`).
    public init(path: String) throws {
        fd = try FileDescriptor.openForReading(path)
        do { count = try fd.size() } catch { fd.close(); throw error }
    }
    deinit { fd.close() }

    /// Reads with `pread`.
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        try fd.pread(count: count, at: offset)
    }
}

/// One chunk found by ``ChunkStreamer``.
public struct ChunkRecord: Sendable, Hashable {
    /// Offset of the chunk in the input.
    public var offset: Int64
    /// Length in bytes.
    public var length: Int
    /// SHA-256 of the chunk's bytes (of the plaintext, before any encryption), or nil when hashing was off.
    public var hash: ChunkID?
}

/// Streams an input through a ``Chunker`` without loading it whole, on several cores.
///
/// The input is processed in rounds. A round starts at a true chunk boundary `p` and covers
/// `workers × segmentSize` bytes; worker `i` reads its own segment (plus `maxSize` bytes of overlap)
/// and cuts and hashes it starting at the segment's first byte as if it were a boundary. The seams are
/// then re-synchronised: the true chain coming from segment `i-1` is continued on the calling thread
/// until one of its cut points is also a cut point of worker `i`'s chain; from there both chains are
/// identical (a cut depends only on the bytes since the previous cut), so worker `i`'s chunks are taken
/// as they are. The result is exactly the sequential result; a test checks it.
public struct ChunkStreamer: Sendable {
    /// The chunker.
    public let chunker: any Chunker
    /// Bytes per worker per round (at least 2 × maxSize).
    public let segmentSize: Int
    /// Threads to use (1 = sequential).
    public let workers: Int
    /// Whether to compute SHA-256 of every chunk.
    public let hashing: Bool

    /// Creates a streamer.
    /// - Parameters:
    ///   - chunker: FastCDC or fixed-size.
    ///   - workers: threads; 0 (the default) means one per online processor.
    ///   - segmentSize: bytes per worker per round, default 16 MiB (raised to 2 × maxSize if smaller).
    ///   - hashing: compute SHA-256 per chunk (default true).
    public init(chunker: any Chunker, workers: Int = 0, segmentSize: Int = 16 << 20, hashing: Bool = true) {
        self.chunker = chunker
        self.workers = workers > 0 ? workers : max(1, Posix.processorCount)
        self.segmentSize = max(segmentSize, 2 * chunker.maxSize)
        self.hashing = hashing
    }

    /// The chain one worker found in its segment.
    struct Chain: Sendable {
        var start: Int64
        var bytes: [UInt8]
        var ends: [Int64] = []
        var hashes: [ChunkID] = []
    }

    /// A slot per worker, each written by exactly one `concurrentPerform` iteration and read only after
    /// `concurrentPerform` returns (which orders the accesses); hence unchecked.
    final class Slots: @unchecked Sendable {
        var chains: [Chain?]
        var errors: [(any Error)?]
        init(_ n: Int) { chains = Array(repeating: nil, count: n); errors = Array(repeating: nil, count: n) }
    }

    /// Chunks `source` and calls `body` for each chunk in order with its record and bytes
    /// (the buffer is valid only during the call).
    /// - Parameters:
    ///   - source: the input.
    ///   - body: receives each chunk; may throw to stop.
    public func forEachChunk(_ source: some ByteSource, _ body: (ChunkRecord, UnsafeRawBufferPointer) throws -> Void) throws {
        let total = source.count
        let maxSize = chunker.maxSize
        var p: Int64 = 0
        while p < total {
            let segs = Int(min(Int64(workers), (total - p + Int64(segmentSize) - 1) / Int64(segmentSize)))
            let slots = Slots(segs)
            let chunker = self.chunker, seg = Int64(segmentSize), hashing = self.hashing
            let roundStart = p
            DispatchQueue.concurrentPerform(iterations: segs) { i in
                do {
                    let s = roundStart + Int64(i) * seg
                    let bytes = try source.read(at: s, count: Int(min(seg + Int64(maxSize), total - s)))
                    slots.chains[i] = Self.cutChain(chunker, bytes, start: s, limit: s + seg, total: total, hashing: hashing)
                } catch {
                    slots.errors[i] = error
                }
            }
            if let e = slots.errors.compactMap({ $0 }).first { throw e }
            let chains = slots.chains.map { $0! }
            // Merge: chain 0 starts at a true boundary; re-synchronise every later seam.
            var q = p
            for chain in chains {
                try chain.bytes.withUnsafeBytes { raw in
                    func emit(_ a: Int64, _ b: Int64, _ h: ChunkID?) throws {
                        let lo = Int(a - chain.start), hi = Int(b - chain.start)
                        let slice = UnsafeRawBufferPointer(rebasing: raw[lo..<hi])
                        try body(ChunkRecord(offset: a, length: hi - lo, hash: h), slice)
                    }
                    let limit = chain.start + seg
                    var k: Int
                    if q == chain.start {
                        k = 0
                    } else {
                        // Continue the true chain on this thread until it meets a cut of this worker.
                        while true {
                            if q >= limit || q >= total { k = chain.ends.count; break }
                            if let j = Self.index(of: q, in: chain.ends) { k = j + 1; break }
                            let lo = Int(q - chain.start)
                            let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[lo...]))
                            let b = q + Int64(n)
                            let h = hashing ? ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[lo..<(lo + n)])) : nil
                            try emit(q, b, h)
                            q = b
                        }
                    }
                    while k < chain.ends.count {
                        let b = chain.ends[k]
                        try emit(q, b, hashing ? chain.hashes[k] : nil)
                        q = b
                        k += 1
                    }
                }
            }
            precondition(q > p, "chunker made no progress")
            p = q
        }
    }

    /// Collects all records of `source`.
    public func records(_ source: some ByteSource) throws -> [ChunkRecord] {
        var out = [ChunkRecord]()
        try forEachChunk(source) { r, _ in out.append(r) }
        return out
    }

    /// Binary search for a cut position.
    static func index(of value: Int64, in ends: [Int64]) -> Int? {
        var lo = 0, hi = ends.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ends[mid] < value { lo = mid + 1 } else { hi = mid }
        }
        return lo < ends.count && ends[lo] == value ? lo : nil
    }

    /// Cuts from `start` (treated as a boundary) until the first cut at or past `limit`, or the end.
    static func cutChain(_ chunker: any Chunker, _ bytes: [UInt8], start: Int64, limit: Int64, total: Int64, hashing: Bool) -> Chain {
        var chain = Chain(start: start, bytes: bytes)
        chain.ends.reserveCapacity(bytes.count / 4096 + 1)
        bytes.withUnsafeBytes { raw in
            var pos = 0
            while start + Int64(pos) < limit && pos < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[pos...]))
                if hashing { chain.hashes.append(ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + n)]))) }
                pos += n
                chain.ends.append(start + Int64(pos))
            }
        }
        return chain
    }
}
