import Testing
import STOQSimulation
@testable import STOQRouting

/// A routing node under the simulator: PING/PONG every 200 ms to a random known peer,
/// gossip every 300 ms to two random known peers, a snapshot every 100 ms.
struct RoutingSimNode: SimulatedNode {
    enum Message {
        case ping(sentAt: SimInstant)
        case pong(sentAt: SimInstant, coordinate: VivaldiCoordinate, load: Float)
        case gossip(RoutingGossip)
    }

    var id: SimNodeID
    var matrix: RoutingMatrix
    var random: SimRandom
    var outbox: [SimTransmit<Message>] = []
    var nextPing: SimInstant = .zero
    var nextGossip: SimInstant = .zero

    init(id: SimNodeID, bootstrap: [SimNodeID], seed: UInt64, staleAfter: Duration) {
        self.id = id
        var configuration = RoutingConfiguration()
        configuration.staleAfter = staleAfter
        configuration.gossipNodesPerMessage = 32
        configuration.nearestNeighbours = 8
        configuration.longRangeLinks = 2
        configuration.overlayRowsPerUpdate = 8
        matrix = RoutingMatrix(selfID: RoutingNodeID(UInt64(id.rawValue)), configuration: configuration)
        random = SimRandom(seed: seed ^ UInt64(id.rawValue))
        for peer in bootstrap {
            _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(UInt64(peer.rawValue)), nodes: [
                RoutingNodeAdvert(node: RoutingNodeID(UInt64(peer.rawValue)), version: 0),
            ], links: []), now: .zero)
        }
        nextPing = SimInstant(nanoseconds: random.next() % 200_000_000)
        nextGossip = SimInstant(nanoseconds: random.next() % 300_000_000)
    }

    func randomPeer(_ random: inout SimRandom) -> SimNodeID? {
        let known = matrix.knownNodes
        guard known.count > 1 else { return nil }
        return SimNodeID(rawValue: UInt32(known[1 + random.nextIndex(known.count - 1)].rawValue))
    }

    mutating func handle(message: Message, from: SimNodeID, now: SimInstant) {
        switch message {
        case .ping(let sentAt):
            outbox.append(SimTransmit(to: from, message: .pong(sentAt: sentAt, coordinate: matrix.coordinate, load: 0.1), size: 80))
        case .pong(let sentAt, let coordinate, let load):
            matrix.handleMeasurement(
                RoutingMeasurement(peer: RoutingNodeID(UInt64(from.rawValue)), rtt: (now - sentAt).sinceStartDuration, load: load, coordinate: coordinate),
                now: now.sinceStart
            )
        case .gossip(let gossip):
            _ = matrix.handleGossip(gossip, now: now.sinceStart)
        }
    }

    mutating func handleTimeout(now: SimInstant) {
        if now >= nextPing {
            if let peer = randomPeer(&random) { outbox.append(SimTransmit(to: peer, message: .ping(sentAt: now), size: 80)) }
            nextPing = now + .milliseconds(200)
        }
        if now >= nextGossip {
            let gossip = matrix.makeGossip(now: now.sinceStart)
            for _ in 0 ..< 2 {
                if let peer = randomPeer(&random) { outbox.append(SimTransmit(to: peer, message: .gossip(gossip), size: gossip.approximateSize)) }
            }
            nextGossip = now + .milliseconds(300)
        }
        matrix.handleTimeout(now: now.sinceStart)
    }

    mutating func pollTransmit(now: SimInstant) -> SimTransmit<Message>? {
        outbox.isEmpty ? nil : outbox.removeFirst()
    }

    func pollTimeout() -> SimInstant? {
        let publish = SimInstant(nanoseconds: UInt64(RoutingMatrix.nanoseconds(matrix.pollTimeout())))
        return min(nextPing, nextGossip, publish)
    }
}

extension SimDuration {
    var sinceStartDuration: Duration { .nanoseconds(Int64(nanoseconds)) }
}

@Suite struct GossipSimulationTests {
    @Test func gossipConvergesAndForgetsTheDead() throws {
        let seed = makeSeed()
        let count = 80
        let model = GeographicLatencyModel(nodeCount: count, seed: seed)
        // Bootstrap: a ring plus one chord each; nobody knows more than 2 nodes at start.
        let nodes = (0 ..< count).map { i in
            RoutingSimNode(id: SimNodeID(i), bootstrap: [SimNodeID((i + 1) % count), SimNodeID((i * 7 + 3) % count)], seed: seed, staleAfter: .seconds(4))
        }
        var sim = Simulator(
            nodes: nodes, seed: seed, link: SimLink(jitter: .milliseconds(1), bandwidthBitsPerSecond: 100_000_000, loss: 0.01),
            latencyModel: .perPair { a, b in .milliseconds(model.rttMilliseconds(a.index, b.index) / 2) }
        )
        let dead = SimNodeID(17)
        // 8 s of virtual time: with 1 % loss and a ring bootstrap, some seeds (1137648307780088013)
        // leave one node a contact short at 6 s.
        sim.schedule(.kill(dead), at: SimInstant.zero + .seconds(8))
        #expect(sim.drive(until: SimInstant.zero + .seconds(8)) == .reachedDeadline)
        for i in 0 ..< count {
            #expect(sim[SimNodeID(i)].matrix.knownNodeCount == count, "node \(i) knows \(sim[SimNodeID(i)].matrix.knownNodeCount), seed \(seed)")
        }
        let hops = (1 ..< count).compactMap { sim[SimNodeID(0)].matrix.record(of: RoutingNodeID(UInt64($0)))?.hops }
        #expect(hops.allSatisfy { $0 >= 1 && $0 <= 12 }, "hops \(hops), seed \(seed)")
        #expect(sim.drive(until: SimInstant.zero + .seconds(14)) == .reachedDeadline)
        // The dead node went stale everywhere: no snapshot routes through or to it.
        let observer = sim[SimNodeID(0)].matrix
        let snapshot = try #require(observer.snapshot)
        let slot = try #require(snapshot.slot(of: RoutingNodeID(17)))
        #expect(snapshot.usable[Int(slot)] == false, "seed \(seed)")
        // Live nodes are still reachable and Vivaldi learned something from the PONGs.
        var engine = RouteQueryEngine()
        let route = engine.route(in: snapshot, from: RoutingNodeID(0), to: RoutingNodeID(40), size: 1 << 16)
        #expect(route != nil, "seed \(seed)")
        #expect(observer.predictionReport().measuredLinks > 10, "seed \(seed)")
        #expect(sim.stats.droppedDeadNode > 0)
    }
}
