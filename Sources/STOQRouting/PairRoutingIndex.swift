/// Per-snapshot landmark distances (ALT: A*, landmarks, triangle inequality) that make route
/// queries between two arbitrary nodes cheap, for one set of weights and a smallest transfer size.
///
/// ## What it holds
/// For a few landmarks `L` spread over the map, the exact cost from `L` to every node and from
/// every node to `L` in the snapshot's overlay. The triangle inequality then bounds any cost:
/// `cost(v, t) ≥ max(d(v, L) − d(t, L), d(L, t) − d(L, v))`. These bounds are consistent A*
/// potentials, so a search guided by them is still exact. A route query compares the overlay with
/// the direct link and takes a relay route only when it is cheaper, so the direct link's cost bounds
/// the search: on the benchmark's 10,000 nodes 16 landmarks prove for 40 % of the pairs that no relay
/// route is cheaper (no search at all), and the other searches settle ~11 nodes, not ~330.
///
/// ## Why landmarks, not a contraction hierarchy or the Vivaldi bounds (reasoning and measurements)
/// - The overlay is a small-world graph: 32 nearest neighbours plus 8 random long-range links per
///   node, and measured links between random pairs. Contracting a node that a long-range link enters
///   needs a shortcut from the far end to nearly every local neighbour (no witness exists: any other
///   way is a hop longer), so a hierarchy densifies instead of thinning out; and a tenth of the loads
///   change every 100 ms, which a customizable hierarchy would re-customize on a graph whose random
///   links defeat nested dissection. (Argued, not built: landmarks were built and measured instead.)
/// - Vivaldi distances are no safe bound: some nodes sit far from where their measured links put
///   them (a 12 ms link predicted at 197 ms), which pushed the snapshot's potential scale to 0.02–0.05.
///   Landmark distances are exact distances of the graph itself, whatever the coordinates.
///
/// Built off the query path: the updater thread builds one after every publish or every second one
/// (queries then answer on a snapshot at most two publishes old; see `RouteQueryEngine.route(in:…)`
/// with a `RoutingSnapshotCell`). A build is two Dijkstra runs per landmark with a bucket queue,
/// ~64 ms of CPU with 16 landmarks for 10,000 nodes and 420,000 edges; the index holds 128 bytes per
/// node and 8 per edge (~4.5 MB). Immutable and shared by every query thread.
///
/// More landmarks cost build time and pay back in queries: with 4, 6, 8 and 16 landmarks the
/// benchmark answered 15,000, 27,000, 77,000 and 146,000 pair queries per CPU-second (86, 81, 75
/// and 59 % of them searched), for 19, 26, 34 and 64 ms per build.
public final class PairRoutingIndex: Sendable {
    /// The snapshot the index describes (queries with this index answer on this snapshot).
    public let snapshot: RoutingSnapshot
    /// The weights it was built for (other weights use the plain search).
    public let weights: RouteCostWeights
    /// The transfer size its distances assume: the bounds hold for this size and every larger one
    /// (an edge costs more for a larger transfer), so queries of smaller sizes use the plain search.
    public let size: Int
    /// The landmark slots (up to `maxLandmarks`).
    public let landmarks: [Int32]
    /// Per slot, the distances to and from every landmark (two cache lines).
    let distances: [LandmarkDistances]
    /// The cost of every edge (CSR and reverse-CSR order) for `weights` and exactly `size`: queries
    /// of that size read them instead of computing them.
    let edgeCosts: IndexedEdgeCosts

    /// Landmarks at most: one SIMD16 lane each.
    public static let maxLandmarks = 16
    /// The distance stored for "unreachable": finite, so the bounds need no branches
    /// (`unreachable − x` proves unreachability, `x − unreachable` proves nothing, and
    /// `unreachable − unreachable` is 0), and far above any real cost.
    static let unreachable: Float = 1e30

    /// Bytes held by the index's own arrays (not the snapshot).
    public var memoryBytes: Int {
        MemoryLayout<LandmarkDistances>.stride * distances.count + 4 * landmarks.count
            + 4 * (edgeCosts.forwardCosts.count + edgeCosts.reverseCosts.count)
    }

    /// Builds the index of `snapshot`.
    ///
    /// - Parameters:
    ///   - snapshot: the snapshot.
    ///   - weights: the weights queries will use (the default ones by default).
    ///   - size: the smallest transfer size the index serves (0 serves every size, with looser bounds).
    ///   - landmarkCount: landmarks, at most `maxLandmarks` (each costs two Dijkstra runs to build;
    ///     fewer make the bounds much weaker, see the type's documentation).
    public init(snapshot: RoutingSnapshot, weights: RouteCostWeights = RouteCostWeights(), size: Int = 0, landmarkCount: Int = maxLandmarks) {
        let nodes = snapshot.nodeCount
        let chosen = Self.chooseLandmarks(snapshot, count: min(Self.maxLandmarks, max(1, landmarkCount)))
        var table = [LandmarkDistances](repeating: LandmarkDistances(), count: nodes)
        var heap = SlotHeap(storage: [])
        var distance = [Float](repeating: .infinity, count: nodes)
        let forwardCost = Self.edgeCosts(snapshot, reverse: false, weights: weights, size: size)
        let reverseCost = Self.edgeCosts(snapshot, reverse: true, weights: weights, size: size)
        var queue = BucketQueue(width: forwardCost.min() ?? 0)
        // Unused lanes repeat the first landmark (a duplicate bound changes nothing).
        for lane in 0 ..< (chosen.isEmpty ? 0 : Self.maxLandmarks) {
            if lane >= chosen.count {
                for v in 0 ..< nodes {
                    table[v].to[lane] = table[v].to[0]
                    table[v].from[lane] = table[v].from[0]
                }
                continue
            }
            for reverse in [false, true] {
                let rows = reverse ? snapshot.reverseRowStart : snapshot.rowStart
                let edges = reverse ? snapshot.reverseEdges : snapshot.edges
                let costs = reverse ? reverseCost : forwardCost
                if queue.width <= 0 || !queue.dijkstra(rows, edges, costs, from: Int(chosen[lane]), distance: &distance) {
                    Self.dijkstra(rows, edges, costs, from: Int(chosen[lane]), distance: &distance, heap: &heap)
                }
                for v in 0 ..< nodes {
                    let d = distance[v].isFinite ? distance[v] : Self.unreachable
                    if reverse { table[v].to[lane] = d } else { table[v].from[lane] = d }
                }
            }
        }
        self.snapshot = snapshot
        self.weights = weights
        self.size = max(0, size)
        self.landmarks = chosen
        self.distances = table
        self.edgeCosts = IndexedEdgeCosts(forwardCosts: forwardCost, reverseCosts: reverseCost)
    }

    /// Whether the index answers queries with these weights and size on this snapshot.
    func serves(_ snapshot: RoutingSnapshot, _ weights: RouteCostWeights, size: Int) -> Bool {
        self.snapshot === snapshot && self.weights == weights && max(0, size) >= self.size
    }

    /// Landmarks far apart: usable nodes with edges both ways, chosen farthest-first over the
    /// positions (the Vivaldi coordinates when positions are unknown), starting from a node fixed
    /// by the snapshot's size. On the benchmark's network (8 landmarks), farthest-first in Vivaldi space (84 % of
    /// the pairs searched, 14,000 queries per CPU-second) and by the graph's own round-trip costs
    /// (80 %, 6,000: it picks badly connected outliers) were both far worse than geography (75 %, 63,000).
    static func chooseLandmarks(_ snapshot: RoutingSnapshot, count: Int) -> [Int32] {
        let nodes = snapshot.nodeCount
        var candidates: [Int] = []
        for v in 0 ..< nodes where snapshot.usable[v]
            && snapshot.rowStart[v + 1] > snapshot.rowStart[v] && snapshot.reverseRowStart[v + 1] > snapshot.reverseRowStart[v] {
            candidates.append(v)
        }
        guard !candidates.isEmpty else { return [] }
        let points: [SIMD4<Float>] = snapshot.geoBoundValid ? snapshot.geoPoints : snapshot.coordinates.map(\.vector)
        var chosen: [Int32] = [Int32(candidates[(candidates.count * 7) / 13])]
        var nearest = [Float](repeating: .infinity, count: candidates.count)
        while chosen.count < min(count, candidates.count) {
            let last = points[Int(chosen[chosen.count - 1])]
            var farthest = 0
            for (j, v) in candidates.enumerated() {
                let d = points[v] - last
                nearest[j] = min(nearest[j], (d * d).sum())
                if nearest[j] > nearest[farthest] { farthest = j }
            }
            guard nearest[farthest] > 0 else { break }
            chosen.append(Int32(candidates[farthest]))
        }
        return chosen
    }

    /// The route cost of every edge in CSR order (`reverse`: in reverse-CSR order), for `weights`
    /// and `size`: an edge `u → v` costs the load of `v` either way.
    static func edgeCosts(_ snapshot: RoutingSnapshot, reverse: Bool, weights: RouteCostWeights, size: Int) -> [Float] {
        let rowStart = reverse ? snapshot.reverseRowStart : snapshot.rowStart
        let edges = reverse ? snapshot.reverseEdges : snapshot.edges
        let load = snapshot.load
        let terms = EdgeCostTerms(weights, size: size)
        var costs = [Float](repeating: 0, count: edges.count)
        for u in 0 ..< snapshot.nodeCount {
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                let edge = edges[e]
                let head = reverse ? u : Int(edge.target)
                costs[e] = terms.edge(edge) + terms.load * load[head]
            }
        }
        return costs
    }

    /// Full Dijkstra from `source` over a CSR (forward or reverse) with per-edge costs.
    static func dijkstra(
        _ rowStart: [Int32], _ edges: [RoutingEdge], _ costs: [Float], from source: Int,
        distance: inout [Float], heap: inout SlotHeap
    ) {
        for i in distance.indices { distance[i] = .infinity }
        heap.storage.removeAll(keepingCapacity: true)
        distance[source] = 0
        heap.push(UInt64(source))
        while let top = heap.pop() {
            let u = Int(truncatingIfNeeded: top & 0xFFFF_FFFF)
            let d = Float(bitPattern: UInt32(top >> 32))
            if d > distance[u] { continue }
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                let v = Int(edges[e].target)
                let cost = d + costs[e]
                if cost < distance[v] {
                    distance[v] = cost
                    heap.push(UInt64(cost.bitPattern) << 32 | UInt64(v))
                }
            }
        }
    }
}

/// Dijkstra with a bucket queue (Dial): buckets as wide as the cheapest edge, so every node of
/// the lowest bucket is final (an edge leaving it lands at least one bucket further) and the
/// buckets are emptied in order without a heap. Exact, for edge costs all ≥ the width.
struct BucketQueue {
    /// Bucket width (a little under the cheapest edge cost, against rounding); 0 when unusable.
    let width: Float
    private var buckets: [[Int32]] = []
    private var settled: [Bool] = []

    init(width cheapest: Float) {
        width = cheapest.isFinite && cheapest > 0 ? cheapest * 0.99 : 0
    }

    /// Most buckets: with edges far cheaper than the distances (a tiny hop weight) a heap is better.
    static let maxBuckets = 1 << 16

    /// Full Dijkstra from `source` over a CSR with per-edge costs (`width` must be > 0); false when
    /// the distances span more than `maxBuckets` buckets (then `distance` is incomplete).
    mutating func dijkstra(_ rowStart: [Int32], _ edges: [RoutingEdge], _ costs: [Float], from source: Int, distance: inout [Float]) -> Bool {
        for i in distance.indices { distance[i] = .infinity }
        for i in buckets.indices { buckets[i].removeAll(keepingCapacity: true) }
        if settled.count != distance.count { settled = Array(repeating: false, count: distance.count) }
        for i in settled.indices { settled[i] = false }
        let scale = 1 / width
        distance[source] = 0
        var pending = 1
        if buckets.isEmpty { buckets.append([]) }
        buckets[0].append(Int32(source))
        var current = 0
        while pending > 0 {
            while buckets[current].isEmpty { current += 1 }
            let entries = buckets[current]
            buckets[current].removeAll(keepingCapacity: true)
            pending -= entries.count
            for entry in entries {
                let u = Int(entry)
                // A stale entry: u was improved into an earlier bucket since, and settled there.
                if settled[u] { continue }
                settled[u] = true
                let d = distance[u]
                for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                    let v = Int(edges[e].target)
                    let cost = d + costs[e]
                    if cost < distance[v] {
                        distance[v] = cost
                        let scaled = cost * scale
                        guard scaled < Float(Self.maxBuckets) else { return false }
                        let bucket = max(current + 1, Int(scaled))
                        while bucket >= buckets.count { buckets.append([]) }
                        buckets[bucket].append(Int32(v))
                        pending += 1
                    }
                }
            }
        }
        return true
    }
}

/// Edge costs read from tables (see `PairRoutingIndex.edgeCosts`).
struct IndexedEdgeCosts: PairEdgeCosts {
    /// Per CSR edge.
    let forwardCosts: [Float]
    /// Per reverse-CSR edge.
    let reverseCosts: [Float]

    @inline(__always)
    func forward(_ e: Int, _ edge: RoutingEdge) -> Float { forwardCosts[e] }
    @inline(__always)
    func entering(_ v: Int) -> Float { 0 }
    @inline(__always)
    func backward(_ e: Int, _ edge: RoutingEdge, entering: Float) -> Float { reverseCosts[e] }
}

/// Distances between one slot and the landmarks (`unreachable` when there is no path).
struct LandmarkDistances {
    /// `d(v, L_i)` in lane `i`.
    var to = SIMD16<Float>(repeating: PairRoutingIndex.unreachable)
    /// `d(L_i, v)` in lane `i`.
    var from = SIMD16<Float>(repeating: PairRoutingIndex.unreachable)
}

/// The potential of `PairRoutingIndex` for one (source, target) pair: each landmark gives a lower
/// bound of the cost to the target (`d(v, L) − d(t, L)`, `d(L, t) − d(L, v)`) and of the cost from
/// the source (`d(L, v) − d(L, s)`, `d(s, L) − d(v, L)`). The pair check uses every landmark; the
/// search, the `activeLandmarks` that bound the pair best.
struct LandmarkPairPotential: PairPotential {
    let distances: [LandmarkDistances]
    let source: Int, target: Int
    /// The landmark bound of `cost(source, target)`.
    let pairBound: Float
    /// Landmarks the search uses per pair: the ones that bound the pair best. Fewer bounds per
    /// node reached are cheaper and, on the benchmark's network, two beat three or four
    /// (78,000 vs 74,000 vs 68,000 queries per CPU-second with 8 landmarks, same nodes settled).
    static let activeLandmarks = 2
    /// The landmarks that bound the pair best, in the first `activeLandmarks` lanes.
    let active: SIMD4<Int32>
    /// `d(t, L)`, `d(L, t)`, `d(s, L)`, `d(L, s)` of the active landmarks.
    let targetTo: SIMD4<Float>, targetFrom: SIMD4<Float>
    let sourceTo: SIMD4<Float>, sourceFrom: SIMD4<Float>

    init(_ index: PairRoutingIndex, source: Int, target: Int) {
        distances = index.distances
        self.source = source
        self.target = target
        let s = distances[source], t = distances[target]
        pairBound = Self.bound(s, t)
        // Insertion into a sorted SIMD4: the lanes with the largest bound for the pair.
        var active = SIMD4<Int32>(repeating: 0)
        var activeBound = SIMD4<Float>(repeating: -1)
        for i in 0 ..< PairRoutingIndex.maxLandmarks {
            var bound = max(s.to[i] - t.to[i], t.from[i] - s.from[i])
            var lane = Int32(i)
            for j in 0 ..< Self.activeLandmarks where bound > activeBound[j] {
                swap(&bound, &activeBound[j])
                swap(&lane, &active[j])
            }
        }
        self.active = active
        var tTo = SIMD4<Float>(repeating: 0), tFrom = tTo, sTo = tTo, sFrom = tTo
        for j in 0 ..< Self.activeLandmarks {
            let i = Int(active[j])
            tTo[j] = t.to[i]
            tFrom[j] = t.from[i]
            sTo[j] = s.to[i]
            sFrom[j] = s.from[i]
        }
        targetTo = tTo
        targetFrom = tFrom
        sourceTo = sTo
        sourceFrom = sFrom
    }

    /// Lower bound of `cost(a, b)`: `max(0, d(a, L) − d(b, L), d(L, b) − d(L, a))` over the landmarks.
    @inline(__always)
    static func bound(_ a: LandmarkDistances, _ b: LandmarkDistances) -> Float {
        // Lane by lane: the generic SIMD reductions are not inlined and cost more than this.
        let x = a.to - b.to, y = b.from - a.from
        var result: Float = 0
        for i in 0 ..< PairRoutingIndex.maxLandmarks { result = max(result, max(x[i], y[i])) }
        return result
    }

    @inline(__always)
    func forward(_ v: Int) -> Float {
        let d = distances[v]
        var to = SIMD4<Float>(repeating: 0), from = to
        for j in 0 ..< Self.activeLandmarks {
            let i = Int(active[j])
            to[j] = d.to[i]
            from[j] = d.from[i]
        }
        // To the target: d(v, L) − d(t, L), d(L, t) − d(L, v); from the source: d(L, v) − d(L, s), d(s, L) − d(v, L).
        let x = to - targetTo, y = targetFrom - from, z = from - sourceFrom, w = sourceTo - to
        var toTarget: Float = 0, fromSource: Float = 0
        for j in 0 ..< Self.activeLandmarks {
            toTarget = max(toTarget, max(x[j], y[j]))
            fromSource = max(fromSource, max(z[j], w[j]))
        }
        if v == target { toTarget = 0 }
        if v == source { fromSource = 0 }
        // A consistent potential scaled by less than one stays consistent (costs are ≥ 0); the
        // margin absorbs rounding. Bounds of `unreachable` size only need to stay above real costs.
        return (toTarget - fromSource) * (0.5 * 0.999)
    }
}
