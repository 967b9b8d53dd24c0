import Foundation

/// A systematic Reed–Solomon erasure coder over Intel ISA-L, with a Cauchy generator matrix.
///
/// `k` data shards produce `m` parity shards; any `k` of the `k + m` shards rebuild the rest.
/// Encode tables are built once per coder; decode tables are built once per erasure pattern and
/// kept in a small LRU, so the hot path allocates nothing beyond the output shards it returns
/// (and nothing at all with the `into:` variants).
///
/// The coder is a value; copies share the same tables and cache, and it is safe to use from
/// several tasks at once.
public struct ErasureCoder: Sendable {
    /// Number of data shards, k.
    public var dataShards: Int { engine.encode.k }
    /// Number of parity shards, m.
    public var parityShards: Int { engine.encode.m }
    /// k + m.
    public var totalShards: Int { dataShards + parityShards }

    /// The largest k + m supported (erasure patterns are 64-bit masks).
    public static let maximumTotalShards = 64

    let engine: ErasureEngine

    /// Creates a coder.
    /// - Parameters:
    ///   - dataShards: k, at least 1.
    ///   - parityShards: m, at least 0; k + m at most ``maximumTotalShards``.
    ///   - decodeCacheSize: how many erasure patterns keep their decode tables (LRU).
    public init(dataShards: Int = 10, parityShards: Int = 4, decodeCacheSize: Int = 16) throws(HyperMeshError) {
        guard dataShards >= 1, parityShards >= 0, dataShards + parityShards <= Self.maximumTotalShards else {
            throw HyperMeshError(
                .invalidParameters,
                "erasure code \(dataShards)+\(parityShards) is out of range: need k ≥ 1, m ≥ 0 and k + m ≤ \(Self.maximumTotalShards)"
            )
        }
        engine = ErasureEngine(k: dataShards, m: parityShards, cacheSize: max(1, decodeCacheSize))
    }

    // MARK: Encode

    /// Computes the m parity shards of k equal-length data shards.
    /// - Parameter data: exactly k shards, all the same non-zero length.
    /// - Returns: m new parity shards of the same length.
    public func encode(_ data: [[UInt8]]) throws(HyperMeshError) -> [[UInt8]] {
        let length = try checkShards(data, count: dataShards, what: "data")
        let (k, m, tables) = (dataShards, parityShards, engine.encode.tables)
        if m == 0 { return [] }
        return ISALKernel.withInputPointers(data) { inputs in
            ISALKernel.makeOutputs(count: m, length: length) { outputs in
                ISALKernel.run(length: length, k: k, rows: m, tables: tables, inputs: inputs, outputs: outputs)
            }
        }
    }

    /// Computes parity into caller-owned buffers, allocating nothing.
    /// - Parameters:
    ///   - data: exactly k shards, all the same non-zero length.
    ///   - parity: exactly m buffers of that same length; overwritten.
    public func encode(_ data: [[UInt8]], into parity: inout [[UInt8]]) throws(HyperMeshError) {
        let length = try checkShards(data, count: dataShards, what: "data")
        guard parity.count == parityShards, parity.allSatisfy({ $0.count == length }) else {
            throw HyperMeshError(.shardSizeMismatch, "need \(parityShards) parity buffers of \(length) bytes each")
        }
        let (k, m, tables) = (dataShards, parityShards, engine.encode.tables)
        if m == 0 { return }
        ISALKernel.withInputPointers(data) { inputs in
            ISALKernel.withOutputPointers(&parity) { outputs in
                ISALKernel.run(length: length, k: k, rows: m, tables: tables, inputs: inputs, outputs: outputs)
            }
        }
    }

    /// Encodes k data shards into all k + m shards (data first, then parity).
    public func encodeAll(_ data: [[UInt8]]) throws(HyperMeshError) -> [[UInt8]] {
        data + (try encode(data))
    }

    // MARK: Decode and repair

    /// Rebuilds missing shards in place.
    ///
    /// - Parameters:
    ///   - shards: k + m slots; `nil` marks a missing shard. At least k must be present, all the same length.
    ///   - wanted: which missing shards to rebuild; `nil` means all of them. Indices that are
    ///     already present are ignored.
    /// - Throws: ``HyperMeshError/Code/notEnoughShards`` saying how many are missing and how many are needed.
    public func reconstruct(_ shards: inout [[UInt8]?], only wanted: [Int]? = nil) throws(HyperMeshError) {
        guard shards.count == totalShards else {
            throw HyperMeshError(.invalidParameters, "expected \(totalShards) shard slots, got \(shards.count)")
        }
        var outputs: [Int] = []
        if let wanted {
            for index in Set(wanted).sorted() {
                guard (0..<totalShards).contains(index) else {
                    throw HyperMeshError(.invalidParameters, "shard index \(index) is outside 0..<\(totalShards)")
                }
                if shards[index] == nil { outputs.append(index) }
            }
        } else {
            outputs = shards.indices.filter { shards[$0] == nil }
        }
        if outputs.isEmpty { return }
        let rebuilt = try rebuild(shards, outputs: outputs)
        for (index, shard) in zip(outputs, rebuilt) { shards[index] = shard }
    }

    /// Returns the k data shards, rebuilding any missing ones from the shards present.
    /// - Parameter shards: k + m slots; `nil` marks a missing shard.
    public func decodeData(_ shards: [[UInt8]?]) throws(HyperMeshError) -> [[UInt8]] {
        var copy = shards
        try reconstruct(&copy, only: Array(0..<dataShards))
        return copy[0..<dataShards].map { $0! }
    }

    /// Rebuilds `outputs` (missing indices, ascending) from the first k present shards.
    func rebuild(_ shards: [[UInt8]?], outputs: [Int]) throws(HyperMeshError) -> [[UInt8]] {
        var sources: [Int] = []
        sources.reserveCapacity(dataShards)
        for index in shards.indices where shards[index] != nil {
            sources.append(index)
            if sources.count == dataShards { break }
        }
        let present = shards.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        guard sources.count == dataShards else {
            let missing = totalShards - present
            throw HyperMeshError(
                .notEnoughShards,
                "\(missing) of \(totalShards) shards are missing; \(present) remain but \(dataShards) are needed "
                    + "(a \(dataShards)+\(parityShards) code survives at most \(parityShards) losses)"
            )
        }
        let inputs = sources.map { shards[$0]! }
        let length = try checkShards(inputs, count: dataShards, what: "present")
        guard let tables = engine.decodeTables(sources: sources, outputs: outputs) else {
            throw HyperMeshError(.singularMatrix, "ISA-L could not invert the decode matrix for shards \(sources)")
        }
        let k = dataShards
        return ISALKernel.withInputPointers(inputs) { inputPointers in
            ISALKernel.makeOutputs(count: outputs.count, length: length) { outputPointers in
                ISALKernel.run(
                    length: length, k: k, rows: outputs.count, tables: tables.tables,
                    inputs: inputPointers, outputs: outputPointers
                )
            }
        }
    }

    /// Rebuilds shards into caller-owned buffers, allocating nothing once the pattern is cached.
    /// - Parameters:
    ///   - sources: exactly k present shards.
    ///   - sourceIndices: their indices in 0..<k+m, ascending and distinct.
    ///   - outputIndices: indices to rebuild, ascending, distinct, not in `sourceIndices`.
    ///   - outputs: one buffer per output index, each the shard length; overwritten.
    public func rebuild(
        sources: [[UInt8]], sourceIndices: [Int], outputIndices: [Int], into outputs: inout [[UInt8]]
    ) throws(HyperMeshError) {
        let length = try checkShards(sources, count: dataShards, what: "source")
        guard outputIndices.count == outputs.count, outputs.allSatisfy({ $0.count == length }) else {
            throw HyperMeshError(.invalidParameters, "rebuild needs one \(length)-byte buffer per output index")
        }
        try validate(sources: sourceIndices, outputs: outputIndices)
        guard let tables = engine.decodeTables(sources: sourceIndices, outputs: outputIndices) else {
            throw HyperMeshError(.singularMatrix, "ISA-L could not invert the decode matrix for shards \(sourceIndices)")
        }
        let (k, rows) = (dataShards, outputIndices.count)
        ISALKernel.withInputPointers(sources) { inputs in
            ISALKernel.withOutputPointers(&outputs) { outputPointers in
                ISALKernel.run(length: length, k: k, rows: rows, tables: tables.tables, inputs: inputs, outputs: outputPointers)
            }
        }
    }

    /// Checks, without allocating, that `sources` are k ascending distinct indices and `outputs`
    /// are ascending distinct indices not among them.
    func validate(sources: [Int], outputs: [Int]) throws(HyperMeshError) {
        var seen: UInt64 = 0
        func mark(_ list: [Int]) -> Bool {
            var last = -1
            for i in list {
                guard i > last, i < totalShards, seen & (1 << UInt64(i)) == 0 else { return false }
                seen |= 1 << UInt64(i)
                last = i
            }
            return true
        }
        guard sources.count == dataShards, !outputs.isEmpty, mark(sources), mark(outputs) else {
            throw HyperMeshError(
                .invalidParameters,
                "rebuild needs \(dataShards) ascending distinct source indices and ascending distinct output indices "
                    + "not among them, all in 0..<\(totalShards)"
            )
        }
    }

    private func checkShards(_ shards: [[UInt8]], count: Int, what: String) throws(HyperMeshError) -> Int {
        guard shards.count == count else {
            throw HyperMeshError(.invalidParameters, "expected \(count) \(what) shards, got \(shards.count)")
        }
        let length = shards[0].count
        guard length > 0, length <= Int(Int32.max) else {
            throw HyperMeshError(.invalidParameters, "shard length \(length) is out of range (1...\(Int32.max))")
        }
        guard shards.allSatisfy({ $0.count == length }) else {
            throw HyperMeshError(.shardSizeMismatch, "\(what) shards differ in length; all must be \(length) bytes")
        }
        return length
    }
}

/// Shared state behind `ErasureCoder` values: encode tables and the decode-table LRU.
///
/// `@unchecked Sendable`: `encode` is immutable; the LRU is only touched under `lock`.
final class ErasureEngine: @unchecked Sendable {
    let encode: ISALEncodeTables
    private let lock = NSLock()
    private var cache: [(key: PatternKey, tables: ISALDecodeTables)] = []
    private let cacheSize: Int

    struct PatternKey: Equatable {
        var sources: UInt64
        var outputs: UInt64
    }

    init(k: Int, m: Int, cacheSize: Int) {
        encode = ISALEncodeTables(k: k, m: m)
        self.cacheSize = cacheSize
        cache.reserveCapacity(cacheSize)
    }

    /// Decode tables for one erasure pattern, from the LRU or freshly built.
    func decodeTables(sources: [Int], outputs: [Int]) -> ISALDecodeTables? {
        var key = PatternKey(sources: 0, outputs: 0)
        for s in sources { key.sources |= 1 << UInt64(s) }
        for o in outputs { key.outputs |= 1 << UInt64(o) }
        lock.lock()
        if let hit = cache.firstIndex(where: { $0.key == key }) {
            let entry = cache[hit]
            if hit != cache.count - 1 {
                cache.remove(at: hit)
                cache.append(entry)
            }
            lock.unlock()
            return entry.tables
        }
        lock.unlock()
        guard let built = ISALDecodeTables(encode: encode, sources: sources, outputs: outputs) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        // Another caller may have built the same pattern meanwhile; keep one copy.
        if let hit = cache.first(where: { $0.key == key }) { return hit.tables }
        if cache.count >= cacheSize { cache.removeFirst() }
        cache.append((key, built))
        return built
    }

    /// Number of cached erasure patterns (for tests).
    var cachedPatterns: Int {
        lock.lock()
        defer { lock.unlock() }
        return cache.count
    }
}
