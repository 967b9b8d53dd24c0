import Crypto

/// The k + m shards of one stripe in a single 64-byte-aligned allocation, for the hot path.
///
/// ISA-L's vector kernels load 32 or 64 bytes at a time; Swift arrays start 32 bytes into their
/// allocation, so every AVX-512 load from an array straddles two cache lines. A stripe keeps each
/// shard 64-byte aligned (shards are laid out `stride` bytes apart, `stride` = shard size rounded
/// up to 64), so ``ErasureCoder/encode(_:)-(ShardStripe)`` and ``ErasureCoder/rebuild(_:sources:outputs:)``
/// run ISA-L on exactly the memory layout its own benchmarks use, and allocate nothing.
///
/// A stripe is a reference type that owns its memory (freed in `deinit`); it is not `Sendable`.
public final class ShardStripe {
    /// Number of shards (k + m).
    public let shardCount: Int
    /// Bytes per shard.
    public let shardSize: Int
    /// Distance between shard starts (shard size rounded up to 64).
    let stride: Int
    private let base: UnsafeMutableRawPointer

    /// Allocates a zero-filled stripe.
    /// - Parameters:
    ///   - shardCount: number of shards, k + m.
    ///   - shardSize: bytes per shard, at least 1.
    public init(shardCount: Int, shardSize: Int) {
        precondition(shardCount >= 1 && shardSize >= 1, "a stripe needs at least one shard of at least one byte")
        self.shardCount = shardCount
        self.shardSize = shardSize
        stride = (shardSize + 63) / 64 * 64
        base = .allocate(byteCount: stride * shardCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: stride * shardCount)
    }

    deinit { base.deallocate() }

    func pointer(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        (base + index * stride).assumingMemoryBound(to: UInt8.self)
    }

    private func check(_ index: Int) {
        precondition((0..<shardCount).contains(index), "shard index \(index) outside 0..<\(shardCount)")
    }

    /// A copy of shard `index`.
    public func shard(_ index: Int) -> [UInt8] {
        check(index)
        return Array(UnsafeBufferPointer(start: pointer(index), count: shardSize))
    }

    /// Overwrites shard `index` with `bytes` (at most the shard size), zero-padding the rest.
    public func setShard<C: Collection>(_ index: Int, _ bytes: C) where C.Element == UInt8 {
        check(index)
        precondition(bytes.count <= shardSize, "\(bytes.count) bytes do not fit a \(shardSize)-byte shard")
        let target = UnsafeMutableBufferPointer(start: pointer(index), count: shardSize)
        let (_, written) = target.initialize(from: bytes)
        if written < shardSize { (target.baseAddress! + written).update(repeating: 0, count: shardSize - written) }
    }

    /// Fills the first `shards` shards with `bytes` laid end to end, zero-padding the remainder.
    public func fill(_ bytes: [UInt8], acrossShards shards: Int) {
        precondition(shards <= shardCount && bytes.count <= shards * shardSize, "bytes do not fit \(shards) shards")
        for i in 0..<shards {
            let start = min(i * shardSize, bytes.count)
            let end = min(start + shardSize, bytes.count)
            setShard(i, bytes[start..<end])
        }
    }

    /// SHA-256 of shard `index`, hashed in place.
    public func sha256(_ index: Int) -> Digest256 {
        check(index)
        let digest = SHA256.hash(data: UnsafeRawBufferPointer(start: pointer(index), count: shardSize))
        return Digest256(unchecked: Array(digest))
    }

    /// Whether shard `index` equals `bytes`.
    public func shardEquals(_ index: Int, _ bytes: [UInt8]) -> Bool {
        check(index)
        return bytes.count == shardSize && bytes.withUnsafeBufferPointer { b in
            UnsafeBufferPointer(start: pointer(index), count: shardSize).elementsEqual(b)
        }
    }

    /// Calls `body` with a stack table of pointers to the shards `indices`.
    func withPointers<R>(_ indices: some Collection<Int>, _ body: (ISALKernel.PointerTable) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: max(indices.count, 1)) { table in
            for (slot, index) in indices.enumerated() { table[slot] = pointer(index) }
            return try body(table.baseAddress!)
        }
    }
}

@available(*, unavailable)
extension ShardStripe: Sendable {}

extension ErasureCoder {
    /// Computes the parity shards k..<k+m of `stripe` from its data shards 0..<k, in place.
    /// Allocates nothing.
    /// - Parameter stripe: a stripe of exactly k + m shards.
    public func encode(_ stripe: ShardStripe) throws(HyperMeshError) {
        guard stripe.shardCount == totalShards else {
            throw HyperMeshError(.invalidParameters, "stripe has \(stripe.shardCount) shards, the code needs \(totalShards)")
        }
        let (k, m, tables, length) = (dataShards, parityShards, engine.encode.tables, stripe.shardSize)
        guard m > 0 else { return }
        stripe.withPointers(0..<k) { inputs in
            stripe.withPointers(k..<(k + m)) { outputs in
                ISALKernel.run(length: length, k: k, rows: m, tables: tables, inputs: inputs, outputs: outputs)
            }
        }
    }

    /// Rebuilds shards of `stripe` in place from k others. Allocates nothing once the erasure
    /// pattern's decode tables are cached.
    /// - Parameters:
    ///   - stripe: a stripe of exactly k + m shards.
    ///   - sources: k intact shard indices, ascending and distinct.
    ///   - outputs: shard indices to rebuild, ascending, distinct, not among `sources`.
    public func rebuild(_ stripe: ShardStripe, sources: [Int], outputs: [Int]) throws(HyperMeshError) {
        guard stripe.shardCount == totalShards else {
            throw HyperMeshError(.invalidParameters, "stripe has \(stripe.shardCount) shards, the code needs \(totalShards)")
        }
        try validate(sources: sources, outputs: outputs)
        guard let tables = engine.decodeTables(sources: sources, outputs: outputs) else {
            throw HyperMeshError(.singularMatrix, "ISA-L could not invert the decode matrix for shards \(sources)")
        }
        let (k, rows, length) = (dataShards, outputs.count, stripe.shardSize)
        stripe.withPointers(sources) { inputs in
            stripe.withPointers(outputs) { outputPointers in
                ISALKernel.run(length: length, k: k, rows: rows, tables: tables.tables, inputs: inputs, outputs: outputPointers)
            }
        }
    }
}
