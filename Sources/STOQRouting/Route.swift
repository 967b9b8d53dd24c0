/// A route through the overlay: the nodes from source to destination and what it costs.
public struct Route: Sendable, Equatable, CustomStringConvertible {
    /// Source, relays, destination.
    public var path: [RoutingNodeID]
    /// Total cost under the weights it was asked with (milliseconds-equivalent).
    public var cost: Float
    /// Sum of the round-trip latencies of its hops, milliseconds.
    public var latencyMilliseconds: Float

    /// Creates a route.
    public init(path: [RoutingNodeID], cost: Float, latencyMilliseconds: Float) {
        self.path = path
        self.cost = cost
        self.latencyMilliseconds = latencyMilliseconds
    }

    /// Whether the route goes straight from source to destination.
    public var isDirect: Bool { path.count == 2 }

    /// The relays between source and destination.
    public var relays: ArraySlice<RoutingNodeID> { path.dropFirst().dropLast() }

    public var description: String {
        path.map(\.description).joined(separator: "→") + " cost \(cost) rtt \(latencyMilliseconds)ms"
    }
}

/// A candidate source with its cost, as ranked by `rankSources`.
public struct RankedSource: Sendable, Equatable {
    /// The candidate.
    public var node: RoutingNodeID
    /// Cost of the cheapest way between it and the owner (`.infinity` when unknown or down).
    public var cost: Float
    /// That route, when the node is reachable.
    public var route: Route?
}

/// All shortest paths from one source in one snapshot (a shortest-path tree).
public final class ShortestPathTree: Sendable {
    /// The snapshot it was computed on.
    public let snapshot: RoutingSnapshot
    /// The source slot.
    let source: Int32
    /// Cost per slot (`.infinity` when unreachable).
    let cost: [Float]
    /// Predecessor per slot (-1 at the source and for unreachable slots).
    let parent: [Int32]

    init(snapshot: RoutingSnapshot, source: Int32, cost: [Float], parent: [Int32]) {
        self.snapshot = snapshot
        self.source = source
        self.cost = cost
        self.parent = parent
    }

    /// The source node.
    public var sourceID: RoutingNodeID { snapshot.ids[Int(source)] }

    /// Cost of the shortest path to `node`, or nil when unreachable.
    public func cost(to node: RoutingNodeID) -> Float? {
        guard let slot = snapshot.slot(of: node), cost[Int(slot)].isFinite else { return nil }
        return cost[Int(slot)]
    }

    /// Slots from the source to `slot`, or nil when unreachable.
    func slotPath(to slot: Int) -> [Int32]? {
        guard cost[slot].isFinite else { return nil }
        var path: [Int32] = [Int32(slot)]
        var current = slot
        while parent[current] >= 0 {
            current = Int(parent[current])
            path.append(Int32(current))
            if path.count > cost.count { return nil }
        }
        return path.reversed()
    }
}
