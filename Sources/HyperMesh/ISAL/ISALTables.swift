import CISAL

// All unsafe pointer code for ISA-L lives in this folder (DESIGN.md §1). The types here are
// internal; `ErasureCoder` is the safe face.

/// The Cauchy encode matrix and its expanded GF tables for one (k, m).
///
/// `@unchecked Sendable`: the C buffers are written only in `init` and are read-only afterwards;
/// ISA-L's `ec_encode_data` never writes to the tables.
final class ISALEncodeTables: @unchecked Sendable {
    let k: Int
    let m: Int
    /// (k + m) × k Cauchy matrix; the top k rows are the identity.
    let matrix: UnsafeMutablePointer<UInt8>
    /// 32 × k × m bytes for `ec_encode_data`.
    let tables: UnsafeMutablePointer<UInt8>

    init(k: Int, m: Int) {
        self.k = k
        self.m = m
        matrix = .allocate(capacity: (k + m) * k)
        tables = .allocate(capacity: 32 * k * max(m, 1))
        gf_gen_cauchy1_matrix(matrix, Int32(k + m), Int32(k))
        if m > 0 {
            ec_init_tables(Int32(k), Int32(m), matrix + k * k, tables)
        }
    }

    deinit {
        matrix.deallocate()
        tables.deallocate()
    }

    func coefficient(row: Int, column: Int) -> UInt8 { matrix[row * k + column] }
}

/// The expanded GF tables that rebuild `outputs` from the k shards `sources`.
///
/// `@unchecked Sendable`: the buffer is written only in `init`, read-only afterwards.
final class ISALDecodeTables: @unchecked Sendable {
    let sources: [Int]
    let outputs: [Int]
    let tables: UnsafeMutablePointer<UInt8>

    /// Returns nil when the submatrix is singular (impossible for a Cauchy matrix and distinct rows).
    init?(encode: ISALEncodeTables, sources: [Int], outputs: [Int]) {
        let k = encode.k
        precondition(sources.count == k && !outputs.isEmpty)
        self.sources = sources
        self.outputs = outputs
        let sub = UnsafeMutablePointer<UInt8>.allocate(capacity: k * k)
        let inverse = UnsafeMutablePointer<UInt8>.allocate(capacity: k * k)
        let coefficients = UnsafeMutablePointer<UInt8>.allocate(capacity: k * outputs.count)
        defer {
            sub.deallocate()
            inverse.deallocate()
            coefficients.deallocate()
        }
        for (r, source) in sources.enumerated() {
            for c in 0..<k { sub[r * k + c] = encode.coefficient(row: source, column: c) }
        }
        guard gf_invert_matrix(sub, inverse, Int32(k)) == 0 else { return nil }
        for (r, output) in outputs.enumerated() {
            if output < k {
                // A data shard: its row of the inverse.
                for c in 0..<k { coefficients[r * k + c] = inverse[output * k + c] }
            } else {
                // A parity shard: its encode row times the inverse.
                for c in 0..<k {
                    var acc: UInt8 = 0
                    for j in 0..<k {
                        acc ^= gf_mul(encode.coefficient(row: output, column: j), inverse[j * k + c])
                    }
                    coefficients[r * k + c] = acc
                }
            }
        }
        tables = .allocate(capacity: 32 * k * outputs.count)
        ec_init_tables(Int32(k), Int32(outputs.count), coefficients, tables)
    }

    deinit { tables.deallocate() }
}

/// The one call into ISA-L's coding kernel, plus the pointer gathering around it.
enum ISALKernel {
    typealias PointerTable = UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>

    /// Runs `ec_encode_data`: `rows` outputs from `k` inputs, each `length` bytes.
    static func run(
        length: Int, k: Int, rows: Int, tables: UnsafeMutablePointer<UInt8>,
        inputs: PointerTable, outputs: PointerTable
    ) {
        ec_encode_data(Int32(length), Int32(k), Int32(rows), tables, inputs, outputs)
    }

    /// Calls `body` with a table of pointers to the arrays `arrays[indices[i]]` (read-only use).
    /// No copy of the arrays is made; the pointer table lives on the stack.
    static func withInputPointers<R>(
        _ arrays: [[UInt8]], _ body: (PointerTable) throws -> R
    ) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: max(arrays.count, 1)) { table in
            try arrays.withUnsafeBufferPointer { outer in
                try gatherInputs(outer, 0, table.baseAddress!, body)
            }
        }
    }

    private static func gatherInputs<R>(
        _ outer: UnsafeBufferPointer<[UInt8]>, _ i: Int, _ table: PointerTable, _ body: (PointerTable) throws -> R
    ) rethrows -> R {
        if i == outer.count { return try body(table) }
        return try outer[i].withUnsafeBufferPointer { buffer in
            table[i] = UnsafeMutablePointer(mutating: buffer.baseAddress)
            return try gatherInputs(outer, i + 1, table, body)
        }
    }

    /// Calls `body` with a table of pointers into the (already sized) arrays `arrays`, for writing.
    static func withOutputPointers<R>(
        _ arrays: inout [[UInt8]], _ body: (PointerTable) throws -> R
    ) rethrows -> R {
        let count = arrays.count
        return try withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: max(count, 1)) { table in
            try arrays.withUnsafeMutableBufferPointer { outer in
                try gatherOutputs(outer, 0, table.baseAddress!, body)
            }
        }
    }

    private static func gatherOutputs<R>(
        _ outer: UnsafeMutableBufferPointer<[UInt8]>, _ i: Int, _ table: PointerTable, _ body: (PointerTable) throws -> R
    ) rethrows -> R {
        if i == outer.count { return try body(table) }
        return try outer[i].withUnsafeMutableBufferPointer { buffer in
            table[i] = buffer.baseAddress
            return try gatherOutputs(outer, i + 1, table, body)
        }
    }

    /// Builds `count` new arrays of `length` bytes and calls `body` with pointers to them; their
    /// contents are whatever `body` writes (it must write every byte).
    static func makeOutputs(
        count: Int, length: Int, _ body: (PointerTable) -> Void
    ) -> [[UInt8]] {
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: max(count, 1)) { table in
            var built: [[UInt8]] = []
            built.reserveCapacity(count)
            makeOutput(0, count, length, table.baseAddress!, &built, body)
            return Array(built.reversed())
        }
    }

    private static func makeOutput(
        _ i: Int, _ count: Int, _ length: Int, _ table: PointerTable, _ built: inout [[UInt8]],
        _ body: (PointerTable) -> Void
    ) {
        if i == count {
            body(table)
            return
        }
        let array = [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            table[i] = buffer.baseAddress
            makeOutput(i + 1, count, length, table, &built, body)
            initialized = length
        }
        built.append(array)
    }
}
