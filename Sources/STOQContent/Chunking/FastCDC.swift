/// FastCDC content-defined chunking (Xia et al., 2016/2020): a gear rolling hash,
/// normalized chunking, and the 2020 "rolling two bytes" loop (here four bytes per step).
///
/// A cut point depends only on the bytes since the previous cut, so an insertion
/// in a file moves only the chunks around it: versions of a file share most chunks.
///
/// - Sizes: every chunk is at least `minSize` bytes (except the last of a stream),
///   at most `maxSize` bytes. Between `minSize` and `avgSize` a harder mask
///   (`avg bits + level`) is used, past `avgSize` an easier one (`avg bits - level`),
///   which pulls chunk sizes towards the average (normalized chunking, level 2 by default).
/// - The gear table is derived from a fixed seed with SplitMix64, so every STOQ node cuts the
///   same bytes the same way. The masks keep their bits in positions 13...60 so that
///   the four-bytes-per-step loop is exactly equal to the byte-at-a-time definition.
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

    /// A mask with `bits` one-bits spread over positions 13...60 (no bit above 60, so the
    /// four-byte step can test `mask << 3` without losing a bit).
    static func mask(bits: Int) -> UInt64 {
        let b = min(max(bits, 1), 40)
        var m: UInt64 = 0
        for i in 0..<b {
            let pos = b == 1 ? 60 : 60 - (i * 47) / (b - 1)
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

    /// The gear table and its copies shifted left by 1, 2 and 3 bits (1024 entries: `[k * 256 + byte]`
    /// holds `gear[byte] << k`), for the four-bytes-per-step loop.
    @usableFromInline static let gearShifted: [UInt64] = (0..<4).flatMap { k in gear.map { $0 << UInt64(k) } }

    /// Length of the first chunk of `buffer`.
    ///
    /// If the buffer holds fewer than `maxSize` bytes the caller must either know it
    /// is the end of the stream or supply more bytes first; the result is the whole
    /// buffer when no cut point is found in it.
    /// - Parameter buffer: bytes starting at a chunk boundary.
    /// - Returns: the chunk length, in `1...min(buffer.count, maxSize)` (0 for an empty buffer).
    @inlinable
    public func cut(_ buffer: UnsafeRawBufferPointer) -> Int {
        Self.gearShifted.withUnsafeBufferPointer { t in
            Self.cutLoop(buffer, t, minSize, avgSize, maxSize, maskS, maskL)
        }
    }

    /// The hot loop. This is the 2020 paper's "rolling two bytes" idea taken to four bytes: with
    /// `H = h << 4`, the hashes after each of the next four bytes, shifted left by 3, 2, 1 and 0 bits, are
    /// `H + g3[b0]`, `H + g3[b0] + g2[b1]`, that `+ g1[b2]`, and that `+ g0[b3]`; testing them against the
    /// mask shifted the same way is exactly the byte-at-a-time test (the masks have no bit above 60).
    /// The table sums do not depend on `h`, so the dependency chain is three operations per four
    /// bytes. No bounds checks in release builds (raw buffer subscripts), no allocation.
    @inlinable @inline(__always)
    static func cutLoop(_ p: UnsafeRawBufferPointer, _ t: UnsafeBufferPointer<UInt64>,
                        _ minSize: Int, _ avgSize: Int, _ maxSize: Int, _ maskS: UInt64, _ maskL: UInt64) -> Int {
        var n = p.count
        if n <= minSize { return n }
        if n > maxSize { n = maxSize }
        let center = avgSize < n ? avgSize : n
        var hash: UInt64 = 0
        var i = minSize
        if let c = scan(p, t, &hash, &i, center, maskS) { return c }
        if let c = scan(p, t, &hash, &i, n, maskL) { return c }
        return n
    }

    /// Scans `i ..< end` with `mask`; returns the chunk length at the first cut, or nil.
    @inlinable @inline(__always)
    static func scan(_ p: UnsafeRawBufferPointer, _ t: UnsafeBufferPointer<UInt64>, _ hash: inout UInt64,
                     _ i: inout Int, _ end: Int, _ m: UInt64) -> Int? {
        let m1 = m << 1, m2 = m << 2, m3 = m << 3
        var h = hash
        var j = i
        while j &+ 4 <= end {
            let t3 = t[768 &+ Int(p[j])]
            let a = t3 &+ t[512 &+ Int(p[j &+ 1])]
            let t1 = t[256 &+ Int(p[j &+ 2])]
            let b = t1 &+ t[Int(p[j &+ 3])]
            let hh = h << 4
            if (hh &+ t3) & m3 == 0 { return j &+ 1 }
            let i2 = hh &+ a
            if i2 & m2 == 0 { return j &+ 2 }
            if (i2 &+ t1) & m1 == 0 { return j &+ 3 }
            h = i2 &+ b
            if h & m == 0 { return j &+ 4 }
            j &+= 4
        }
        while j < end {
            h = (h << 1) &+ t[Int(p[j])]
            j &+= 1
            if h & m == 0 { return j }
        }
        hash = h
        i = j
        return nil
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
