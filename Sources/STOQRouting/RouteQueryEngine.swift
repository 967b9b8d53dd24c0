/// Answers route queries on a `RoutingSnapshot`: Dijkstra with a binary heap over the CSR
/// overlay, scratch buffers reused between queries (stamped, so nothing is cleared), and a
/// small cache of shortest-path trees per (snapshot, source, size, weights).
///
/// One engine per thread: it is a value with mutable scratch space. Snapshots are shared.
public struct RouteQueryEngine {
    private var dist: [Float] = []
    private var parent: [Int32] = []
    private var reached: [UInt32] = []
    private var settled: [UInt32] = []
    private var blocked: [UInt32] = []
    private var stamp: UInt32 = 0
    private var blockStamp: UInt32 = 0
    private var heap: [UInt64] = []
    private var trees: [ShortestPathTree] = []
    private var treeKeys: [TreeKey] = []

    /// Most shortest-path trees kept (least recently used are dropped).
    public var treeCacheCapacity = 4
    /// Dijkstra runs so far.
    public private(set) var dijkstraRuns = 0
    /// Queries answered from a cached tree.
    public private(set) var treeCacheHits = 0

    private struct TreeKey: Equatable {
        var version: UInt64
        var source: Int32
        var size: Int
        var weights: RouteCostWeights
    }

    /// Creates an engine (scratch grows on first use).
    public init() {}

    // MARK: Queries

    /// The cheapest route from `source` to `destination`: the overlay's shortest path, or the
    /// direct link when that is cheaper (so a relay is chosen only when it beats direct).
    ///
    /// Queries from the snapshot's owner use (and fill) the tree cache; others run one
    /// Dijkstra that stops when the destination is settled.
    public mutating func route(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> Route? {
        guard let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination), u != v,
              snapshot.usable[Int(u)], snapshot.usable[Int(v)]
        else { return nil }
        var overlay: (cost: Float, path: [Int32])?
        if u == snapshot.selfSlot {
            let tree = shortestPathTree(in: snapshot, fromSlot: u, size: size, weights: weights)
            if let path = tree.slotPath(to: Int(v)) { overlay = (tree.cost[Int(v)], path) }
        } else if run(snapshot, source: Int(u), target: Int(v), size: size, weights: weights, useBlocked: false, forbidden: nil) {
            overlay = (dist[Int(v)], slotPath(to: Int(v)))
        }
        let direct = directEdge(snapshot, Int(u), Int(v), size: size, weights: weights)
        if let overlay, overlay.cost < direct.cost {
            return makeRoute(snapshot, overlay.path, cost: overlay.cost, size: size, weights: weights)
        }
        return Route(path: [source, destination], cost: direct.cost, latencyMilliseconds: direct.latency)
    }

    /// Routes from one source to many destinations with a single Dijkstra (one tree).
    public mutating func routes(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destinations: [RoutingNodeID],
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> [Route?] {
        guard let u = snapshot.slot(of: source), snapshot.usable[Int(u)] else {
            return Array(repeating: nil, count: destinations.count)
        }
        let tree = shortestPathTree(in: snapshot, fromSlot: u, size: size, weights: weights)
        return destinations.map { destination in
            guard let v = snapshot.slot(of: destination), v != u, snapshot.usable[Int(v)] else { return nil }
            let direct = directEdge(snapshot, Int(u), Int(v), size: size, weights: weights)
            if let path = tree.slotPath(to: Int(v)), tree.cost[Int(v)] < direct.cost {
                return makeRoute(snapshot, path, cost: tree.cost[Int(v)], size: size, weights: weights)
            }
            return Route(path: [source, destination], cost: direct.cost, latencyMilliseconds: direct.latency)
        }
    }

    /// The shortest-path tree from `source` (cached per snapshot, size and weights).
    public mutating func shortestPathTree(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, size: Int = 0,
        weights: RouteCostWeights = RouteCostWeights()
    ) -> ShortestPathTree? {
        guard let u = snapshot.slot(of: source) else { return nil }
        return shortestPathTree(in: snapshot, fromSlot: u, size: size, weights: weights)
    }

    /// Up to `count` node-disjoint routes (no relay shared), cheapest first: successive
    /// shortest paths, each removing the relays of the ones before; the direct link counts
    /// as one route (it shares no relay with any other).
    public mutating func disjointRoutes(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID, count: Int,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> [Route] {
        guard count > 0, let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination), u != v,
              snapshot.usable[Int(u)], snapshot.usable[Int(v)]
        else { return [] }
        ensureCapacity(snapshot.nodeCount)
        blockStamp &+= 1
        if blockStamp == 0 {
            for i in blocked.indices { blocked[i] = 0 }
            blockStamp = 1
        }
        var result: [Route] = []
        var directUsed = false
        while result.count < count {
            let forbidden = directUsed ? (Int(u), Int(v)) : nil
            guard run(snapshot, source: Int(u), target: Int(v), size: size, weights: weights, useBlocked: true, forbidden: forbidden)
            else { break }
            let path = slotPath(to: Int(v))
            result.append(makeRoute(snapshot, path, cost: dist[Int(v)], size: size, weights: weights))
            if path.count == 2 { directUsed = true }
            for relay in path.dropFirst().dropLast() { blocked[Int(relay)] = blockStamp }
        }
        if !directUsed && snapshot.edgeIndex(Int(u), Int(v)) == nil {
            let direct = directEdge(snapshot, Int(u), Int(v), size: size, weights: weights)
            result.append(Route(path: [source, destination], cost: direct.cost, latencyMilliseconds: direct.latency))
            result.sort { $0.cost < $1.cost }
            if result.count > count { result.removeLast() }
        }
        return result
    }

    /// The cheapest of the direct link and every single-relay route `source → r → destination`
    /// (r among `candidates`, or every usable node), costed on direct links (measured or predicted).
    public mutating func bestSingleRelayRoute(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID,
        candidates: [RoutingNodeID]? = nil, size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> Route? {
        guard let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination), u != v,
              snapshot.usable[Int(u)], snapshot.usable[Int(v)]
        else { return nil }
        let direct = directEdge(snapshot, Int(u), Int(v), size: size, weights: weights)
        var best = Route(path: [source, destination], cost: direct.cost, latencyMilliseconds: direct.latency)
        let slots: [Int32] = candidates.map { $0.compactMap { snapshot.slot(of: $0) } } ?? Array(0 ..< Int32(snapshot.nodeCount))
        for r in slots where r != u && r != v && snapshot.usable[Int(r)] {
            let first = directEdge(snapshot, Int(u), Int(r), size: size, weights: weights)
            if first.cost >= best.cost { continue }
            let second = directEdge(snapshot, Int(r), Int(v), size: size, weights: weights)
            if first.cost + second.cost < best.cost {
                best = Route(
                    path: [source, snapshot.ids[Int(r)], destination], cost: first.cost + second.cost,
                    latencyMilliseconds: first.latency + second.latency
                )
            }
        }
        return best
    }

    /// Ranks candidate sources for a transfer of `size` bytes to the snapshot's owner, cheapest
    /// first; unknown or down candidates come last with cost `.infinity`. The swarm uses this
    /// to prefer sources.
    public mutating func rankSources(
        in snapshot: RoutingSnapshot, candidates: [RoutingNodeID], size: Int,
        weights: RouteCostWeights = RouteCostWeights()
    ) -> [RankedSource] {
        let routes = routes(in: snapshot, from: snapshot.selfID, to: candidates, size: size, weights: weights)
        var ranked = zip(candidates, routes).map { node, route in
            RankedSource(node: node, cost: route?.cost ?? .infinity, route: route)
        }
        ranked.sort { $0.cost != $1.cost ? $0.cost < $1.cost : $0.node < $1.node }
        return ranked
    }

    // MARK: Dijkstra

    private mutating func ensureCapacity(_ count: Int) {
        if dist.count < count {
            dist = Array(repeating: 0, count: count)
            parent = Array(repeating: -1, count: count)
            reached = Array(repeating: 0, count: count)
            settled = Array(repeating: 0, count: count)
            blocked = Array(repeating: 0, count: count)
            stamp = 0
            blockStamp = 0
        }
    }

    private mutating func nextStamp() {
        stamp &+= 1
        if stamp == 0 {
            for i in reached.indices { reached[i] = 0; settled[i] = 0 }
            stamp = 1
        }
    }

    /// Dijkstra from `source`; stops when `target` (>= 0) is settled. Returns whether it was reached.
    private mutating func run(
        _ snapshot: RoutingSnapshot, source: Int, target: Int, size: Int, weights: RouteCostWeights,
        useBlocked: Bool, forbidden: (Int, Int)?
    ) -> Bool {
        ensureCapacity(snapshot.nodeCount)
        nextStamp()
        dijkstraRuns += 1
        let current = stamp
        let rowStart = snapshot.rowStart
        let edgeTarget = snapshot.edgeTarget
        let edgeLatency = snapshot.edgeLatency
        let edgeSecondsPerBit = snapshot.edgeSecondsPerBit
        let edgeKilometres = snapshot.edgeKilometres
        let load = snapshot.load
        let wLatency = weights.latency
        let wTransfer = weights.transfer * Float(max(0, size)) * 8 * 1000
        let wLoad = weights.load
        let wGeo = weights.geographic / 1000
        let wHop = weights.hop
        let blockedValue = useBlocked ? blockStamp : UInt32.max
        let forbiddenFrom = forbidden?.0 ?? -1
        let forbiddenTo = forbidden?.1 ?? -1

        heap.removeAll(keepingCapacity: true)
        dist[source] = 0
        parent[source] = -1
        reached[source] = current
        heapPush(UInt64(source))
        while let top = heapPop() {
            let u = Int(truncatingIfNeeded: top & 0xFFFF_FFFF)
            if settled[u] == current { continue }
            settled[u] = current
            if u == target { return true }
            let d = dist[u]
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                let v = Int(edgeTarget[e])
                if settled[v] == current { continue }
                if useBlocked && blocked[v] == blockedValue && v != target { continue }
                if u == forbiddenFrom && v == forbiddenTo { continue }
                let cost = d + wLatency * edgeLatency[e] + wTransfer * edgeSecondsPerBit[e] + wLoad * load[v]
                    + wGeo * edgeKilometres[e] + wHop
                if reached[v] != current || cost < dist[v] {
                    reached[v] = current
                    dist[v] = cost
                    parent[v] = Int32(u)
                    heapPush(UInt64(cost.bitPattern) << 32 | UInt64(v))
                }
            }
        }
        return target < 0
    }

    private mutating func shortestPathTree(
        in snapshot: RoutingSnapshot, fromSlot source: Int32, size: Int, weights: RouteCostWeights
    ) -> ShortestPathTree {
        let key = TreeKey(version: snapshot.version, source: source, size: size, weights: weights)
        for i in trees.indices where trees[i].snapshot === snapshot && treeKeys[i] == key {
            treeCacheHits += 1
            return trees[i]
        }
        _ = run(snapshot, source: Int(source), target: -1, size: size, weights: weights, useBlocked: false, forbidden: nil)
        let count = snapshot.nodeCount
        var cost = [Float](repeating: .infinity, count: count)
        var parents = [Int32](repeating: -1, count: count)
        for i in 0 ..< count where reached[i] == stamp {
            cost[i] = dist[i]
            parents[i] = parent[i]
        }
        let tree = ShortestPathTree(snapshot: snapshot, source: source, cost: cost, parent: parents)
        if trees.count >= max(1, treeCacheCapacity) {
            trees.removeFirst()
            treeKeys.removeFirst()
        }
        trees.append(tree)
        treeKeys.append(key)
        return tree
    }

    private func slotPath(to target: Int) -> [Int32] {
        var path: [Int32] = [Int32(target)]
        var current = target
        while parent[current] >= 0 {
            current = Int(parent[current])
            path.append(Int32(current))
        }
        return path.reversed()
    }

    private func makeRoute(_ snapshot: RoutingSnapshot, _ path: [Int32], cost: Float, size: Int, weights: RouteCostWeights) -> Route {
        var latency: Float = 0
        for i in 1 ..< path.count {
            let u = Int(path[i - 1]), v = Int(path[i])
            latency += snapshot.edgeIndex(u, v).map { snapshot.edgeLatency[$0] } ?? snapshot.predictedLatency(u, v)
        }
        return Route(path: path.map { snapshot.ids[Int($0)] }, cost: cost, latencyMilliseconds: latency)
    }

    /// Cost of the direct link `u → v`: the overlay edge when there is one, else a prediction.
    func directEdge(_ snapshot: RoutingSnapshot, _ u: Int, _ v: Int, size: Int, weights: RouteCostWeights) -> (cost: Float, latency: Float) {
        let latency: Float
        let secondsPerBit: Float
        let kilometres: Float
        if let e = snapshot.edgeIndex(u, v) {
            latency = snapshot.edgeLatency[e]
            secondsPerBit = snapshot.edgeSecondsPerBit[e]
            kilometres = snapshot.edgeKilometres[e]
        } else {
            latency = snapshot.predictedLatency(u, v)
            let a = snapshot.bandwidth[u], b = snapshot.bandwidth[v]
            let known = min(a > 0 ? a : .infinity, b > 0 ? b : .infinity)
            secondsPerBit = known.isFinite ? 1 / known : snapshot.defaultSecondsPerBit
            kilometres = Float(snapshot.geo[u].distanceKilometres(to: snapshot.geo[v]))
        }
        let cost = weights.latency * latency + weights.transfer * Float(max(0, size)) * 8 * 1000 * secondsPerBit
            + weights.load * snapshot.load[v] + weights.geographic / 1000 * kilometres + weights.hop
        return (cost, latency)
    }

    // MARK: Heap of (cost bits << 32 | slot); non-negative floats order like their bits.

    @inline(__always)
    private mutating func heapPush(_ value: UInt64) {
        heap.append(value)
        var child = heap.count - 1
        while child > 0 {
            let parentIndex = (child - 1) >> 1
            let parentValue = heap[parentIndex]
            if value >= parentValue { break }
            heap[child] = parentValue
            child = parentIndex
        }
        heap[child] = value
    }

    @inline(__always)
    private mutating func heapPop() -> UInt64? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        let count = heap.count
        if count == 0 { return top }
        var index = 0
        while true {
            let left = 2 * index + 1
            if left >= count { break }
            var child = left
            if left + 1 < count && heap[left + 1] < heap[left] { child = left + 1 }
            if heap[child] >= last { break }
            heap[index] = heap[child]
            index = child
        }
        heap[index] = last
        return top
    }
}

@available(*, unavailable)
extension RouteQueryEngine: Sendable {}
