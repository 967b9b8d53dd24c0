import STOQSimulation
import Nexus

/// A global view of a network's node ids, used to build the routing tables a converged Kademlia
/// network would have without running its bootstrap traffic.
///
/// For a node and bucket `b`, the bucket's candidates (ids sharing exactly `b` prefix bits with the
/// node) form one contiguous range of the sorted id list; a converged bucket holds all of them if
/// there are at most k, else k chosen uniformly at random (what long-lived-first replacement
/// converges to when joins are random). This is the "prefill from a global view" mode; the
/// "bootstrap" mode of ``DHTSimulator`` learns the same tables by lookups instead.
public struct ConvergedView: Sendable {
    /// All ids, sorted.
    public let sortedIDs: [NexusID]

    /// Creates a view of these ids.
    public init(ids: [NexusID]) { sortedIDs = ids.sorted() }

    /// First index whose id is ≥ `x`.
    func lowerBound(_ x: NexusID) -> Int {
        var lo = 0, hi = sortedIDs.count
        while lo < hi { let mid = (lo + hi) / 2; if sortedIDs[mid] < x { lo = mid + 1 } else { hi = mid } }
        return lo
    }

    /// The index range of ids whose first `bits` bits equal those of `prefix`.
    func range(prefix: NexusID, bits: Int) -> Range<Int> {
        // Mask: first `bits` bits of prefix, rest 0 (low) or 1 (high).
        let mask = NexusHash.prefixMask(bits)
        let low = prefix & mask, high = prefix | ~mask
        let a = lowerBound(low)
        var b = lowerBound(high)
        if b < sortedIDs.count && sortedIDs[b] == high { b += 1 }
        return a..<b
    }

    /// Indices (into ``sortedIDs``) of the contacts a converged node `id` holds, bucket by bucket.
    /// - Parameters:
    ///   - id: the node.
    ///   - k: bucket size.
    ///   - seed: seeds the random choice within over-full buckets.
    public func contacts(of id: NexusID, k: Int, seed: UInt64) -> [[Int]] {
        var out: [[Int]] = []
        var rng = SplitMix64(seed: seed ^ id.w0 ^ id.w2)
        for b in 0..<256 {
            let r = range(prefix: id.flippingBit(b), bits: b + 1)
            if r.isEmpty {
                out.append([])
            } else if r.count <= k {
                out.append(Array(r))
            } else {
                var chosen = Set<Int>()
                while chosen.count < k { chosen.insert(r.lowerBound + Int(rng.next() % UInt64(r.count))) }
                out.append(chosen.sorted())
            }
            // Once this node's own subtree holds nobody else, all deeper buckets are empty.
            if range(prefix: id, bits: b + 1).count <= 1 { break }
        }
        return out
    }

    /// The `count` ids closest to `key` in the XOR metric, closest first.
    public func closest(to key: NexusID, count: Int) -> [Int] {
        // The closest ids lie in the smallest subtree around key's position; a window suffices.
        let p = lowerBound(key)
        let lo = max(0, p - 4 * count - 64), hi = min(sortedIDs.count, p + 4 * count + 64)
        return (lo..<hi).sorted { key.isCloser(sortedIDs[$0], than: sortedIDs[$1]) }.prefix(count).map { $0 }
    }
}
