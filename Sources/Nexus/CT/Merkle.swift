import Crypto

/// Merkle tree hashing and proofs as defined in RFC 9162 §2.1 (Certificate Transparency v2).
///
/// - Leaf hash: `SHA-256(0x00 || entry)`; interior node: `SHA-256(0x01 || left || right)`.
/// - `MTH(D[n])` splits at `k`, the largest power of two smaller than `n`; therefore every left
///   subtree is a *perfect* subtree of `2^l` leaves starting at a multiple of `2^l`, and every range
///   the recursion visits decomposes into O(log n) perfect subtrees. Proof generation only needs a
///   source of perfect-subtree hashes (level `l`, index `i` covers leaves `[i·2^l, (i+1)·2^l)`),
///   which an in-memory ``MerkleTree`` or the SQLite-backed ``TransparencyLog`` provides.
/// - Verification follows the client algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
///   (consistency) and throws ``NexusError`` with code `.invalidProof` or `.rootMismatch`.
public enum Merkle {
    /// The hash of an empty tree: SHA-256 of the empty string.
    public static let emptyRoot = NexusHash.sha256([UInt8]())

    /// `SHA-256(0x00 || entry)`.
    public static func leafHash<C: Collection>(_ entry: C) -> NexusHash where C.Element == UInt8 {
        var h = SHA256()
        h.update(data: [0x00])
        h.update(data: Array(entry))
        return NexusHash(bytes: Array(h.finalize()))!
    }

    /// `SHA-256(0x01 || left || right)`.
    public static func nodeHash(_ left: NexusHash, _ right: NexusHash) -> NexusHash {
        var buf = [UInt8]()
        buf.reserveCapacity(65)
        buf.append(0x01)
        buf.append(contentsOf: left.bytes)
        buf.append(contentsOf: right.bytes)
        return NexusHash.sha256(buf)
    }

    /// The largest power of two strictly smaller than `n` (n ≥ 2). Callers recurse only on ranges
    /// of two or more leaves of the log's own tree, checked against its size first; no peer value
    /// reaches it.
    @inline(__always)
    static func split(_ n: UInt64) -> UInt64 {
        precondition(n >= 2)
        return UInt64(1) << UInt64(63 - (n - 1).leadingZeroBitCount)
    }

    /// `MTH(D[lo:hi])` from perfect-subtree hashes. Ranges are those the RFC recursion visits
    /// (aligned), so a power-of-two range is one perfect subtree.
    static func rangeHash(_ lo: UInt64, _ hi: UInt64, _ perfect: (Int, UInt64) throws(NexusError) -> NexusHash) throws(NexusError) -> NexusHash {
        let n = hi - lo
        if n == 0 { return emptyRoot }
        if n & (n - 1) == 0 {
            let level = n.trailingZeroBitCount
            return try perfect(level, lo >> UInt64(level))
        }
        let k = split(n)
        return nodeHash(try rangeHash(lo, lo + k, perfect), try rangeHash(lo + k, hi, perfect))
    }

    /// `MTH(D[0:size])`.
    /// - Parameters:
    ///   - size: the tree size.
    ///   - perfect: returns the hash of the perfect subtree at (level, index).
    public static func rootHash(size: UInt64, perfect: (Int, UInt64) throws(NexusError) -> NexusHash) throws(NexusError) -> NexusHash {
        try rangeHash(0, size, perfect)
    }

    /// `PATH(m, D[0:size])`: the inclusion proof for leaf `index`, deepest sibling first.
    public static func inclusionProof(index: UInt64, size: UInt64, perfect: (Int, UInt64) throws(NexusError) -> NexusHash) throws(NexusError) -> [NexusHash] {
        guard index < size else { throw NexusError(.invalidIndex, "leaf index \(index) is not in a tree of size \(size)") }
        var out: [NexusHash] = []
        try path(index, 0, size, perfect, &out)
        return out
    }

    private static func path(_ m: UInt64, _ lo: UInt64, _ hi: UInt64, _ perfect: (Int, UInt64) throws(NexusError) -> NexusHash, _ out: inout [NexusHash]) throws(NexusError) {
        let n = hi - lo
        if n <= 1 { return }
        let k = split(n)
        if m - lo < k {
            try path(m, lo, lo + k, perfect, &out)
            out.append(try rangeHash(lo + k, hi, perfect))
        } else {
            try path(m, lo + k, hi, perfect, &out)
            out.append(try rangeHash(lo, lo + k, perfect))
        }
    }

    /// `PROOF(m, D[0:n])`: the consistency proof between tree sizes `old` and `new` (0 < old ≤ new).
    public static func consistencyProof(old: UInt64, new: UInt64, perfect: (Int, UInt64) throws(NexusError) -> NexusHash) throws(NexusError) -> [NexusHash] {
        guard old > 0, old <= new else { throw NexusError(.invalidTreeSize, "a consistency proof needs 0 < old ≤ new; got old \(old), new \(new)") }
        var out: [NexusHash] = []
        try subproof(old, 0, new, true, perfect, &out)
        return out
    }

    private static func subproof(_ m: UInt64, _ lo: UInt64, _ hi: UInt64, _ b: Bool, _ perfect: (Int, UInt64) throws(NexusError) -> NexusHash, _ out: inout [NexusHash]) throws(NexusError) {
        let n = hi - lo
        if m == n {
            if !b { out.append(try rangeHash(lo, hi, perfect)) }
            return
        }
        let k = split(n)
        if m <= k {
            try subproof(m, lo, lo + k, b, perfect, &out)
            out.append(try rangeHash(lo + k, hi, perfect))
        } else {
            try subproof(m - k, lo + k, hi, false, perfect, &out)
            out.append(try rangeHash(lo, lo + k, perfect))
        }
    }

    /// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
    /// - Parameters:
    ///   - leafHash: the hash of the entry (``leafHash(_:)``).
    ///   - index: the leaf index.
    ///   - size: the tree size the proof is for.
    ///   - proof: the inclusion path.
    ///   - root: the root hash of the tree head being checked against.
    /// - Throws: ``NexusError`` `.invalidIndex`, `.invalidProof` or `.rootMismatch`.
    public static func verifyInclusion(leafHash: NexusHash, index: UInt64, size: UInt64, proof: [NexusHash], root: NexusHash) throws(NexusError) {
        guard index < size else { throw NexusError(.invalidIndex, "leaf index \(index) is not in a tree of size \(size)") }
        var fn = index, sn = size - 1
        var r = leafHash
        for p in proof {
            guard sn != 0 else { throw NexusError(.invalidProof, "inclusion proof for leaf \(index) in tree \(size) is longer than the tree is deep") }
            if fn & 1 == 1 || fn == sn {
                r = nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 { fn >>= 1; sn >>= 1 }
                }
            } else {
                r = nodeHash(r, p)
            }
            fn >>= 1; sn >>= 1
        }
        guard sn == 0 else { throw NexusError(.invalidProof, "inclusion proof for leaf \(index) in tree \(size) is too short") }
        guard r == root else { throw NexusError(.rootMismatch, "inclusion proof for leaf \(index) computes root \(r.shortHex)…, but the tree head says \(root.shortHex)…: the entry is not in this tree or the proof was altered") }
    }

    /// Verifies a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
    /// - Parameters:
    ///   - oldSize: the earlier tree size (> 0).
    ///   - newSize: the later tree size (≥ oldSize).
    ///   - oldRoot: the earlier root hash.
    ///   - newRoot: the later root hash.
    ///   - proof: the consistency proof.
    /// - Throws: ``NexusError`` `.invalidTreeSize`, `.invalidProof` or `.rootMismatch`.
    public static func verifyConsistency(oldSize: UInt64, newSize: UInt64, oldRoot: NexusHash, newRoot: NexusHash, proof: [NexusHash]) throws(NexusError) {
        guard oldSize > 0, oldSize <= newSize else { throw NexusError(.invalidTreeSize, "consistency needs 0 < old ≤ new; got \(oldSize) → \(newSize)") }
        if oldSize == newSize {
            guard proof.isEmpty else { throw NexusError(.invalidProof, "a consistency proof between equal sizes must be empty") }
            guard oldRoot == newRoot else { throw NexusError(.rootMismatch, "two tree heads of size \(oldSize) have different roots: the log forked") }
            return
        }
        guard !proof.isEmpty else { throw NexusError(.invalidProof, "empty consistency proof for \(oldSize) → \(newSize)") }
        var path = proof
        if oldSize & (oldSize - 1) == 0 { path.insert(oldRoot, at: 0) }
        var fn = oldSize - 1, sn = newSize - 1
        while fn & 1 == 1 { fn >>= 1; sn >>= 1 }
        var fr = path[0], sr = path[0]
        for c in path.dropFirst() {
            guard sn != 0 else { throw NexusError(.invalidProof, "consistency proof \(oldSize) → \(newSize) is too long") }
            if fn & 1 == 1 || fn == sn {
                fr = nodeHash(c, fr)
                sr = nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 { fn >>= 1; sn >>= 1 }
                }
            } else {
                sr = nodeHash(sr, c)
            }
            fn >>= 1; sn >>= 1
        }
        guard sn == 0 else { throw NexusError(.invalidProof, "consistency proof \(oldSize) → \(newSize) is too short") }
        guard fr == oldRoot else { throw NexusError(.rootMismatch, "consistency proof \(oldSize) → \(newSize) does not reproduce the old root: the log rewrote history or the proof was altered") }
        guard sr == newRoot else { throw NexusError(.rootMismatch, "consistency proof \(oldSize) → \(newSize) does not reproduce the new root: the proof was altered or the head is not from this log") }
    }
}

/// An in-memory append-only Merkle tree holding every perfect subtree hash.
///
/// `levels[l][i]` is the hash of leaves `[i·2^l, (i+1)·2^l)`; appending a leaf adds at most
/// log₂(n) hashes. Used by tests, by clients that mirror a log, and as the reference for the
/// SQLite-backed ``TransparencyLog``.
public struct MerkleTree: Sendable {
    /// Perfect subtree hashes by level; level 0 holds the leaf hashes.
    public private(set) var levels: [[NexusHash]] = [[]]

    /// Creates an empty tree.
    public init() {}

    /// The number of leaves.
    public var size: UInt64 { UInt64(levels[0].count) }

    /// Appends a leaf hash and returns its index.
    @discardableResult
    public mutating func append(leafHash: NexusHash) -> UInt64 {
        let index = levels[0].count
        levels[0].append(leafHash)
        var level = 0, i = index
        while i & 1 == 1 {
            let h = Merkle.nodeHash(levels[level][i - 1], levels[level][i])
            level += 1; i >>= 1
            if levels.count == level { levels.append([]) }
            levels[level].append(h)
        }
        return UInt64(index)
    }

    /// Appends an entry (hashing it as a leaf) and returns its index.
    @discardableResult
    public mutating func append<C: Collection>(entry: C) -> UInt64 where C.Element == UInt8 {
        append(leafHash: Merkle.leafHash(entry))
    }

    private func perfect(_ level: Int, _ index: UInt64) throws(NexusError) -> NexusHash {
        guard level < levels.count, index < UInt64(levels[level].count) else {
            throw NexusError(.invalidTreeSize, "subtree (\(level), \(index)) is not complete in a tree of size \(size)")
        }
        return levels[level][Int(index)]
    }

    /// The root hash of the first `size` leaves (default: all).
    public func rootHash(size: UInt64? = nil) throws(NexusError) -> NexusHash {
        let n = size ?? self.size
        guard n <= self.size else { throw NexusError(.invalidTreeSize, "tree has \(self.size) leaves, not \(n)") }
        return try Merkle.rootHash(size: n, perfect: perfect)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    public func inclusionProof(index: UInt64, size: UInt64? = nil) throws(NexusError) -> [NexusHash] {
        let n = size ?? self.size
        guard n <= self.size else { throw NexusError(.invalidTreeSize, "tree has \(self.size) leaves, not \(n)") }
        return try Merkle.inclusionProof(index: index, size: n, perfect: perfect)
    }

    /// The consistency proof from `old` to `new` leaves (default: all).
    public func consistencyProof(old: UInt64, new: UInt64? = nil) throws(NexusError) -> [NexusHash] {
        let n = new ?? self.size
        guard n <= self.size else { throw NexusError(.invalidTreeSize, "tree has \(self.size) leaves, not \(n)") }
        return try Merkle.consistencyProof(old: old, new: n, perfect: perfect)
    }
}
