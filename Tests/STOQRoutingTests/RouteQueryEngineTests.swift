import Testing
import Foundation
@testable import STOQRouting

/// A fresh seed per run, or `STOQ_SEED` to replay one a failure printed.
func makeSeed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["STOQ_SEED"], let seed = UInt64(text) { return seed }
    var generator = SystemRandomNumberGenerator()
    return generator.next()
}

struct TestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

typealias Edge = (from: Int, to: Int, rttMilliseconds: Float, bandwidthBitsPerSecond: Float)

func randomGraph(nodes: Int, outDegree: Int, random: inout TestRandom) -> [Edge] {
    var edges: [Edge] = []
    var seen = Set<Int>()
    for u in 0 ..< nodes {
        for _ in 0 ..< outDegree {
            let v = random.below(nodes)
            guard v != u, seen.insert(u * nodes + v).inserted else { continue }
            edges.append((u, v, 1 + random.unit() * 100, 1e6 + random.unit() * 1e9))
        }
    }
    return edges
}

func edgeCost(_ edge: Edge, size: Int, load: [Float], weights: RouteCostWeights) -> Float {
    weights.latency * edge.rttMilliseconds + weights.transfer * Float(size) * 8 * 1000 / edge.bandwidthBitsPerSecond
        + weights.load * load[edge.to] + weights.hop
}

/// Bellman-Ford: the brute-force reference.
func bruteForce(nodes: Int, edges: [Edge], source: Int, size: Int, load: [Float], weights: RouteCostWeights) -> [Float] {
    var dist = [Float](repeating: .infinity, count: nodes)
    dist[source] = 0
    for _ in 0 ..< nodes {
        var changed = false
        for edge in edges where dist[edge.from].isFinite {
            let c = dist[edge.from] + edgeCost(edge, size: size, load: load, weights: weights)
            if c < dist[edge.to] {
                dist[edge.to] = c
                changed = true
            }
        }
        if !changed { break }
    }
    return dist
}

@Suite struct RouteQueryEngineTests {
    @Test func dijkstraMatchesBruteForceOnRandomGraphs() throws {
        let seed = makeSeed()
        var random = TestRandom(seed: seed)
        var engine = RouteQueryEngine()
        for trial in 0 ..< 40 {
            let nodes = 2 + random.below(40)
            let edges = randomGraph(nodes: nodes, outDegree: 1 + random.below(5), random: &random)
            let load = (0 ..< nodes).map { _ in random.unit() }
            let snapshot = RoutingSnapshot.make(nodeCount: nodes, edges: edges, load: load)
            let weights = RouteCostWeights(latency: 1, transfer: random.unit() * 2, load: random.unit() * 20, geographic: 0, hop: random.unit() * 5)
            let size = random.below(1 << 20)
            let source = random.below(nodes)
            let reference = bruteForce(nodes: nodes, edges: edges, source: source, size: size, load: load, weights: weights)
            let optional1 = engine.shortestPathTree(in: snapshot, from: RoutingNodeID(UInt64(source)), size: size, weights: weights)
            let tree = try #require(optional1)
            for v in 0 ..< nodes {
                let got = tree.cost(to: RoutingNodeID(UInt64(v)))
                if reference[v].isFinite {
                    let value = try #require(got, "trial \(trial) node \(v) unreachable, seed \(seed)")
                    #expect(abs(value - reference[v]) <= 1e-3 * max(1, reference[v]), "trial \(trial) node \(v): \(value) vs \(reference[v]), seed \(seed)")
                    // The path is made of real edges and costs what the tree says.
                    let path = try #require(tree.slotPath(to: v))
                    var sum: Float = 0
                    for i in 1 ..< path.count {
                        let edge = try #require(edges.first { $0.from == Int(path[i - 1]) && $0.to == Int(path[i]) }, "seed \(seed)")
                        sum += edgeCost(edge, size: size, load: load, weights: weights)
                    }
                    #expect(abs(sum - reference[v]) <= 1e-3 * max(1, reference[v]), "seed \(seed)")
                } else {
                    #expect(got == nil, "trial \(trial) node \(v) should be unreachable, seed \(seed)")
                }
            }
            // Single-pair queries (early exit) agree with the tree when the overlay path wins.
            let target = random.below(nodes)
            if target != source, reference[target].isFinite, source != 0,
               let route = engine.route(in: snapshot, from: RoutingNodeID(UInt64(source)), to: RoutingNodeID(UInt64(target)), size: size, weights: weights) {
                #expect(route.cost <= reference[target] * 1.001 + 1e-3, "seed \(seed)")
                #expect(route.path.first == RoutingNodeID(UInt64(source)) && route.path.last == RoutingNodeID(UInt64(target)))
            }
        }
    }

    @Test func disjointRoutesShareNoRelay() throws {
        let seed = makeSeed()
        var random = TestRandom(seed: seed)
        var engine = RouteQueryEngine()
        for _ in 0 ..< 20 {
            let nodes = 60
            let edges = randomGraph(nodes: nodes, outDegree: 6, random: &random)
            let snapshot = RoutingSnapshot.make(nodeCount: nodes, edges: edges)
            let a = random.below(nodes)
            var b = random.below(nodes)
            if b == a { b = (a + 1) % nodes }
            let routes = engine.disjointRoutes(in: snapshot, from: RoutingNodeID(UInt64(a)), to: RoutingNodeID(UInt64(b)), count: 4, size: 0)
            #expect(!routes.isEmpty, "seed \(seed)")
            var relays = Set<RoutingNodeID>()
            for route in routes {
                #expect(route.path.first == RoutingNodeID(UInt64(a)) && route.path.last == RoutingNodeID(UInt64(b)))
                for relay in route.relays {
                    #expect(relays.insert(relay).inserted, "relay \(relay) used twice, seed \(seed)")
                }
                for i in 1 ..< route.path.count where route.path.count > 2 {
                    let u = Int(route.path[i - 1].rawValue), v = Int(route.path[i].rawValue)
                    #expect(edges.contains { $0.from == u && $0.to == v }, "route uses a missing edge, seed \(seed)")
                }
                #expect(Set(route.path).count == route.path.count, "loop in route, seed \(seed)")
            }
            #expect(zip(routes, routes.dropFirst()).allSatisfy { $0.cost <= $1.cost + 1e-3 }, "seed \(seed)")
        }
    }

    @Test func rankSourcesPrefersCheapAndIdle() throws {
        // 0 is the owner. 1: 10 ms, idle. 2: 50 ms. 3: 5 ms but saturated. 4: unknown to the overlay.
        let edges: [Edge] = [(0, 1, 10, 1e9), (0, 2, 50, 1e9), (0, 3, 5, 1e9), (1, 0, 10, 1e9)]
        let snapshot = RoutingSnapshot.make(nodeCount: 4, edges: edges, load: [0, 0, 0, 1])
        var engine = RouteQueryEngine()
        let ranked = engine.rankSources(
            in: snapshot, candidates: [RoutingNodeID(2), RoutingNodeID(3), RoutingNodeID(1), RoutingNodeID(99)],
            size: 1 << 20, weights: RouteCostWeights(load: 40)
        )
        #expect(ranked.map(\.node) == [RoutingNodeID(1), RoutingNodeID(3), RoutingNodeID(2), RoutingNodeID(99)])
        #expect(ranked.last?.cost == .infinity)
        #expect(engine.treeCacheHits == 0)
        _ = engine.route(in: snapshot, from: RoutingNodeID(0), to: RoutingNodeID(2), size: 1 << 20, weights: RouteCostWeights(load: 40))
        #expect(engine.treeCacheHits == 1)
    }

    @Test func relayChosenOnlyWhenCheaper() throws {
        // Direct 0 → 2 is slow (300 ms); 0 → 1 → 2 takes 40 ms.
        var edges: [Edge] = [(0, 1, 20, 1e9), (1, 2, 20, 1e9), (0, 2, 300, 1e9)]
        var engine = RouteQueryEngine()
        let optional2 = engine.route(in: RoutingSnapshot.make(nodeCount: 3, edges: edges), from: RoutingNodeID(0), to: RoutingNodeID(2))
        var route = try #require(optional2)
        #expect(route.path == [RoutingNodeID(0), RoutingNodeID(1), RoutingNodeID(2)])
        #expect(route.latencyMilliseconds == 40)
        let optional3 = engine.bestSingleRelayRoute(in: RoutingSnapshot.make(nodeCount: 3, edges: edges), from: RoutingNodeID(0), to: RoutingNodeID(2))
        let relay = try #require(optional3)
        #expect(relay.relays == [RoutingNodeID(1)])
        // Direct at 30 ms beats 40 ms plus a hop.
        edges[2].rttMilliseconds = 30
        let optional4 = engine.route(in: RoutingSnapshot.make(nodeCount: 3, edges: edges), from: RoutingNodeID(0), to: RoutingNodeID(2))
        route = try #require(optional4)
        #expect(route.isDirect)
    }
}

@Suite struct AStarTests {
    /// A* (pair queries) must find exactly the cost of the full Dijkstra tree, including with
    /// measured edges far below their Vivaldi prediction and with geographic bounds active.
    @Test func aStarMatchesFullDijkstraOnGeographicGraphs() throws {
        let seed = makeSeed()
        var random = TestRandom(seed: seed)
        let nodes = 300
        let model = GeographicLatencyModel(nodeCount: nodes, seed: seed)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 100, seed: seed)
        var edges: [Edge] = []
        for u in 0 ..< nodes {
            for _ in 0 ..< 8 {
                let v = random.below(nodes)
                guard v != u else { continue }
                // Mostly the model's RTT; sometimes a "measured" shortcut far below prediction.
                let truth = Float(model.rttMilliseconds(u, v))
                let rtt = random.below(20) == 0 ? truth * 0.05 : truth
                edges.append((u, v, rtt, 1e7 + random.unit() * 1e9))
            }
        }
        let load = (0 ..< nodes).map { _ in random.unit() }
        let snapshot = RoutingSnapshot.make(nodeCount: nodes, edges: edges, load: load, geo: model.positions, coordinates: coordinates)
        #expect(snapshot.geoBoundValid)
        var engine = RouteQueryEngine()
        for _ in 0 ..< 60 {
            let weights = RouteCostWeights(latency: 0.5 + random.unit(), transfer: random.unit(), load: random.unit() * 10, geographic: random.unit() * 2, hop: random.unit() * 4)
            let size = random.below(1 << 20)
            let a = RoutingNodeID(UInt64(random.below(nodes))), b = RoutingNodeID(UInt64(random.below(nodes)))
            guard a != b else { continue }
            let optionalTree = engine.shortestPathTree(in: snapshot, from: a, size: size, weights: weights)
            let tree = try #require(optionalTree)
            let expected = tree.cost(to: b)
            let got = engine.overlayCost(in: snapshot, from: a, to: b, size: size, weights: weights)
            let oneWay = engine.unidirectionalOverlayCost(in: snapshot, from: a, to: b, size: size, weights: weights)
            #expect((expected == nil) == (got == nil), "seed \(seed)")
            #expect((expected == nil) == (oneWay == nil), "seed \(seed)")
            if let expected, let got, let oneWay {
                #expect(abs(expected - got) <= 1e-3 * max(1, expected), "bidirectional A* \(got) vs Dijkstra \(expected), seed \(seed)")
                #expect(abs(expected - oneWay) <= 1e-3 * max(1, expected), "A* \(oneWay) vs Dijkstra \(expected), seed \(seed)")
            }
            // The route's path is real edges and costs what it says (unless the direct link won).
            let optionalRoute = engine.route(in: snapshot, from: a, to: b, size: size, weights: weights)
            if let route = optionalRoute, !route.isDirect || snapshot.edgeIndex(Int(a.rawValue), Int(b.rawValue)) != nil {
                var sum: Float = 0
                for i in 1 ..< route.path.count {
                    let u = Int(route.path[i - 1].rawValue), v = Int(route.path[i].rawValue)
                    // The random graph can hold parallel edges u→v; a route takes the cheapest.
                    let parallel = edges.filter { $0.from == u && $0.to == v }
                    #expect(!parallel.isEmpty, "route uses \(u)→\(v), which is no edge; seed \(seed)")
                    let km = Float(model.positions[u].distanceKilometres(to: model.positions[v]))
                    sum += parallel.map { edge in
                        let latency = max(edge.rttMilliseconds, km * RoutingSnapshot.lightMillisecondsPerKilometre)
                        return weights.latency * latency + weights.transfer * Float(size) * 8 * 1000 / edge.bandwidthBitsPerSecond
                            + weights.load * load[v] + weights.geographic / 1000 * km + weights.hop
                    }.min() ?? 0
                }
                #expect(abs(sum - route.cost) <= 2e-3 * max(1, route.cost), "route cost \(route.cost) vs its edges \(sum), seed \(seed)")
            }
        }
    }
}
