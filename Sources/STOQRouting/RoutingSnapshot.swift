import Foundation

/// An immutable view of a routing matrix at one version: node attributes and the sparse
/// overlay graph in compressed sparse row (CSR) form.
///
/// The matrix publishes a new snapshot every update interval (100 ms by default); queries
/// read whichever snapshot they hold while the next one is built, so updates never block
/// queries. Slot indices are dense `0 ..< nodeCount`; slot `selfSlot` is the owner.
public final class RoutingSnapshot: Sendable {
    /// Monotonic version (one per publish).
    public let version: UInt64
    /// The owner of the matrix.
    public let selfID: RoutingNodeID
    /// The owner's slot.
    public let selfSlot: Int32
    /// Node id per slot.
    public let ids: [RoutingNodeID]
    let slotOf: [RoutingNodeID: Int32]
    /// Load per slot (0 idle ... 1 saturated).
    public let load: [Float]
    /// Access bandwidth estimate per slot, bits per second.
    public let bandwidth: [Float]
    /// Geographic position per slot.
    public let geo: [GeoCoordinate]
    /// Region per slot.
    public let region: [UInt16]
    /// Gossip hops from the owner per slot.
    public let hops: [UInt8]
    /// Vivaldi coordinate per slot.
    public let coordinates: [VivaldiCoordinate]
    /// Whether the slot may carry routes (known, fresh, not reported down).
    public let usable: [Bool]

    /// CSR: edges of slot `u` are `rowStart[u] ..< rowStart[u + 1]`.
    let rowStart: [Int32]
    /// The edges, laid out together so a row is read sequentially.
    let edges: [RoutingEdge]
    /// Reverse CSR: the edges entering slot `v` are `reverseRowStart[v] ..< reverseRowStart[v + 1]`
    /// of `reverseEdges`, whose `target` is the edge's source.
    let reverseRowStart: [Int32]
    /// See `reverseRowStart`.
    let reverseEdges: [RoutingEdge]
    /// Whether each edge was measured (else predicted).
    let edgeMeasured: [Bool]
    /// Seconds per bit assumed when nothing is known about a bandwidth.
    let defaultSecondsPerBit: Float
    /// Largest `c ≤ 1` with `latency(e) ≥ c · vivaldi(u, v)` on every edge: `c · vivaldi(v, t)`
    /// is then a consistent A* potential (Vivaldi distances obey the triangle inequality).
    public let heuristicScale: Float
    /// Whether every usable node declared a position: then no edge is faster than light
    /// (`rttMs ≥ km / 102`, light in fibre, enforced when the snapshot is built) and the straight-line
    /// distance through the Earth gives a second consistent A* potential.
    let geoBoundValid: Bool
    /// Position per slot as a point in 3-D space, kilometres from the Earth's centre.
    let geoPoints: [SIMD4<Float>]
    /// Lower bound of RTT per kilometre of distance: light in fibre (~204,000 km/s), there and back.
    static let lightMillisecondsPerKilometre: Float = 2 / 204.0

    init(
        version: UInt64, selfID: RoutingNodeID, selfSlot: Int32, ids: [RoutingNodeID], slotOf: [RoutingNodeID: Int32],
        load: [Float], bandwidth: [Float], geo: [GeoCoordinate], region: [UInt16], hops: [UInt8],
        coordinates: [VivaldiCoordinate], usable: [Bool], rowStart: [Int32], edgeTarget: [Int32], edgeLatency: [Float],
        edgeSecondsPerBit: [Float], edgeKilometres: [Float], edgeMeasured: [Bool], defaultSecondsPerBit: Float
    ) {
        self.version = version
        self.selfID = selfID
        self.selfSlot = selfSlot
        self.ids = ids
        self.slotOf = slotOf
        self.load = load
        self.bandwidth = bandwidth
        self.geo = geo
        self.region = region
        self.hops = hops
        self.coordinates = coordinates
        self.usable = usable
        self.rowStart = rowStart
        var edges: [RoutingEdge] = []
        edges.reserveCapacity(edgeTarget.count)
        var scale: Float = 1
        let nodes = ids.count
        var allPositions = true
        var points: [SIMD4<Float>] = []
        points.reserveCapacity(nodes)
        let radius = Float(GeoCoordinate.earthRadiusKilometres)
        for u in 0 ..< nodes {
            let position = geo[u]
            if usable[u] && position == .unknown { allPositions = false }
            let lat = Double(position.latitude) * .pi / 180, lon = Double(position.longitude) * .pi / 180
            points.append(SIMD4(Float(cos(lat) * cos(lon)), Float(cos(lat) * sin(lon)), Float(sin(lat)), 0) * radius)
        }
        let light = Self.lightMillisecondsPerKilometre
        for u in 0 ..< nodes {
            let cu = coordinates[u]
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                let v = Int(edgeTarget[e])
                // Nothing travels faster than light in fibre: a faster edge means a wrong position or
                // prediction, and is raised to the physical bound.
                let latency = allPositions ? max(edgeLatency[e], edgeKilometres[e] * light) : edgeLatency[e]
                edges.append(RoutingEdge(
                    target: edgeTarget[e], latency: latency, secondsPerBit: edgeSecondsPerBit[e],
                    kilometres: edgeKilometres[e]
                ))
                let predicted = cu.distance(to: coordinates[v])
                if predicted > 0 && latency < scale * predicted { scale = max(0, latency / predicted) }
            }
        }
        // Reverse CSR (counting sort by target) for bidirectional search.
        var reverseStart = [Int32](repeating: 0, count: nodes + 1)
        for edge in edges { reverseStart[Int(edge.target) + 1] += 1 }
        for v in 0 ..< nodes { reverseStart[v + 1] += reverseStart[v] }
        var cursor = reverseStart
        var reversed = [RoutingEdge](repeating: RoutingEdge(target: 0, latency: 0, secondsPerBit: 0, kilometres: 0), count: edges.count)
        for u in 0 ..< nodes {
            for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) {
                var edge = edges[e]
                let v = Int(edge.target)
                edge.target = Int32(u)
                reversed[Int(cursor[v])] = edge
                cursor[v] += 1
            }
        }
        self.reverseRowStart = reverseStart
        self.reverseEdges = reversed
        self.geoBoundValid = allPositions
        self.geoPoints = points
        self.edges = edges
        self.heuristicScale = scale * 0.999
        self.edgeMeasured = edgeMeasured
        self.defaultSecondsPerBit = defaultSecondsPerBit
    }

    /// Number of node slots.
    public var nodeCount: Int { ids.count }
    /// Number of directed overlay edges.
    public var edgeCount: Int { edges.count }

    /// The slot of a node, if the snapshot knows it.
    public func slot(of node: RoutingNodeID) -> Int32? { slotOf[node] }

    /// The overlay neighbours of a node (measured links first).
    public func neighbours(of node: RoutingNodeID) -> [RoutingNodeID] {
        guard let slot = slotOf[node] else { return [] }
        return (Int(rowStart[Int(slot)]) ..< Int(rowStart[Int(slot) + 1])).map { ids[Int(edges[$0].target)] }
    }

    /// Predicted RTT in milliseconds between two nodes from their Vivaldi coordinates
    /// (falls back to a geographic estimate when a coordinate is still untrained).
    public func predictedLatency(from a: RoutingNodeID, to b: RoutingNodeID) -> Float? {
        guard let u = slotOf[a], let v = slotOf[b] else { return nil }
        return predictedLatency(Int(u), Int(v))
    }

    func predictedLatency(_ u: Int, _ v: Int) -> Float {
        RoutingMatrix.predictLatency(coordinates[u], coordinates[v], geo[u], geo[v])
    }

    /// Index of the edge `u → v` in the CSR arrays, if the overlay has it.
    func edgeIndex(_ u: Int, _ v: Int) -> Int? {
        let target = Int32(v)
        for e in Int(rowStart[u]) ..< Int(rowStart[u + 1]) where edges[e].target == target { return e }
        return nil
    }

    /// Builds a snapshot straight from an edge list (tests and benchmarks).
    ///
    /// - Parameters:
    ///   - nodeCount: number of nodes; node `i` gets `RoutingNodeID(UInt64(i))`, node 0 is the owner.
    ///   - edges: directed edges `(from, to, rttMilliseconds, bandwidthBitsPerSecond)`.
    ///   - load: optional load per node.
    ///   - geo: optional position per node.
    public static func make(
        nodeCount: Int, edges: [(from: Int, to: Int, rttMilliseconds: Float, bandwidthBitsPerSecond: Float)],
        load: [Float]? = nil, geo: [GeoCoordinate]? = nil, coordinates: [VivaldiCoordinate]? = nil
    ) -> RoutingSnapshot {
        let ids = (0 ..< nodeCount).map { RoutingNodeID(UInt64($0)) }
        var slotOf: [RoutingNodeID: Int32] = [:]
        for (i, id) in ids.enumerated() { slotOf[id] = Int32(i) }
        let geo = geo ?? Array(repeating: .unknown, count: nodeCount)
        var degree = Array(repeating: 0, count: nodeCount + 1)
        for edge in edges { degree[edge.from + 1] += 1 }
        for i in 0 ..< nodeCount { degree[i + 1] += degree[i] }
        var cursor = degree
        let edgeCount = edges.count
        var target = Array(repeating: Int32(0), count: edgeCount)
        var latency = Array(repeating: Float(0), count: edgeCount)
        var secondsPerBit = Array(repeating: Float(0), count: edgeCount)
        var kilometres = Array(repeating: Float(0), count: edgeCount)
        for edge in edges {
            let e = cursor[edge.from]
            cursor[edge.from] += 1
            target[e] = Int32(edge.to)
            latency[e] = edge.rttMilliseconds
            secondsPerBit[e] = edge.bandwidthBitsPerSecond > 0 ? 1 / edge.bandwidthBitsPerSecond : 1e-8
            kilometres[e] = Float(geo[edge.from].distanceKilometres(to: geo[edge.to]))
        }
        return RoutingSnapshot(
            version: 1, selfID: ids.first ?? RoutingNodeID(0), selfSlot: 0, ids: ids, slotOf: slotOf,
            load: load ?? Array(repeating: 0, count: nodeCount), bandwidth: Array(repeating: 0, count: nodeCount),
            geo: geo, region: Array(repeating: 0, count: nodeCount), hops: Array(repeating: 1, count: nodeCount),
            coordinates: coordinates ?? Array(repeating: .origin, count: nodeCount),
            usable: Array(repeating: true, count: nodeCount), rowStart: degree.map { Int32($0) }, edgeTarget: target,
            edgeLatency: latency, edgeSecondsPerBit: secondsPerBit, edgeKilometres: kilometres,
            edgeMeasured: Array(repeating: true, count: edgeCount), defaultSecondsPerBit: 1e-8
        )
    }
}

/// One directed overlay edge (16 bytes).
struct RoutingEdge {
    /// Target slot.
    var target: Int32
    /// Round-trip latency, milliseconds (measured when the link was measured, else predicted).
    var latency: Float
    /// Seconds per bit (1 / bottleneck bandwidth).
    var secondsPerBit: Float
    /// Great-circle length, kilometres.
    var kilometres: Float
}
