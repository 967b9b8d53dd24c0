/// Answers route queries on a `RoutingSnapshot`: Dijkstra with a binary heap over the CSR
/// overlay, scratch buffers reused between queries (stamped, so nothing is cleared), and a
/// small cache of shortest-path trees per (snapshot, source, size, weights).
///
/// One engine per thread: it is a value with mutable scratch space. Snapshots are shared.
public struct RouteQueryEngine {
    private var state: [NodeState] = []
    private var reverseState: [NodeState] = []
    private var reverseHeap: [UInt64] = []
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
    /// Nodes settled by all Dijkstra/A* runs so far.
    public private(set) var settledNodes = 0
    /// Pair queries answered with a `PairRoutingIndex`.
    public private(set) var indexedQueries = 0
    /// Indexed pair queries whose landmark bound did not rule out a relay route (so they searched).
    public private(set) var indexedSearches = 0
    /// Queries whose answer was a relay route (cheaper than the direct link).
    public private(set) var relayAnswers = 0

    /// Per-slot search state, together so a relaxation touches one cache line.
    private struct NodeState {
        /// Cost from the source (valid when `reached == stamp`).
        var cost: Float = 0
        /// A* potential towards the target.
        var potential: Float = 0
        var reached: UInt32 = 0
        var closed: UInt32 = 0
        var parent: Int32 = -1
    }

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
    ///
    /// - Parameter index: a `PairRoutingIndex` of `snapshot`, used when it was built for these
    ///   weights and at most this size: the search then starts from much tighter bounds (on the
    ///   benchmark, 40 % of the pairs need no search at all, as the bounds prove that no relay route
    ///   beats the direct link, and the rest settle ~11 nodes instead of ~330). The answer is the same.
    public mutating func route(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights(), index: PairRoutingIndex? = nil
    ) -> Route? {
        guard let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination), u != v,
              snapshot.usable[Int(u)], snapshot.usable[Int(v)]
        else { return nil }
        var overlay: (cost: Float, path: [Int32])?
        // Only a relay route cheaper than the direct link can change the answer, so the direct
        // link's cost bounds the search.
        let direct = directEdge(snapshot, Int(u), Int(v), size: size, weights: weights)
        if u == snapshot.selfSlot {
            let tree = shortestPathTree(in: snapshot, fromSlot: u, size: size, weights: weights)
            if let path = tree.slotPath(to: Int(v)) { overlay = (tree.cost[Int(v)], path) }
        } else if let index, index.serves(snapshot, weights, size: size) {
            indexedQueries += 1
            let potential = LandmarkPairPotential(index, source: Int(u), target: Int(v))
            // The landmarks often prove at once that no relay route beats the direct link.
            if potential.pairBound < direct.cost {
                indexedSearches += 1
                // The index's own edge costs when it was built for this very size.
                if index.size == max(0, size) {
                    overlay = bidirectional(
                        snapshot, source: Int(u), target: Int(v), costBound: direct.cost, potential: potential, costs: index.edgeCosts
                    )
                } else {
                    overlay = bidirectional(
                        snapshot, source: Int(u), target: Int(v), costBound: direct.cost, potential: potential,
                        costs: TermEdgeCosts(snapshot, weights, size: size)
                    )
                }
            }
        } else if let found = bidirectional(snapshot, source: Int(u), target: Int(v), size: size, weights: weights, costBound: direct.cost) {
            overlay = found
        }
        if let overlay, overlay.cost < direct.cost {
            relayAnswers += 1
            return makeRoute(snapshot, overlay.path, cost: overlay.cost, size: size, weights: weights)
        }
        return Route(path: [source, destination], cost: direct.cost, latencyMilliseconds: direct.latency)
    }

    /// The cheapest route on what `cell` holds: with its pair-routing index when that was built for
    /// these weights and size and its snapshot is at most `maxIndexAge` publishes older than the
    /// newest one (the answer is then exact for the index's snapshot), else on the newest snapshot
    /// with the plain search.
    @available(macOS 15.0, *)
    public mutating func route(
        in cell: RoutingSnapshotCell, from source: RoutingNodeID, to destination: RoutingNodeID,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights(), maxIndexAge: UInt64 = 2
    ) -> Route? {
        let newest = cell.load()
        if let index = cell.loadIndex(), index.serves(index.snapshot, weights, size: size),
           newest.version &- index.snapshot.version <= maxIndexAge {
            return route(in: index.snapshot, from: source, to: destination, size: size, weights: weights, index: index)
        }
        return route(in: newest, from: source, to: destination, size: size, weights: weights)
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
            result.append(makeRoute(snapshot, path, cost: state[Int(v)].cost, size: size, weights: weights))
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
        if state.count < count {
            state = Array(repeating: NodeState(), count: count)
            reverseState = Array(repeating: NodeState(), count: count)
            blocked = Array(repeating: 0, count: count)
            stamp = 0
            blockStamp = 0
        }
    }

    private mutating func nextStamp() {
        stamp &+= 1
        if stamp == 0 {
            for i in state.indices {
                state[i].reached = 0
                state[i].closed = 0
                reverseState[i].reached = 0
                reverseState[i].closed = 0
            }
            stamp = 1
        }
    }

    /// Overlay shortest-path cost between two nodes (A* towards the destination), without
    /// comparing with the direct link; nil when the overlay does not connect them.
    mutating func overlayCost(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> Float? {
        guard let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination) else { return nil }
        return bidirectional(snapshot, source: Int(u), target: Int(v), size: size, weights: weights)?.cost
    }

    /// Overlay shortest-path cost with the one-directional A* (tests compare both searches).
    mutating func unidirectionalOverlayCost(
        in snapshot: RoutingSnapshot, from source: RoutingNodeID, to destination: RoutingNodeID,
        size: Int = 0, weights: RouteCostWeights = RouteCostWeights()
    ) -> Float? {
        guard let u = snapshot.slot(of: source), let v = snapshot.slot(of: destination) else { return nil }
        guard run(snapshot, source: Int(u), target: Int(v), size: size, weights: weights, useBlocked: false, forbidden: nil)
        else { return nil }
        return state[Int(v)].cost
    }

    /// Bidirectional A* (forward from the source, backward over the reverse CSR from the
    /// target) with the average potentials `±(π_t − π_s) / 2` of the snapshot's Vivaldi and
    /// light-in-fibre bounds. See `bidirectional(_:source:target:costBound:potential:costs:)`.
    private mutating func bidirectional(
        _ snapshot: RoutingSnapshot, source: Int, target: Int, size: Int, weights: RouteCostWeights,
        costBound: Float = .infinity
    ) -> (cost: Float, path: [Int32])? {
        let potential = VivaldiPairPotential(snapshot, source: source, target: target, weights: weights)
        return bidirectional(
            snapshot, source: source, target: target, costBound: costBound, potential: potential,
            costs: TermEdgeCosts(snapshot, weights, size: size)
        )
    }

    /// Bidirectional A* (forward from the source, backward over the reverse CSR from the
    /// target) with the average potentials `±(π_t − π_s) / 2` that `potential` gives, which keep
    /// both searches consistent; it stops when the two smallest keys add up to the best meeting
    /// cost. Only paths cheaper than `costBound` are looked for (the caller has one that cheap).
    /// Returns the cost and the slot path.
    mutating func bidirectional<Potential: PairPotential, Costs: PairEdgeCosts>(
        _ snapshot: RoutingSnapshot, source: Int, target: Int, costBound: Float, potential pairPotential: Potential, costs: Costs
    ) -> (cost: Float, path: [Int32])? {
        ensureCapacity(snapshot.nodeCount)
        nextStamp()
        dijkstraRuns += 1
        let current = stamp
        let rowStart = snapshot.rowStart
        let edges = snapshot.edges
        let reverseRowStart = snapshot.reverseRowStart
        let reverseEdges = snapshot.reverseEdges

        // Forward potential; the backward one is its negation.
        @inline(__always) func potential(_ v: Int) -> Float { pairPotential.forward(v) }
        // Keys are floats ordered by their bits, so they must not be negative: every forward key
        // is at least the source's potential and every backward key at least the target's, so
        // each side is shifted by what makes that smallest key zero.
        let forwardShift = max(0, -potential(source))
        let backwardShift = max(0, potential(target))
        @inline(__always) func key(_ value: Float) -> UInt64 { UInt64(max(0, value).bitPattern) << 32 }

        var forward = self.state
        var backward = self.reverseState
        self.state = []
        self.reverseState = []
        var forwardHeap = SlotHeap(storage: self.heap)
        var backwardHeap = SlotHeap(storage: self.reverseHeap)
        self.heap = []
        self.reverseHeap = []
        forwardHeap.storage.removeAll(keepingCapacity: true)
        backwardHeap.storage.removeAll(keepingCapacity: true)
        var settledCount = 0
        defer {
            self.state = forward
            self.reverseState = backward
            self.heap = forwardHeap.storage
            self.reverseHeap = backwardHeap.storage
            settledNodes += settledCount
        }

        let sourcePotential = potential(source) + forwardShift
        forward[source] = NodeState(cost: 0, potential: sourcePotential, reached: current, closed: 0, parent: -1)
        forwardHeap.push(key(sourcePotential) | UInt64(source))
        let targetPotential = -potential(target) + backwardShift
        backward[target] = NodeState(cost: 0, potential: targetPotential, reached: current, closed: 0, parent: -1)
        backwardHeap.push(key(targetPotential) | UInt64(target))

        var best = costBound
        var meet = -1
        let shifts = forwardShift + backwardShift
        // Every backward key is at least the target's and every forward key at least the source's
        // (consistent potentials), so a node whose key plus the other side's floor reaches `best`
        // would only be popped after the search stopped: it is recorded (for meetings) but not queued.
        let forwardPrune = -potential(target) - forwardShift
        let backwardPrune = potential(source) - backwardShift
        while let topForward = forwardHeap.storage.first, let topBackward = backwardHeap.storage.first {
            let keys = Float(bitPattern: UInt32(topForward >> 32)) + Float(bitPattern: UInt32(topBackward >> 32))
            if keys - shifts >= best { break }
            if forwardHeap.storage.count <= backwardHeap.storage.count {
                let u = Int(truncatingIfNeeded: forwardHeap.pop()! & 0xFFFF_FFFF)
                if forward[u].closed == current { continue }
                forward[u].closed = current
                settledCount += 1
                let d = forward[u].cost
                for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                    let edge = edges[e]
                    let v = Int(edge.target)
                    let cost = d + costs.forward(e, edge)
                    if forward[v].reached != current {
                        let h = potential(v) + forwardShift
                        forward[v] = NodeState(cost: cost, potential: h, reached: current, closed: 0, parent: Int32(u))
                        if cost + h + forwardPrune < best { forwardHeap.push(key(cost + h) | UInt64(v)) }
                    } else if cost < forward[v].cost && forward[v].closed != current {
                        forward[v].cost = cost
                        forward[v].parent = Int32(u)
                        let value = cost + forward[v].potential
                        if value + forwardPrune < best { forwardHeap.push(key(value) | UInt64(v)) }
                    } else {
                        continue
                    }
                    if backward[v].reached == current && cost + backward[v].cost < best {
                        best = cost + backward[v].cost
                        meet = v
                    }
                }
            } else {
                let v = Int(truncatingIfNeeded: backwardHeap.pop()! & 0xFFFF_FFFF)
                if backward[v].closed == current { continue }
                backward[v].closed = current
                settledCount += 1
                let d = backward[v].cost
                let nodeCost = costs.entering(v)
                for e in Int(reverseRowStart[v]) ..< Int(reverseRowStart[v + 1]) {
                    let edge = reverseEdges[e]
                    let u = Int(edge.target)
                    let cost = d + costs.backward(e, edge, entering: nodeCost)
                    if backward[u].reached != current {
                        let h = -potential(u) + backwardShift
                        backward[u] = NodeState(cost: cost, potential: h, reached: current, closed: 0, parent: Int32(v))
                        if cost + h + backwardPrune < best { backwardHeap.push(key(cost + h) | UInt64(u)) }
                    } else if cost < backward[u].cost && backward[u].closed != current {
                        backward[u].cost = cost
                        backward[u].parent = Int32(v)
                        let value = cost + backward[u].potential
                        if value + backwardPrune < best { backwardHeap.push(key(value) | UInt64(u)) }
                    } else {
                        continue
                    }
                    if forward[u].reached == current && cost + forward[u].cost < best {
                        best = cost + forward[u].cost
                        meet = u
                    }
                }
            }
        }
        guard meet >= 0 else { return nil }
        var path: [Int32] = []
        var node = meet
        while node >= 0 {
            path.append(Int32(node))
            node = Int(forward[node].parent)
        }
        path.reverse()
        node = Int(backward[meet].parent)
        while node >= 0 {
            path.append(Int32(node))
            node = Int(backward[node].parent)
        }
        return (best, path)
    }

    /// Dijkstra from `source` over the CSR overlay. With a `target` (>= 0) it is A* with the
    /// consistent potential `latencyWeight · c · vivaldi(v, target) + geoWeight · km(v, target)`
    /// and stops when the target is settled; without one it settles everything.
    /// Returns whether the target was reached.
    private mutating func run(
        _ snapshot: RoutingSnapshot, source: Int, target: Int, size: Int, weights: RouteCostWeights,
        useBlocked: Bool, forbidden: (Int, Int)?
    ) -> Bool {
        ensureCapacity(snapshot.nodeCount)
        nextStamp()
        dijkstraRuns += 1
        let current = stamp
        let rowStart = snapshot.rowStart
        let edges = snapshot.edges
        let load = snapshot.load
        let wLatency = weights.latency
        let wTransfer = weights.transfer * Float(max(0, size)) * 8 * 1000
        let wLoad = weights.load
        let wGeo = weights.geographic / 1000
        let wHop = weights.hop
        let blockedValue = useBlocked ? blockStamp : UInt32.max
        let forbiddenFrom = forbidden?.0 ?? -1
        let forbiddenTo = forbidden?.1 ?? -1

        // A* potential (zero without a target): the larger of two consistent lower bounds of
        // the latency still to go (scaled Vivaldi distance; speed of light over the straight
        // line through the Earth), plus the geographic term over that same line.
        let guided = target >= 0
        let coordinates = snapshot.coordinates
        let targetCoordinate = guided ? coordinates[target] : VivaldiCoordinate.origin
        let latencyScale = guided ? wLatency * snapshot.heuristicScale : 0
        let useGeo = guided && snapshot.geoBoundValid
        let lightScale = useGeo ? wLatency * RoutingSnapshot.lightMillisecondsPerKilometre * 0.999 : 0
        let geoScale: Float = useGeo ? wGeo * 0.999 : 0
        let points = snapshot.geoPoints
        let targetPoint = guided ? points[target] : .zero
        @inline(__always) func potential(_ v: Int) -> Float {
            guard guided else { return 0 }
            let vivaldi = latencyScale * coordinates[v].distance(to: targetCoordinate)
            guard useGeo else { return vivaldi }
            let d = points[v] - targetPoint
            let kilometres = (d * d).sum().squareRoot()
            return max(vivaldi, lightScale * kilometres) + geoScale * kilometres
        }

        // Work on local copies (moved out of self, so no uniqueness or exclusivity checks in the loop).
        var state = self.state
        self.state = []
        var heap = SlotHeap(storage: self.heap)
        self.heap = []
        defer {
            self.state = state
            self.heap = heap.storage
        }
        heap.storage.removeAll(keepingCapacity: true)
        let sourcePotential = potential(source)
        state[source] = NodeState(cost: 0, potential: sourcePotential, reached: current, closed: 0, parent: -1)
        heap.push(UInt64(sourcePotential.bitPattern) << 32 | UInt64(source))
        var settledCount = 0
        var targetKey = Float.infinity
        defer { settledNodes += settledCount }
        while let top = heap.pop() {
            let u = Int(truncatingIfNeeded: top & 0xFFFF_FFFF)
            if state[u].closed == current { continue }
            state[u].closed = current
            settledCount += 1
            if u == target { return true }
            let d = state[u].cost
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                let edge = edges[e]
                let v = Int(edge.target)
                if useBlocked && blocked[v] == blockedValue && v != target { continue }
                if u == forbiddenFrom && v == forbiddenTo { continue }
                let cost = d + wLatency * edge.latency + wTransfer * edge.secondsPerBit + wLoad * load[v]
                    + wGeo * edge.kilometres + wHop
                // A node whose key is not below the target's cannot be on a better path: it is
                // recorded but not queued.
                if state[v].reached != current {
                    let h = potential(v)
                    state[v] = NodeState(cost: cost, potential: h, reached: current, closed: 0, parent: Int32(u))
                    let key = cost + h
                    if v == target { targetKey = key }
                    if key < targetKey || v == target { heap.push(UInt64(key.bitPattern) << 32 | UInt64(v)) }
                } else if cost < state[v].cost && state[v].closed != current {
                    state[v].cost = cost
                    state[v].parent = Int32(u)
                    let key = cost + state[v].potential
                    if v == target { targetKey = key }
                    if key < targetKey || v == target { heap.push(UInt64(key.bitPattern) << 32 | UInt64(v)) }
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
        for i in 0 ..< count where state[i].reached == stamp {
            cost[i] = state[i].cost
            parents[i] = state[i].parent
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
        while state[current].parent >= 0 {
            current = Int(state[current].parent)
            path.append(Int32(current))
        }
        return path.reversed()
    }

    private func makeRoute(_ snapshot: RoutingSnapshot, _ path: [Int32], cost: Float, size: Int, weights: RouteCostWeights) -> Route {
        var latency: Float = 0
        for i in 1 ..< path.count {
            let u = Int(path[i - 1]), v = Int(path[i])
            latency += snapshot.edgeIndex(u, v).map { snapshot.edges[$0].latency } ?? snapshot.predictedLatency(u, v)
        }
        return Route(path: path.map { snapshot.ids[Int($0)] }, cost: cost, latencyMilliseconds: latency)
    }

    /// Cost of the direct link `u → v`: the overlay edge when there is one, else a prediction.
    func directEdge(_ snapshot: RoutingSnapshot, _ u: Int, _ v: Int, size: Int, weights: RouteCostWeights) -> (cost: Float, latency: Float) {
        let latency: Float
        let secondsPerBit: Float
        let kilometres: Float
        if let e = snapshot.edgeIndex(u, v) {
            let edge = snapshot.edges[e]
            latency = edge.latency
            secondsPerBit = edge.secondsPerBit
            kilometres = edge.kilometres
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

}

/// Edge costs for the bidirectional search: `forward(e, edge)` for CSR edge `e`, and
/// `backward(e, edge, entering:)` for reverse-CSR edge `e` entering the slot whose `entering` cost
/// was asked first (the load term, paid by every edge entering that slot).
protocol PairEdgeCosts {
    /// Cost of CSR edge `e`.
    func forward(_ e: Int, _ edge: RoutingEdge) -> Float
    /// What entering slot `v` costs on top of the edge itself (0 when already in the edge costs).
    func entering(_ v: Int) -> Float
    /// Cost of reverse-CSR edge `e` whose head costs `entering`.
    func backward(_ e: Int, _ edge: RoutingEdge, entering: Float) -> Float
}

/// Edge costs computed from the weights (any weights, any size).
struct TermEdgeCosts: PairEdgeCosts {
    let terms: EdgeCostTerms
    let load: [Float]

    init(_ snapshot: RoutingSnapshot, _ weights: RouteCostWeights, size: Int) {
        terms = EdgeCostTerms(weights, size: size)
        load = snapshot.load
    }

    @inline(__always)
    func forward(_ e: Int, _ edge: RoutingEdge) -> Float { terms.edge(edge) + terms.load * load[Int(edge.target)] }
    @inline(__always)
    func entering(_ v: Int) -> Float { terms.load * load[v] }
    @inline(__always)
    func backward(_ e: Int, _ edge: RoutingEdge, entering: Float) -> Float { terms.edge(edge) + entering }
}

/// A forward A* potential for the bidirectional search (the backward one is its negation):
/// `(π_t(v) − π_s(v)) / 2` for consistent lower bounds `π_t` (to the target) and `π_s` (from the source).
protocol PairPotential {
    /// The forward potential of slot `v`.
    func forward(_ v: Int) -> Float
}

/// The snapshot's generic bounds: the scaled Euclidean part of the Vivaldi distance (scale
/// `heuristicScale`, which one fast link can make small), light in fibre over the chord, and
/// the geographic term over the chord.
struct VivaldiPairPotential: PairPotential {
    let coordinates: [VivaldiCoordinate]
    let points: [SIMD4<Float>]
    let latencyScale: Float
    let useGeo: Bool
    let lightScale: Float
    let geoScale: Float
    let sourceVector: SIMD4<Float>, targetVector: SIMD4<Float>
    let sourcePoint: SIMD4<Float>, targetPoint: SIMD4<Float>

    init(_ snapshot: RoutingSnapshot, source: Int, target: Int, weights: RouteCostWeights) {
        coordinates = snapshot.coordinates
        points = snapshot.geoPoints
        latencyScale = weights.latency * snapshot.heuristicScale
        useGeo = snapshot.geoBoundValid
        lightScale = useGeo ? weights.latency * RoutingSnapshot.lightMillisecondsPerKilometre * 0.999 : 0
        geoScale = useGeo ? weights.geographic / 1000 * 0.999 : 0
        sourceVector = coordinates[source].vector
        targetVector = coordinates[target].vector
        sourcePoint = points[source]
        targetPoint = points[target]
    }

    @inline(__always)
    func bound(_ v: Int, _ vector: SIMD4<Float>, _ point: SIMD4<Float>) -> Float {
        let dv = coordinates[v].vector - vector
        let vivaldi = latencyScale * (dv * dv).sum().squareRoot()
        guard useGeo else { return vivaldi }
        let dp = points[v] - point
        let kilometres = (dp * dp).sum().squareRoot()
        return max(vivaldi, lightScale * kilometres) + geoScale * kilometres
    }

    @inline(__always)
    func forward(_ v: Int) -> Float {
        (bound(v, targetVector, targetPoint) - bound(v, sourceVector, sourcePoint)) * 0.5
    }
}

/// A binary min-heap of `(cost bits << 32 | slot)`: non-negative floats order like their bits.
struct SlotHeap {
    var storage: [UInt64]

    @inline(__always)
    mutating func push(_ value: UInt64) {
        storage.append(value)
        var child = storage.count - 1
        while child > 0 {
            let parentIndex = (child - 1) >> 1
            let parentValue = storage[parentIndex]
            if value >= parentValue { break }
            storage[child] = parentValue
            child = parentIndex
        }
        storage[child] = value
    }

    @inline(__always)
    mutating func pop() -> UInt64? {
        guard let top = storage.first else { return nil }
        let last = storage.removeLast()
        let count = storage.count
        if count == 0 { return top }
        var index = 0
        while true {
            let left = 2 * index + 1
            if left >= count { break }
            var child = left
            if left + 1 < count && storage[left + 1] < storage[left] { child = left + 1 }
            if storage[child] >= last { break }
            storage[index] = storage[child]
            index = child
        }
        storage[index] = last
        return top
    }
}

@available(*, unavailable)
extension RouteQueryEngine: Sendable {}
