import STOQContent

/// A 64-bit hash of a chunk id, mixed with a seed. Chunk ids are SHA-256 digests, but tests
/// and benchmarks build ids from small integers, so every byte is mixed in.
@inline(__always)
func mixedHash(_ id: ChunkID, seed: UInt64) -> UInt64 {
    var h = seed ^ 0x9E37_79B9_7F4A_7C15
    var word: UInt64 = 0
    var n = 0
    for byte in id.bytes {
        word = word << 8 | UInt64(byte)
        n += 1
        if n == 8 {
            h = (h ^ word) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
            word = 0
            n = 0
        }
    }
    h = (h ^ (h >> 30)) &* 0x94D0_49BB_1331_11EB
    return h ^ (h >> 31)
}

/// A count-min sketch of access frequencies with 4-bit saturating counters, periodic aging
/// (every counter halved after `sampleSize` recorded accesses) and a doorkeeper Bloom filter
/// that absorbs the first access of each id so one-hit wonders do not occupy counters.
///
/// This is the frequency filter of TinyLFU (Einziger, Friedman, Manes: "TinyLFU: A Highly
/// Efficient Cache Admission Policy", ACM ToS 2017).
public struct FrequencySketch: Sendable {
    private static let depth = 4
    private static let maxCount: UInt8 = 15

    private var counters: [UInt8]
    private let widthMask: UInt64
    private var doorkeeper: [UInt64]
    private let doorkeeperMask: UInt64
    /// Accesses recorded since the last aging.
    public private(set) var additions: Int = 0
    /// Recorded accesses between two agings (10 × the expected number of entries).
    public let sampleSize: Int
    /// How many times the counters were halved.
    public private(set) var agings: Int = 0

    /// Creates a sketch for about `expectedEntries` distinct resident ids.
    /// - Parameter expectedEntries: the expected number of resident entries (at least 16 is used).
    public init(expectedEntries: Int) {
        var width = 16
        while width < expectedEntries, width < (1 << 26) { width <<= 1 }
        counters = Array(repeating: 0, count: width * Self.depth)
        widthMask = UInt64(width - 1)
        let doorkeeperBits = width * 8
        doorkeeper = Array(repeating: 0, count: doorkeeperBits / 64)
        doorkeeperMask = UInt64(doorkeeperBits - 1)
        sampleSize = 10 * width
    }

    /// The estimated number of recent accesses of the id with hash `hash` (0 ... 16).
    public func frequency(_ hash: UInt64) -> Int {
        var minimum = Self.maxCount
        for row in 0..<Self.depth { minimum = min(minimum, counters[index(hash, row)]) }
        return Int(minimum) + (doorkeeperContains(hash) ? 1 : 0)
    }

    /// Records one access of the id with hash `hash`.
    public mutating func increment(_ hash: UInt64) {
        additions += 1
        if !doorkeeperContains(hash) {
            doorkeeperInsert(hash)
        } else {
            // Conservative update: raise only the counters at the current minimum.
            var minimum = Self.maxCount
            for row in 0..<Self.depth { minimum = min(minimum, counters[index(hash, row)]) }
            if minimum < Self.maxCount {
                for row in 0..<Self.depth {
                    let i = index(hash, row)
                    if counters[i] == minimum { counters[i] += 1 }
                }
            }
        }
        if additions >= sampleSize { age() }
    }

    /// Halves every counter and clears the doorkeeper, so old popularity fades.
    public mutating func age() {
        for i in counters.indices { counters[i] >>= 1 }
        for i in doorkeeper.indices { doorkeeper[i] = 0 }
        additions /= 2
        agings += 1
    }

    @inline(__always)
    private func index(_ hash: UInt64, _ row: Int) -> Int {
        let h1 = hash, h2 = (hash >> 32) | 1
        let column = (h1 &+ UInt64(row) &* h2 &* 0x9E37_79B9) & widthMask
        return Int(column) * Self.depth + row
    }

    @inline(__always)
    private func doorkeeperBits(_ hash: UInt64) -> (Int, Int) {
        let a = Int(hash & doorkeeperMask)
        let b = Int((hash >> 29 ^ hash >> 47) & doorkeeperMask)
        return (a, b)
    }

    private func doorkeeperContains(_ hash: UInt64) -> Bool {
        let (a, b) = doorkeeperBits(hash)
        return doorkeeper[a >> 6] & (1 << UInt64(a & 63)) != 0 && doorkeeper[b >> 6] & (1 << UInt64(b & 63)) != 0
    }

    private mutating func doorkeeperInsert(_ hash: UInt64) {
        let (a, b) = doorkeeperBits(hash)
        doorkeeper[a >> 6] |= 1 << UInt64(a & 63)
        doorkeeper[b >> 6] |= 1 << UInt64(b & 63)
    }
}
