import Crypto
import Dispatch
import Foundation

/// Where the chunker reads bytes from: a file (by `pread`) or memory.
public protocol ByteSource: Sendable {
    /// Total length in bytes.
    var count: Int64 { get }
    /// Up to `count` bytes at `offset` (fewer only at the end).
    func read(at offset: Int64, count: Int) throws -> [UInt8]
    /// Up to `count` bytes at `offset` as a slice. A source that has to copy reads into `scratch`
    /// (reusing its storage, so a streamer allocates its segment buffers once); a source that already
    /// holds the bytes returns a slice of them without copying. The default calls ``read(at:count:)``.
    /// - Parameters:
    ///   - offset: where to start.
    ///   - count: how many bytes (fewer only at the end).
    ///   - scratch: a buffer the source may fill and slice.
    func segment(at offset: Int64, count: Int, scratch: inout [UInt8]) throws -> ArraySlice<UInt8>
}

extension ByteSource {
    /// Copies through ``read(at:count:)``.
    public func segment(at offset: Int64, count: Int, scratch: inout [UInt8]) throws -> ArraySlice<UInt8> {
        ArraySlice(try read(at: offset, count: count))
    }
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
        return Array(bytes[lo..<min(lo + count, bytes.count)])
    }
    /// A slice of the bytes (no copy).
    public func segment(at offset: Int64, count: Int, scratch: inout [UInt8]) throws -> ArraySlice<UInt8> {
        let lo = Int(min(offset, Int64(bytes.count)))
        let hi = min(lo + count, bytes.count)
        return bytes[lo..<hi]
    }
}

/// A regular file read with `pread`, so several threads can read it at once.
public final class FileSource: ByteSource {
    private let fd: FileDescriptor
    /// The length when opened.
    public let count: Int64

    /// Opens `path` for reading; only a regular file is accepted (never blocks on a FIFO).
    /// - Throws: ``ContentError`` (`.notFound`, `.io`, `.invalidArgument` for anything but a regular file).
    public init(path: String) throws {
        fd = try FileDescriptor.openRegularForReading(path)
        do { count = try fd.size() } catch { fd.close(); throw error }
    }
    deinit { fd.close() }

    /// Reads with `pread`.
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        try fd.pread(count: count, at: offset)
    }

    /// Reads with `pread` into `scratch`.
    public func segment(at offset: Int64, count: Int, scratch: inout [UInt8]) throws -> ArraySlice<UInt8> {
        let n = try fd.pread(into: &scratch, count: count, at: offset)
        return scratch[0..<n]
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

/// The chunks of one segment of the input, in order, with their bytes.
///
/// The bytes are a slice of the streamer's segment buffer; keeping a batch past the callback is safe
/// (the buffer is then copied before it is reused) but costs that copy.
public struct ChunkBatch: Sendable {
    /// The chunks, in input order, contiguous.
    public let records: [ChunkRecord]
    /// Input offset of `bytes.first`.
    let start: Int64
    /// The segment's bytes.
    let bytes: ArraySlice<UInt8>

    /// Calls `body` with the bytes of chunk `i`.
    /// - Parameters:
    ///   - i: index into ``records``.
    ///   - body: receives a buffer valid only during the call.
    public func withBytes<R>(of i: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let r = records[i]
        let lo = Int(r.offset - start)
        return try bytes.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[lo..<(lo + r.length)])) }
    }
}

/// Segment buffers kept between inputs, so a put of many files reads into the same memory instead of
/// faulting in (and zeroing) fresh pages for every file.
///
/// `@unchecked Sendable`: `buffers` is only touched while holding `lock`.
public final class SegmentBufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var buffers = [[UInt8]]()
    /// Most buffers kept.
    public let capacity: Int

    /// Creates an empty pool.
    /// - Parameter capacity: most buffers kept (the rest are freed); default 8.
    public init(capacity: Int = 8) { self.capacity = capacity }

    /// A buffer from the pool, or an empty one.
    func take() -> [UInt8] {
        lock.lock(); defer { lock.unlock() }
        return buffers.popLast() ?? []
    }

    /// Returns a buffer to the pool (dropped when the pool is full or the buffer is empty).
    func give(_ buffer: [UInt8]) {
        guard !buffer.isEmpty else { return }
        lock.lock(); defer { lock.unlock() }
        if buffers.count < capacity { buffers.append(buffer) }
    }
}

/// Streams an input through a ``Chunker`` without loading it whole, on several cores.
///
/// The input is cut into fixed segments of `segmentSize` bytes. Worker threads each take a segment
/// (plus `maxSize` bytes of overlap), read it into a reused buffer, and cut and hash it as if its first
/// byte were a boundary; up to `2 × workers` segments are in flight ahead of the consumer, so the
/// workers never wait for the consumer's callback and the consumer rarely waits for a worker. The
/// workers are threads of their own for the duration of the call.
///
/// The consuming thread re-synchronises each seam: the true chain coming out of segment `k-1` is
/// continued until one of its cut points is also a cut point of segment `k`'s chain; from there both
/// chains are identical (a cut depends only on the bytes since the previous cut), so the rest of
/// segment `k`'s chunks are taken as they are. FastCDC resynchronises within a chunk or two, so the
/// consumer hashes a few chunks per 16 MiB. The result is exactly the sequential result; tests check it.
///
/// With one worker everything runs on the calling thread.
public struct ChunkStreamer: Sendable {
    /// The chunker.
    public let chunker: any Chunker
    /// Bytes per segment (at least 2 × maxSize).
    public let segmentSize: Int
    /// Threads to use (1 = sequential, on the calling thread).
    public let workers: Int
    /// Whether to compute SHA-256 of every chunk.
    public let hashing: Bool
    /// Where segment buffers come from and go back to.
    public let buffers: SegmentBufferPool

    /// Creates a streamer.
    /// - Parameters:
    ///   - chunker: FastCDC or fixed-size.
    ///   - workers: threads; 0 (the default) means one per online processor.
    ///   - segmentSize: bytes per segment, default 16 MiB (raised to 2 × maxSize if smaller).
    ///   - hashing: compute SHA-256 per chunk (default true).
    ///   - buffers: a pool shared by the streamers of one job (default: a pool of this streamer's own).
    public init(chunker: any Chunker, workers: Int = 0, segmentSize: Int = 16 << 20, hashing: Bool = true,
                buffers: SegmentBufferPool = SegmentBufferPool()) {
        self.chunker = chunker
        self.workers = workers > 0 ? workers : max(1, Posix.processorCount)
        self.segmentSize = max(segmentSize, 2 * chunker.maxSize)
        self.hashing = hashing
        self.buffers = buffers
    }

    /// The chain one worker found in its segment.
    struct Segment: Sendable {
        var start: Int64
        var bytes: ArraySlice<UInt8>
        var ends: [Int64] = []
        var hashes: [ChunkID] = []
    }

    /// One segment's work, handed from a worker thread to the consuming thread. The worker writes
    /// `scratch` and `result` and then signals `done`; the consumer touches them only before the task is
    /// dispatched and after `done.wait()` returns.
    ///
    /// `@unchecked Sendable`: the queue's lock and the `done` semaphore order every access to `scratch`
    /// and `result` (one writer at a time: consumer, then worker, then consumer).
    final class SegmentTask: @unchecked Sendable {
        let index: Int
        var scratch: [UInt8]
        var result: Result<Segment, any Error>?
        let done = DispatchSemaphore(value: 0)
        init(index: Int, scratch: [UInt8]) { self.index = index; self.scratch = scratch }
    }

    /// Segment tasks waiting for a worker thread, first in first out.
    ///
    /// `@unchecked Sendable`: `tasks` and `closed` are only touched while holding `lock`.
    final class SegmentQueue: @unchecked Sendable {
        private let lock = NSLock()
        private var tasks = [SegmentTask]()
        private var head = 0
        private var closed = false
        private let ready = DispatchSemaphore(value: 0)

        func push(_ t: SegmentTask) {
            lock.lock(); tasks.append(t); lock.unlock()
            ready.signal()
        }

        /// The next task, or nil once the queue is closed and empty.
        func pop() -> SegmentTask? {
            while true {
                ready.wait()
                lock.lock()
                defer { lock.unlock() }
                if head < tasks.count {
                    let t = tasks[head]
                    head += 1
                    return t
                }
                if closed { return nil }
            }
        }

        /// Lets `workers` threads return from ``pop()`` once the queue is empty.
        func close(workers: Int) {
            lock.lock(); closed = true; lock.unlock()
            for _ in 0..<workers { ready.signal() }
        }
    }

    /// Chunks `source` and calls `body` once per segment with that segment's chunks, in order.
    /// - Parameters:
    ///   - source: the input.
    ///   - body: receives each batch; may throw to stop.
    public func forEachBatch(_ source: some ByteSource, _ body: (ChunkBatch) throws -> Void) throws {
        let total = source.count
        guard total > 0 else { return }
        let seg = Int64(segmentSize), maxSize = chunker.maxSize
        let chunker = self.chunker, hashing = self.hashing
        let segments = Int((total + seg - 1) / seg)
        let parallel = workers > 1 && segments > 1
        let ahead = parallel ? 2 * workers : 1

        @Sendable func work(_ t: SegmentTask) {
            let s = Int64(t.index) * seg
            t.result = Result {
                let bytes = try source.segment(at: s, count: Int(min(seg + Int64(maxSize), total - s)), scratch: &t.scratch)
                return Self.cutChain(chunker, bytes, start: s, limit: s + seg, hashing: hashing)
            }
            t.done.signal()
        }
        // Every task launched is waited for before returning, even when a batch throws, so no worker
        // still reads `source` or a buffer after this function has returned.
        var queue = [SegmentTask]()
        var head = 0, next = 0
        let pool = buffers
        // Dedicated worker threads, not the dispatch pool: the caller may itself be a pool thread (the
        // `stoq` commands run under async main) that blocks on `done`, and the pool does not grow for a
        // blocked thread, so pool work items ran one at a time beside it.
        let pending = parallel ? SegmentQueue() : nil
        if let pending {
            for _ in 0..<min(workers, segments) {
                Thread.detachNewThread { while let t = pending.pop() { work(t) } }
            }
        }
        defer {
            for t in queue[head...] { t.done.wait() }
            pending?.close(workers: min(workers, segments))
        }
        func launch() {
            let t = SegmentTask(index: next, scratch: pool.take())
            next += 1
            queue.append(t)
            if let pending { pending.push(t) } else { work(t) }
        }
        while next < min(ahead, segments) { launch() }
        var q: Int64 = 0
        while head < queue.count {
            let t = queue[head]
            t.done.wait()
            head += 1
            do {
                let result = t.result!
                t.result = nil
                try Self.emit(try result.get(), from: &q, chunker: chunker, segmentSize: seg, total: total, hashing: hashing, body)
            }
            // The segment (and the batch that sliced it) is gone, so its buffer is unshared again.
            pool.give(t.scratch)
            t.scratch = []
            if next < segments { launch() }
        }
        precondition(q == total, "chunk streamer ended at \(q) of \(total)")
    }

    /// Re-synchronises the true chain (at `q`) with `segment`'s chain and hands the segment's chunks to `body`.
    static func emit(_ segment: Segment, from q: inout Int64, chunker: any Chunker, segmentSize: Int64, total: Int64,
                     hashing: Bool, _ body: (ChunkBatch) throws -> Void) throws {
        var records = [ChunkRecord]()
        records.reserveCapacity(segment.ends.count + 4)
        let limit = segment.start + segmentSize
        var pos = q
        segment.bytes.withUnsafeBytes { raw in
            var k: Int
            if pos == segment.start {
                k = 0
            } else {
                // Continue the true chain until it meets a cut of this segment's chain.
                while true {
                    if pos >= limit || pos >= total { k = segment.ends.count; break }
                    if let j = index(of: pos, in: segment.ends) { k = j + 1; break }
                    let lo = Int(pos - segment.start)
                    let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[lo...]))
                    let h = hashing ? ChunkID.of(UnsafeRawBufferPointer(rebasing: raw[lo..<(lo + n)])) : nil
                    records.append(ChunkRecord(offset: pos, length: n, hash: h))
                    pos += Int64(n)
                }
            }
            while k < segment.ends.count {
                let b = segment.ends[k]
                records.append(ChunkRecord(offset: pos, length: Int(b - pos), hash: hashing ? segment.hashes[k] : nil))
                pos = b
                k += 1
            }
        }
        q = pos
        if !records.isEmpty { try body(ChunkBatch(records: records, start: segment.start, bytes: segment.bytes)) }
    }

    /// Chunks `source` and calls `body` for each chunk in order with its record and bytes
    /// (the buffer is valid only during the call).
    /// - Parameters:
    ///   - source: the input.
    ///   - body: receives each chunk; may throw to stop.
    public func forEachChunk(_ source: some ByteSource, _ body: (ChunkRecord, UnsafeRawBufferPointer) throws -> Void) throws {
        try forEachBatch(source) { batch in
            for i in batch.records.indices { try batch.withBytes(of: i) { try body(batch.records[i], $0) } }
        }
    }

    /// Collects all records of `source`.
    public func records(_ source: some ByteSource) throws -> [ChunkRecord] {
        var out = [ChunkRecord]()
        try forEachBatch(source) { out += $0.records }
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

    /// Cuts (and hashes, when `hashing`) from `start`, treated as a boundary, until the first cut at or
    /// past `limit`, or the end of `bytes`.
    static func cutChain(_ chunker: any Chunker, _ bytes: ArraySlice<UInt8>, start: Int64, limit: Int64, hashing: Bool = true) -> Segment {
        var chain = Segment(start: start, bytes: bytes)
        chain.ends.reserveCapacity(bytes.count / 4096 + 1)
        if hashing { chain.hashes.reserveCapacity(bytes.count / 4096 + 1) }
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
