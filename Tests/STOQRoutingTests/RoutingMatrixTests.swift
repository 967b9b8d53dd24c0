import Testing
@testable import STOQRouting

@Suite struct RoutingMatrixTests {
    func advert(_ node: UInt64, version: UInt64, hops: UInt8 = 0, load: Float = 0) -> RoutingNodeAdvert {
        RoutingNodeAdvert(node: RoutingNodeID(node), version: version, hops: hops, load: load)
    }

    @Test func gossipNewerWinsAndHopsShrink() {
        var matrix = RoutingMatrix(selfID: RoutingNodeID(1))
        var outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(2), nodes: [advert(2, version: 5), advert(3, version: 7, hops: 3, load: 0.5)], links: []), now: .seconds(1))
        #expect(outcome.acceptedNodes == 2)
        #expect(matrix.record(of: RoutingNodeID(2))?.hops == 1)
        #expect(matrix.record(of: RoutingNodeID(3))?.hops == 4)
        // Older version: ignored. Same version, fewer hops: hop count shrinks. Newer: replaces.
        outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [advert(3, version: 6, hops: 0, load: 0.9)], links: []), now: .seconds(2))
        #expect(outcome.stale == 1)
        #expect(matrix.record(of: RoutingNodeID(3))?.load == 0.5)
        _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [advert(3, version: 7, hops: 1)], links: []), now: .seconds(2))
        #expect(matrix.record(of: RoutingNodeID(3))?.hops == 2)
        _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [advert(3, version: 9, hops: 5, load: 0.2)], links: []), now: .seconds(3))
        #expect(matrix.record(of: RoutingNodeID(3))?.load == 0.2)
        #expect(matrix.record(of: RoutingNodeID(3))?.hops == 6)
    }

    @Test func floodingIsBoundedAndGarbageRefused() {
        var configuration = RoutingConfiguration()
        configuration.maxNodes = 50
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0), configuration: configuration)
        let flood = (1 ... 200).map { advert(UInt64($0), version: 1) }
        let outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(1), nodes: flood, links: []), now: .seconds(1))
        #expect(outcome.acceptedNodes == 49)
        #expect(outcome.rejected == 151)
        #expect(matrix.knownNodeCount == 50)
        var bad = advert(7, version: 99)
        bad.load = .nan
        var badCoordinate = advert(8, version: 99)
        badCoordinate.coordinate.height = -.infinity
        var far = advert(9, version: 99)
        far.hops = 200
        let garbage = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(1), nodes: [bad, badCoordinate, far], links: [
            RoutingLinkAdvert(from: RoutingNodeID(2), to: RoutingNodeID(3), version: 1, rttMilliseconds: -4),
        ]), now: .seconds(1))
        #expect(garbage.rejected == 4)
        #expect(garbage.acceptedNodes == 0)
    }

    @Test func measurementsFeedEWMAHoltAndVivaldi() throws {
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0))
        let remote = VivaldiCoordinate(vector: SIMD4(30, 0, 0, 0), height: 5, error: 0.2)
        for i in 0 ..< 50 {
            let rtt = 40.0 + Double(i % 3)
            matrix.handleMeasurement(
                RoutingMeasurement(peer: RoutingNodeID(5), rtt: .microseconds(Int64(rtt * 1000)), load: 0.3, coordinate: remote),
                now: .milliseconds(Int64(i) * 100)
            )
        }
        let optional1 = matrix.record(of: RoutingNodeID(5))
        let record = try #require(optional1)
        let smoothed = try #require(record.measuredRTT?.smoothed)
        #expect(abs(smoothed - 41) < 1.5)
        #expect(record.load == 0.3 && record.hops == 1)
        #expect(abs(matrix.coordinate.distance(to: remote) - 41) < 4, "Vivaldi moved towards the measured RTT")
        let report = matrix.predictionReport()
        #expect(report.measuredLinks == 1)
        #expect(report.holtMeanRelativeError < 0.1 && report.ewmaMeanRelativeError < 0.1)
    }

    @Test func snapshotsAreImmutableAndPublishedOnTimer() throws {
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0))
        matrix.handleMeasurement(RoutingMeasurement(peer: RoutingNodeID(1), rtt: .milliseconds(10)), now: .zero)
        matrix.handleTimeout(now: .zero)
        let optional2 = matrix.pollSnapshot()
        let first = try #require(optional2)
        #expect(matrix.pollSnapshot() == nil)
        #expect(matrix.pollTimeout() == .milliseconds(100))
        for _ in 0 ..< 20 { matrix.handleMeasurement(RoutingMeasurement(peer: RoutingNodeID(1), rtt: .milliseconds(90)), now: .milliseconds(50)) }
        matrix.handleTimeout(now: .milliseconds(60))
        #expect(matrix.pollSnapshot() == nil, "not due yet")
        matrix.handleTimeout(now: .milliseconds(100))
        let optional3 = matrix.pollSnapshot()
        let second = try #require(optional3)
        #expect(second.version == first.version + 1)
        var engine = RouteQueryEngine()
        let optional4 = engine.route(in: first, from: RoutingNodeID(0), to: RoutingNodeID(1), weights: .latencyOnly)
        let before = try #require(optional4)
        let optional5 = engine.route(in: second, from: RoutingNodeID(0), to: RoutingNodeID(1), weights: .latencyOnly)
        let after = try #require(optional5)
        #expect(before.latencyMilliseconds == 10)
        #expect(after.latencyMilliseconds > 60)
    }

    @Test func relayChosenWhenDirectMeasuredSlow() throws {
        // The owner measures B at 300 ms; R measured B at 20 ms and we measure R at 20 ms.
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0))
        let relay = RoutingNodeID(1), target = RoutingNodeID(2)
        _ = matrix.handleGossip(RoutingGossip(
            sender: relay, nodes: [advert(1, version: 1), advert(2, version: 1, hops: 1)],
            links: [RoutingLinkAdvert(from: relay, to: target, version: 1, rttMilliseconds: 20)]
        ), now: .seconds(1))
        matrix.handleMeasurement(RoutingMeasurement(peer: relay, rtt: .milliseconds(20)), now: .seconds(1))
        matrix.handleMeasurement(RoutingMeasurement(peer: target, rtt: .milliseconds(300)), now: .seconds(1))
        matrix.publish(now: .seconds(1))
        let optional6 = matrix.route(to: target, size: 0, now: .seconds(1))
        let route = try #require(optional6)
        #expect(route.path == [RoutingNodeID(0), relay, target])
        // The direct link recovers: direct again.
        for _ in 0 ..< 40 { matrix.handleMeasurement(RoutingMeasurement(peer: target, rtt: .milliseconds(25)), now: .seconds(2)) }
        matrix.publish(now: .seconds(2))
        let direct = matrix.route(to: target, size: 0, now: .seconds(2))
        #expect(direct?.isDirect == true)
        // Down peers carry no routes.
        matrix.handlePeerState(target, isUp: false, now: .seconds(2))
        matrix.publish(now: .seconds(2))
        #expect(matrix.route(to: target, size: 0, now: .seconds(2)) == nil)
    }

    @Test func overlayConnectsClustersAndAnswersQueries() throws {
        let seed = makeSeed()
        let model = GeographicLatencyModel(nodeCount: 600, seed: seed)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 60, seed: seed)
        var configuration = RoutingConfiguration()
        configuration.nearestNeighbours = 8
        configuration.longRangeLinks = 3
        var matrix = RoutingMatrix(selfID: RoutingNodeID(0), geo: model.positions[0], configuration: configuration)
        let adverts = (1 ..< 600).map { i in
            RoutingNodeAdvert(node: RoutingNodeID(UInt64(i)), version: 1, hops: 1, region: model.regions[i], geo: model.positions[i], coordinate: coordinates[i])
        }
        _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(1), nodes: adverts, links: []), now: .seconds(1))
        matrix.rebuildOverlay(now: .seconds(1))
        let snapshot = matrix.publish(now: .seconds(1))
        #expect(snapshot.edgeCount >= 599 * 10, "seed \(seed)")
        var engine = RouteQueryEngine()
        let optional7 = engine.shortestPathTree(in: snapshot, from: RoutingNodeID(0), weights: .latencyOnly)
        let tree = try #require(optional7)
        let reachable = (1 ..< 600).filter { tree.cost(to: RoutingNodeID(UInt64($0))) != nil }.count
        #expect(reachable == 599, "overlay disconnected, seed \(seed)")
        // Many destinations from one tree; routes never cost more than direct.
        let destinations = (1 ..< 600).map { RoutingNodeID(UInt64($0)) }
        let routes = engine.routes(in: snapshot, from: RoutingNodeID(0), to: destinations, size: 1 << 16)
        #expect(routes.allSatisfy { $0 != nil })
        let ranked = engine.rankSources(in: snapshot, candidates: Array(destinations.prefix(20)), size: 1 << 16)
        #expect(zip(ranked, ranked.dropFirst()).allSatisfy { $0.cost <= $1.cost })
    }
}

/// A peer's coordinate far enough away overflows Vivaldi's arithmetic (inf − inf = NaN): the step is
/// dropped, so the owner's coordinate stays finite and its gossip stays decodable (issue 11).
@Test func aVivaldiStepTowardAnOverflowingCoordinateIsDropped() {
    let huge = Float.greatestFiniteMagnitude
    for remote in [VivaldiCoordinate(vector: SIMD4(huge, -huge, huge, -huge), height: huge, error: 0),
                   VivaldiCoordinate(vector: SIMD4(huge, 0, 0, 0), height: 0, error: 1),
                   VivaldiCoordinate(vector: .zero, height: huge, error: 0.5)] {
        for rtt: Float in [1e-30, 1, 50, 3e38] {
            var own = VivaldiCoordinate(vector: SIMD4(10, -5, 2, 0), height: 1, error: 0.5)
            own.update(rtt: rtt, remote: remote)
            #expect(own.isValid, "after rtt \(rtt) toward \(remote): \(own)")
        }
    }
    // An ordinary step still moves it.
    var own = VivaldiCoordinate(vector: .zero, height: 0.1, error: 1)
    own.update(rtt: 50, remote: VivaldiCoordinate(vector: SIMD4(30, 0, 0, 0), height: 5, error: 0.2))
    #expect(own.isValid && own.vector != .zero)
}
