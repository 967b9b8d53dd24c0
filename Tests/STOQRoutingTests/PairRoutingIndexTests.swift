import Testing
@testable import STOQRouting

@Suite struct PairRoutingIndexTests {
    /// The reference answer: a full Dijkstra from the source (plain, no bounds) against the direct link.
    func reference(
        _ engine: inout RouteQueryEngine, _ snapshot: RoutingSnapshot, _ a: Int, _ b: Int, size: Int, weights: RouteCostWeights
    ) throws -> Float {
        let optionalTree = engine.shortestPathTree(in: snapshot, from: RoutingNodeID(UInt64(a)), size: size, weights: weights)
        let tree = try #require(optionalTree)
        let direct = engine.directEdge(snapshot, a, b, size: size, weights: weights).cost
        return min(tree.cost(to: RoutingNodeID(UInt64(b))) ?? .infinity, direct)
    }

    /// A relay route is made of overlay edges and costs what it says (the cheapest of parallel edges).
    func expectValidPath(_ snapshot: RoutingSnapshot, _ route: Route, size: Int, weights: RouteCostWeights, seed: UInt64) {
        guard !route.isDirect else { return }
        let costs = PairRoutingIndex.edgeCosts(snapshot, reverse: false, weights: weights, size: size)
        var sum: Float = 0
        for i in 1 ..< route.path.count {
            let u = Int(snapshot.slot(of: route.path[i - 1])!), v = Int(snapshot.slot(of: route.path[i])!)
            #expect(snapshot.edgeIndex(u, v) != nil, "route uses \(u)→\(v), which is no overlay edge; seed \(seed)")
            #expect(snapshot.usable[v], "route relays through unusable \(v); seed \(seed)")
            sum += (Int(snapshot.rowStart[u]) ..< Int(snapshot.rowStart[u + 1]))
                .filter { Int(snapshot.edges[$0].target) == v }.map { costs[$0] }.min() ?? .infinity
        }
        #expect(abs(sum - route.cost) <= 2e-3 * max(1, route.cost), "route cost \(route.cost) vs its edges \(sum), seed \(seed)")
    }

    /// Random geographic graphs (clusters with local links, a few long links, some measured links far
    /// faster than predicted, some slow direct links, an isolated node): the indexed query answers
    /// exactly what a plain Dijkstra against the direct link answers, for many random pairs; other
    /// weights and smaller sizes fall back to the plain search.
    @Test func indexedRoutesMatchPlainDijkstraOnGeographicGraphs() throws {
        let seed = makeSeed()
        print("PairRoutingIndexTests seed \(seed) (replay with STOQ_SEED=\(seed))")
        var random = TestRandom(seed: seed)
        let nodes = 400
        let model = GeographicLatencyModel(nodeCount: nodes, seed: seed)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 60, seed: seed)
        var byRegion: [UInt16: [Int]] = [:]
        for v in 0 ..< nodes - 1 { byRegion[model.regions[v], default: []].append(v) }
        var edges: [Edge] = []
        var seen = Set<Int>()
        func add(_ u: Int, _ v: Int, _ rtt: Float) {
            guard u != v, seen.insert(u * nodes + v).inserted else { return }
            edges.append((u, v, rtt, 1e7 + random.unit() * 1e9))
        }
        // Node nodes - 1 is isolated (no overlay edge in or out).
        for u in 0 ..< nodes - 1 {
            let local = byRegion[model.regions[u]] ?? []
            for _ in 0 ..< 6 where !local.isEmpty {
                let v = local[random.below(local.count)]
                add(u, v, Float(model.rttMilliseconds(u, v)))
            }
            for _ in 0 ..< 2 {
                let v = random.below(nodes - 1)
                let truth = Float(model.rttMilliseconds(u, v))
                switch random.below(10) {
                case 0: add(u, v, truth * 0.1) // measured far below prediction
                case 1: add(u, v, truth * 5) // a slow direct link
                default: add(u, v, truth)
                }
            }
        }
        let load = (0 ..< nodes).map { _ in random.unit() }
        let snapshot = RoutingSnapshot.make(nodeCount: nodes, edges: edges, load: load, geo: model.positions, coordinates: coordinates)
        let weights = RouteCostWeights()
        let indexSize = 65_536
        let index = PairRoutingIndex(snapshot: snapshot, weights: weights, size: indexSize, landmarkCount: 1 + random.below(8))
        #expect(!index.landmarks.isEmpty && index.memoryBytes > 0)

        var engine = RouteQueryEngine()
        var plain = RouteQueryEngine()
        var relays = 0, directs = 0, searched = 0
        for query in 0 ..< 400 {
            // Mostly what the index serves; every fifth query other weights or a smaller size.
            var queryWeights = weights
            var size = query % 3 == 0 ? indexSize : indexSize + random.below(1 << 20)
            let fallback = query % 5 == 4
            if fallback {
                if random.below(2) == 0 {
                    queryWeights = RouteCostWeights(latency: 0.5 + random.unit(), transfer: random.unit(), load: random.unit() * 10, geographic: random.unit(), hop: random.unit() * 4)
                } else {
                    size = random.below(indexSize)
                }
            }
            let a = random.below(nodes), b = random.below(nodes)
            guard a != b else { continue }
            let expected = try reference(&plain, snapshot, a, b, size: size, weights: queryWeights)
            let indexedBefore = engine.indexedQueries, searchesBefore = engine.indexedSearches
            let optionalRoute = engine.route(
                in: snapshot, from: RoutingNodeID(UInt64(a)), to: RoutingNodeID(UInt64(b)), size: size, weights: queryWeights, index: index
            )
            let route = try #require(optionalRoute, "no route \(a)→\(b), seed \(seed)")
            // Queries from the owner (slot 0) use its shortest-path tree instead.
            #expect(engine.indexedQueries == indexedBefore + (fallback || a == 0 ? 0 : 1), "query \(query) fallback \(fallback), seed \(seed)")
            searched += engine.indexedSearches - searchesBefore
            #expect(abs(route.cost - expected) <= 1e-3 * max(1, expected), "query \(query) \(a)→\(b): \(route.cost) vs Dijkstra \(expected), seed \(seed)")
            #expect(route.path.first == RoutingNodeID(UInt64(a)) && route.path.last == RoutingNodeID(UInt64(b)))
            expectValidPath(snapshot, route, size: size, weights: queryWeights, seed: seed)
            if route.isDirect { directs += 1 } else { relays += 1 }
            if b == nodes - 1 || a == nodes - 1 { #expect(route.isDirect, "the isolated node is reached directly, seed \(seed)") }
        }
        // Both kinds of answer occurred (a relay beating the direct link, and the direct link being cheaper).
        #expect(relays > 10 && directs > 10, "relays \(relays) directs \(directs), seed \(seed)")
        // An index of another snapshot is not used.
        let other = RoutingSnapshot.make(nodeCount: nodes, edges: edges, load: load, geo: model.positions, coordinates: coordinates)
        let before = engine.indexedQueries
        _ = engine.route(in: other, from: RoutingNodeID(1), to: RoutingNodeID(2), size: indexSize, index: index)
        #expect(engine.indexedQueries == before)
        print("PairRoutingIndexTests: \(relays) relay and \(directs) direct answers, \(searched) indexed queries searched")
    }

    /// The landmark distances are the exact Dijkstra costs, from the bucket queue (default weights:
    /// every edge costs at least the hop weight) and from the heap (a hop weight so small that the
    /// buckets would be too many), both ways.
    @Test func landmarkDistancesAreExactWithBucketsAndHeap() throws {
        let seed = makeSeed()
        print("PairRoutingIndexTests seed \(seed) (replay with STOQ_SEED=\(seed))")
        var random = TestRandom(seed: seed)
        let nodes = 120
        let edges = randomGraph(nodes: nodes, outDegree: 4, random: &random)
        var load = (0 ..< nodes).map { _ in random.unit() }
        load[0] = 1e-6
        let snapshot = RoutingSnapshot.make(nodeCount: nodes, edges: edges, load: load)
        var engine = RouteQueryEngine()
        // Only loads: edges into node 0 cost 1e-6, so buckets that narrow would be millions.
        let loadOnly = RouteCostWeights(latency: 0, transfer: 0, load: 1, geographic: 0, hop: 0)
        for weights in [RouteCostWeights(), RouteCostWeights.latencyOnly, loadOnly] {
            let size = random.below(1 << 20)
            let index = PairRoutingIndex(snapshot: snapshot, weights: weights, size: size, landmarkCount: 3)
            for (lane, landmark) in index.landmarks.enumerated() {
                let optionalTree = engine.shortestPathTree(in: snapshot, from: RoutingNodeID(UInt64(landmark)), size: size, weights: weights)
                let tree = try #require(optionalTree)
                for v in 0 ..< nodes {
                    let expected = tree.cost(to: RoutingNodeID(UInt64(v))) ?? PairRoutingIndex.unreachable
                    let got = index.distances[v].from[lane]
                    #expect(abs(got - expected) <= 1e-3 * max(1, expected), "d(L\(lane), \(v)) \(got) vs \(expected), seed \(seed)")
                    // d(v, L): the tree from v.
                    let optionalBack = engine.shortestPathTree(in: snapshot, from: RoutingNodeID(UInt64(v)), size: size, weights: weights)
                    let back = try #require(optionalBack)
                    let expectedBack = v == Int(landmark) ? 0 : back.cost(to: RoutingNodeID(UInt64(landmark))) ?? PairRoutingIndex.unreachable
                    let gotBack = index.distances[v].to[lane]
                    #expect(abs(gotBack - expectedBack) <= 1e-3 * max(1, expectedBack), "d(\(v), L\(lane)) \(gotBack) vs \(expectedBack), seed \(seed)")
                }
            }
        }
    }

    /// A matrix-built snapshot with nodes reported down: they carry no routes, queries to or from
    /// them have no answer, and every other pair gets the plain search's answer.
    @Test func unusableNodesCarryNoRoutesWithTheIndex() throws {
        let seed = makeSeed()
        print("PairRoutingIndexTests seed \(seed) (replay with STOQ_SEED=\(seed))")
        var random = TestRandom(seed: seed)
        let nodes = 300
        let model = GeographicLatencyModel(nodeCount: nodes, seed: seed)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 60, seed: seed)
        var configuration = RoutingConfiguration()
        configuration.nearestNeighbours = 8
        configuration.longRangeLinks = 2
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0), region: model.regions[0], geo: model.positions[0], configuration: configuration)
        let now = Duration.seconds(1)
        let adverts = (1 ..< nodes).map { i in
            RoutingNodeAdvert(
                node: RoutingNodeID(UInt64(i)), version: 1, hops: 1, region: model.regions[i], geo: model.positions[i],
                coordinate: coordinates[i], load: random.unit(), bandwidthBitsPerSecond: Float(10 + random.below(990)) * 1e6
            )
        }
        var links: [RoutingLinkAdvert] = []
        for i in 1 ..< nodes {
            let j = 1 + random.below(nodes - 1)
            guard j != i else { continue }
            links.append(RoutingLinkAdvert(
                from: RoutingNodeID(UInt64(i)), to: RoutingNodeID(UInt64(j)), version: 1,
                rttMilliseconds: Float(model.rttMilliseconds(i, j)) * (random.below(4) == 0 ? 0.2 : 1), bandwidthBitsPerSecond: 0
            ))
        }
        _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(1), nodes: adverts, links: links), now: now)
        var down = Set<Int>()
        while down.count < 30 { down.insert(1 + random.below(nodes - 1)) }
        for node in down { matrix.handlePeerState(RoutingNodeID(UInt64(node)), isUp: false, now: now) }
        matrix.rebuildOverlay(now: now)
        let snapshot = matrix.publish(now: now)
        let index = PairRoutingIndex(snapshot: snapshot, size: 0)
        var engine = RouteQueryEngine()
        var plain = RouteQueryEngine()
        for _ in 0 ..< 300 {
            let a = random.below(nodes), b = random.below(nodes)
            guard a != b else { continue }
            let size = random.below(1 << 20)
            let from = RoutingNodeID(UInt64(a)), to = RoutingNodeID(UInt64(b))
            let route = engine.route(in: snapshot, from: from, to: to, size: size, index: index)
            let expected = plain.route(in: snapshot, from: from, to: to, size: size)
            if down.contains(a) || down.contains(b) {
                #expect(route == nil && expected == nil, "a down node has no route, seed \(seed)")
                continue
            }
            let got = try #require(route, "seed \(seed)")
            let want = try #require(expected, "seed \(seed)")
            #expect(abs(got.cost - want.cost) <= 1e-3 * max(1, want.cost), "\(a)→\(b): \(got.cost) vs plain \(want.cost), seed \(seed)")
            #expect(got.relays.allSatisfy { !down.contains(Int($0.rawValue)) }, "relay through a down node, seed \(seed)")
            if a != 0 {
                let a = Int(snapshot.slot(of: from)!), b = Int(snapshot.slot(of: to)!)
                let reference = try reference(&plain, snapshot, a, b, size: size, weights: RouteCostWeights())
                #expect(abs(got.cost - reference) <= 1e-3 * max(1, reference), "seed \(seed)")
                expectValidPath(snapshot, got, size: size, weights: RouteCostWeights(), seed: seed)
            }
        }
        #expect(engine.indexedQueries > 100, "seed \(seed)")

        // Through a cell: the index serves while its snapshot is at most `maxIndexAge` publishes old.
        let cell = RoutingSnapshotCell(snapshot)
        cell.storeIndex(index)
        let pair = (from: RoutingNodeID(1), to: RoutingNodeID(2))
        for age in 0 ..< 4 {
            if age > 0 { cell.store(matrix.publish(now: now + .milliseconds(100 * age))) }
            let before = engine.indexedQueries
            let route = engine.route(in: cell, from: pair.from, to: pair.to, size: 1 << 16, maxIndexAge: 2)
            let answeredOn = age <= 2 ? snapshot : cell.load()
            let expected = plain.route(in: answeredOn, from: pair.from, to: pair.to, size: 1 << 16)
            #expect(engine.indexedQueries == before + (age <= 2 && !down.contains(1) && !down.contains(2) ? 1 : 0), "age \(age), seed \(seed)")
            #expect((route == nil) == (expected == nil), "age \(age), seed \(seed)")
            if let route, let expected {
                #expect(abs(route.cost - expected.cost) <= 1e-3 * max(1, expected.cost), "age \(age), seed \(seed)")
            }
        }
    }
}
