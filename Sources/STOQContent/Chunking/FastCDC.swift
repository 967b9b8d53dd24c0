/// FastCDC content-defined chunking (Xia et al., 2016/2020): a gear rolling hash,
/// normalized chunking, and the 2020 "rolling two bytes" loop.
///
/// A cut point depends only on the bytes since the previous cut, so an insertion
/// in a file moves only the chunks around it: versions of a file share most chunks.
///
/// - Sizes: every chunk is at least `minSize` bytes (except the last of a stream),
///   at most `maxSize` bytes. Between `minSize` and `avgSize` a harder mask
///   (`avg bits + level`) is used, past `avgSize` an easier one (`avg bits - level`),
///   which pulls chunk sizes towards the average (normalized chunking, level 2 by default).
/// - The gear table is derived from a fixed seed with SplitMix64, so every STOQ node cuts the
///   same bytes the same way. The masks keep their bits in positions 15...62 so that
///   the two-bytes-per-step loop is exactly equal to the byte-at-a-time definition.
public struct FastCDC: Sendable, Equatable {
    /// Smallest chunk (except a stream's last).
    public let minSize: Int
    /// Target average chunk size (rounded to a power of two for the masks).
    public let avgSize: Int
    /// Largest chunk.
    public let maxSize: Int
    /// Normalization level (0...3).
    public let level: Int
    @usableFromInline let maskS: UInt64
    @usableFromInline let maskL: UInt64

    /// The smallest min size accepted.
    public static let minimumMinSize = 64
    /// The largest max size accepted (16 MiB).
    public static let maximumMaxSize = 16 << 20

    /// Creates a chunker.
    /// - Parameters:
    ///   - minSize: smallest chunk, default 4 KiB.
    ///   - avgSize: average chunk, default 16 KiB; must lie in `minSize...maxSize`.
    ///   - maxSize: largest chunk, default 1 MiB.
    ///   - level: normalization level 0...3, default 2.
    /// - Throws: ``ContentError/invalidArgument`` when the sizes are out of range.
    public init(minSize: Int = 4096, avgSize: Int = 16384, maxSize: Int = 1 << 20, level: Int = 2) throws {
        guard minSize >= Self.minimumMinSize, maxSize <= Self.maximumMaxSize,
              minSize <= avgSize, avgSize <= maxSize, (0...3).contains(level), avgSize >= 256
        else {
            throw ContentError(.invalidArgument,
                "FastCDC sizes must satisfy \(Self.minimumMinSize) ≤ min ≤ avg ≤ max ≤ 16 MiB, avg ≥ 256, level 0...3 (got min \(minSize), avg \(avgSize), max \(maxSize), level \(level))")
        }
        self.minSize = minSize
        self.avgSize = avgSize
        self.maxSize = maxSize
        self.level = level
        let bits = Int((Double(avgSize)).log2Rounded)
        self.maskS = Self.mask(bits: bits + level)
        self.maskL = Self.mask(bits: max(1, bits - level))
    }

    /// A mask with `bits` one-bits spread over positions 15...62.
    static func mask(bits: Int) -> UInt64 {
        let b = min(max(bits, 1), 40)
        var m: UInt64 = 0
        for i in 0..<b {
            let pos = b == 1 ? 62 : 62 - (i * 47) / (b - 1)
            m |= 1 << UInt64(pos)
        }
        return m
    }

    /// The 256-entry gear table (SplitMix64 from a fixed seed).
    @usableFromInline static let gear: [UInt64] = {
        var state: UInt64 = 0x5354_4F51_4344_4331 // "STOQCDC1"
        var out = [UInt64]()
        out.reserveCapacity(256)
        for _ in 0..<256 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            out.append(z ^ (z >> 31))
        }
        return out
    }()

    /// The gear table shifted left by one, for the two-byte step.
    @usableFromInline static let gearShifted: [UInt64] = gear.map { $0 << 1 }

    /// Length of the first chunk of `buffer`.
    ///
    /// If the buffer holds fewer than `maxSize` bytes the caller must either know it
    /// is the end of the stream or supply more bytes first; the result is the whole
    /// buffer when no cut point is found in it.
    /// - Parameter buffer: bytes starting at a chunk boundary.
    /// - Returns: the chunk length, in `1...min(buffer.count, maxSize)` (0 for an empty buffer).
    @inlinable
    public func cut(_ buffer: UnsafeRawBufferPointer) -> Int {
        Self.gear.withUnsafeBufferPointer { g in
            Self.gearShifted.withUnsafeBufferPointer { gs in
                Self.cutLoop(buffer, g, gs, minSize, avgSize, maxSize, maskS, maskL)
            }
        }
    }

    /// The hot loop: two bytes per step, no bounds checks in release builds, no allocation.
    @inlinable @inline(__always)
    static func cutLoop(_ p: UnsafeRawBufferPointer, _ g: UnsafeBufferPointer<UInt64>, _ gs: UnsafeBufferPointer<UInt64>,
                        _ minSize: Int, _ avgSize: Int, _ maxSize: Int, _ maskS: UInt64, _ maskL: UInt64) -> Int {
        var n = p.count
        if n <= minSize { return n }
        if n > maxSize { n = maxSize }
        let center = avgSize < n ? avgSize : n
        let maskSLS = maskS << 1
        let maskLLS = maskL << 1
        var hash: UInt64 = 0
        var i = minSize
        // Phase 1: the harder mask until the average size.
        while i &+ 2 <= center {
            hash = (hash << 2) &+ gs[Int(p[i])]
            if hash & maskSLS == 0 { return i &+ 1 }
            hash = hash &+ g[Int(p[i &+ 1])]
            if hash & maskS == 0 { return i &+ 2 }
            i &+= 2
        }
        if i < center {
            hash = (hash << 1) &+ g[Int(p[i])]
            if hash & maskS == 0 { return i &+ 1 }
            i &+= 1
        }
        // Phase 2: the easier mask until the maximum.
        while i &+ 2 <= n {
            hash = (hash << 2) &+ gs[Int(p[i])]
            if hash & maskLLS == 0 { return i &+ 1 }
            hash = hash &+ g[Int(p[i &+ 1])]
            if hash & maskL == 0 { return i &+ 2 }
            i &+= 2
        }
        if i < n {
            hash = (hash << 1) &+ g[Int(p[i])]
            if hash & maskL == 0 { return i &+ 1 }
        }
        return n
    }

    /// Cut points of a whole in-memory buffer (the end offsets of each chunk).
    /// - Parameter buffer: the complete input.
    public func boundaries(_ buffer: UnsafeRawBufferPointer) -> [Int] {
        var out = [Int]()
        var pos = 0
        while pos < buffer.count {
            pos += cut(UnsafeRawBufferPointer(rebasing: buffer[pos...]))
            out.append(pos)
        }
        return out
    }

    /// Cut points of a byte array.
    public func boundaries(_ bytes: [UInt8]) -> [Int] {
        bytes.withUnsafeBytes { boundaries($0) }
    }
}

extension Double {
    /// log2 rounded to the nearest integer.
    @usableFromInline var log2Rounded: Double {
        var v = self, b = 0.0
        while v >= 2 { v /= 2; b += 1 }
        return v >= 1.4142135 ? b + 1 : b
    }
}
