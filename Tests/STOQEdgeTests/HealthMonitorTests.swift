import STOQSimulation
import Testing
@testable import STOQEdge

enum HealthMessage {
    case ping(UInt64)
    case pong(UInt64)
}

/// Node 0 runs a HealthMonitor over the others; every node answers pings.
struct HealthNode: SimulatedNode {
    var monitor: HealthMonitor<SimNodeID>?
    var outbox: [SimTransmit<HealthMessage>] = []
    var events: [(time: UInt64, event: HealthMonitor<SimNodeID>.Event)] = []

    init(monitoring peers: [SimNodeID]? = nil, configuration: HealthMonitor<SimNodeID>.Configuration = .init()) {
        if let peers {
            var monitor = HealthMonitor<SimNodeID>(configuration: configuration, nonceSeed: 7)
            for peer in peers { monitor.addPeer(peer, now: 0) }
            self.monitor = monitor
            drain(now: 0)
        }
    }

    mutating func drain(now: UInt64) {
        guard monitor != nil else { return }
        while let action = monitor!.pollAction() {
            switch action {
            case .sendProbe(let peer, let nonce): outbox.append(SimTransmit(to: peer, message: .ping(nonce), size: 64))
            }
        }
        while let event = monitor!.pollEvent() { events.append((now, event)) }
    }

    mutating func handle(message: HealthMessage, from: SimNodeID, now: SimInstant) {
        switch message {
        case .ping(let nonce):
            outbox.append(SimTransmit(to: from, message: .pong(nonce), size: 64))
        case .pong(let nonce):
            monitor?.handleProbeResponse(from: from, nonce: nonce, now: now.nanoseconds)
            drain(now: now.nanoseconds)
        }
    }

    mutating func handleTimeout(now: SimInstant) {
        monitor?.handleTimeout(now: now.nanoseconds)
        drain(now: now.nanoseconds)
    }

    mutating func pollTransmit(now: SimInstant) -> SimTransmit<HealthMessage>? {
        outbox.isEmpty ? nil : outbox.removeFirst()
    }

    func pollTimeout() -> SimInstant? { monitor?.pollTimeout().map { SimInstant(nanoseconds: $0) } }
}

func healthSim(peers: Int, seed: UInt64, latency: SimDuration = .milliseconds(5)) -> Simulator<HealthNode> {
    let ids = (1...peers).map { SimNodeID($0) }
    let nodes = [HealthNode(monitoring: ids)] + ids.map { _ in HealthNode() }
    return Simulator(nodes: nodes, seed: seed, link: SimLink(latency: latency, jitter: .milliseconds(1)))
}

let ms: UInt64 = 1_000_000

@Test func killedPeerIsReportedDownInTimeAndUpAfterRevival() throws {
    let seed: UInt64 = 11
    var sim = healthSim(peers: 4, seed: seed)
    let victim = SimNodeID(2)
    let killAt: UInt64 = 5_300 * ms
    let reviveAt: UInt64 = 12_050 * ms
    sim.schedule(.kill(victim), at: SimInstant(nanoseconds: killAt))
    sim.schedule(.revive(victim), at: SimInstant(nanoseconds: reviveAt))
    sim.drive(until: SimInstant(nanoseconds: 20_000 * ms))
    let monitor = try #require(sim[SimNodeID(0)].monitor)
    let events = sim[SimNodeID(0)].events
    #expect(events.map(\.event) == [.peerDown(victim), .peerUp(victim)], "seed \(seed): \(events)")
    let config = monitor.configuration
    let bound = killAt + config.interval * UInt64(config.failureThreshold) + config.timeout
    let down = try #require(events.first).time
    #expect(down > killAt && down <= bound, "seed \(seed): down at \(down / ms) ms, bound \(bound / ms) ms")
    let up = events[1].time
    #expect(up > reviveAt && up <= reviveAt + config.interval + config.timeout, "seed \(seed): up at \(up / ms) ms")
    let health = try #require(monitor.health(of: victim))
    // Probes at 6, 7, ..., 12 s went to a dead peer: 7 timeouts, all counted.
    #expect(health.timeouts == 7, "seed \(seed): \(health)")
    #expect(health.isUp)
    for other in [1, 3, 4].map(SimNodeID.init) {
        let h = try #require(monitor.health(of: other))
        #expect(h.timeouts == 0 && h.isUp)
        #expect(h.probesSent - h.answered <= 1)
        let srtt = try #require(h.smoothedRTT)
        #expect(srtt > 10e6 && srtt < 12.5e6, "seed \(seed): RTT EWMA \(srtt / 1e6) ms on a 2 × (5 + 0...1) ms path")
    }
}

@Test func oneOrTwoLostProbesDoNotFlap() throws {
    let seed: UInt64 = 12
    var sim = healthSim(peers: 2, seed: seed)
    let peer = SimNodeID(1)
    // Cut the link around the probe at t = 3 s, and around the probes at 6 s and 7 s.
    for (from, to) in [(2_950, 3_050), (5_950, 7_050)] {
        sim.schedule(.setLink(from: SimNodeID(0), to: peer, link: .cut), at: SimInstant(nanoseconds: UInt64(from) * ms))
        sim.schedule(.setLink(from: SimNodeID(0), to: peer, link: nil), at: SimInstant(nanoseconds: UInt64(to) * ms))
    }
    sim.drive(until: SimInstant(nanoseconds: 12_000 * ms))
    let health = try #require(sim[SimNodeID(0)].monitor?.health(of: peer))
    #expect(health.timeouts == 3, "seed \(seed): \(health)")
    #expect(health.isUp)
    #expect(sim[SimNodeID(0)].events.isEmpty, "seed \(seed): flapped: \(sim[SimNodeID(0)].events)")
    let other = try #require(sim[SimNodeID(0)].monitor?.health(of: SimNodeID(2)))
    #expect(other.timeouts == 0)
}

@Test func slowLinkTimeoutsAreCountedAndMarkThePeerDown() throws {
    let seed: UInt64 = 13
    var sim = healthSim(peers: 2, seed: seed, latency: .milliseconds(30))
    let slow = SimNodeID(2)
    // From 4.5 s the path to node 2 takes 80 ms each way: every answer is 60 ms late.
    sim.schedule(.setLink(from: SimNodeID(0), to: slow, link: SimLink(latency: .milliseconds(80))), at: SimInstant(nanoseconds: 4_500 * ms))
    sim.schedule(.setLink(from: slow, to: SimNodeID(0), link: SimLink(latency: .milliseconds(80))), at: SimInstant(nanoseconds: 4_500 * ms))
    sim.schedule(.setLink(from: SimNodeID(0), to: slow, link: nil), at: SimInstant(nanoseconds: 10_500 * ms))
    sim.schedule(.setLink(from: slow, to: SimNodeID(0), link: nil), at: SimInstant(nanoseconds: 10_500 * ms))
    sim.drive(until: SimInstant(nanoseconds: 15_000 * ms))
    let node = sim[SimNodeID(0)]
    let monitor = try #require(node.monitor)
    let h = try #require(monitor.health(of: slow))
    // Probes at 5, 6, ..., 10 s: six timeouts, six late answers.
    #expect(h.timeouts == 6, "seed \(seed): \(h)")
    #expect(h.lateAnswers == 6, "seed \(seed): \(h)")
    #expect(node.events.map(\.event) == [.peerDown(slow), .peerUp(slow)], "seed \(seed): \(node.events)")
    #expect(node.events[0].time == 7_100 * ms, "down at the third timeout (7.1 s)")
    let fast = try #require(monitor.health(of: SimNodeID(1)))
    #expect(fast.timeouts == 0)
    let srtt = try #require(fast.smoothedRTT)
    #expect(srtt > 60e6 && srtt < 62.5e6, "seed \(seed): \(srtt / 1e6) ms")
}

@Test func configurableThresholdsAndRemoval() {
    var monitor = HealthMonitor<String>(configuration: .init(interval: 500 * ms, timeout: 50 * ms, failureThreshold: 2, recoveryThreshold: 2))
    monitor.addPeer("a", now: 0)
    guard case .sendProbe("a", let n0) = monitor.pollAction() else { Issue.record("no probe"); return }
    monitor.handleProbeResponse(from: "a", nonce: n0 &+ 1, now: 1 * ms)  // wrong nonce
    #expect(monitor.health(of: "a")?.lateAnswers == 1)
    #expect(monitor.pollTimeout() == 50 * ms)
    monitor.handleTimeout(now: 50 * ms)
    monitor.handleTimeout(now: 500 * ms)
    guard case .sendProbe("a", _) = monitor.pollAction() else { Issue.record("no second probe"); return }
    monitor.handleTimeout(now: 550 * ms)
    #expect(monitor.pollEvent() == .peerDown("a"))
    monitor.handleTimeout(now: 1000 * ms)
    guard case .sendProbe("a", let n2) = monitor.pollAction() else { Issue.record("no third probe"); return }
    monitor.handleProbeResponse(from: "a", nonce: n2, now: 1010 * ms)
    #expect(monitor.pollEvent() == nil, "one answer is not enough with recoveryThreshold 2")
    monitor.handleTimeout(now: 1500 * ms)
    guard case .sendProbe("a", let n3) = monitor.pollAction() else { Issue.record("no fourth probe"); return }
    monitor.handleProbeResponse(from: "a", nonce: n3, now: 1510 * ms)
    #expect(monitor.pollEvent() == .peerUp("a"))
    #expect(monitor.health(of: "a")?.lastRTT == 10 * ms)
    monitor.removePeer("a")
    #expect(monitor.pollTimeout() == nil)
    #expect(monitor.peers.isEmpty)
}

@Test func detectionBoundHoldsForRandomKillTimes() throws {
    for seed: UInt64 in 100..<116 {
        var sim = healthSim(peers: 3, seed: seed)
        var random = SimRandom(seed: seed)
        let victim = SimNodeID(1 + random.nextIndex(3))
        let killAt = 2_000 * ms + UInt64(random.nextIndex(1_000_000)) * 1_000  // 2 s ... 3 s
        sim.schedule(.kill(victim), at: SimInstant(nanoseconds: killAt))
        sim.drive(until: SimInstant(nanoseconds: 8_000 * ms))
        let node = sim[SimNodeID(0)]
        let config = try #require(node.monitor).configuration
        let bound = killAt + config.interval * UInt64(config.failureThreshold) + config.timeout
        #expect(node.events.map(\.event) == [.peerDown(victim)], "seed \(seed): \(node.events)")
        if let down = node.events.first?.time {
            #expect(down > killAt && down <= bound, "seed \(seed): killed at \(killAt / ms) ms, down at \(down / ms) ms, bound \(bound / ms) ms")
        }
    }
}

// MARK: Slowness is not death (issue 11)

@Test func aLateTimerDoesNotTurnAnAnswerInTimeIntoAMiss() throws {
    var monitor = HealthMonitor<String>(nonceSeed: 3)
    monitor.addPeer("edge", now: 0)
    let first = monitor.pollAction()
    guard case .sendProbe(_, let nonce) = try #require(first) else { return }
    let deadline = try #require(monitor.pollTimeout())
    #expect(deadline == monitor.configuration.timeout)
    // The node was starved: its timer fires 300 ms late, and the answer waits unread behind it.
    let late: UInt64 = 300 * ms
    monitor.handleSchedulingLag(late, now: deadline + late)
    monitor.handleTimeout(now: deadline + late)
    monitor.handleProbeResponse(from: "edge", nonce: nonce, now: deadline + late + 5 * ms)
    let h = try #require(monitor.health(of: "edge"))
    #expect(h.timeouts == 0 && h.lateAnswers == 0 && h.answered == 1 && h.isUp, "\(h)")
    let event = monitor.pollEvent()
    #expect(event == nil)
}

@Test func aDeadPeerIsStillReportedDownOnAStarvedNode() throws {
    var monitor = HealthMonitor<String>(nonceSeed: 4)
    monitor.addPeer("dead", now: 0)
    let late: UInt64 = 200 * ms
    var now: UInt64 = 0
    var down: UInt64?
    for _ in 0 ..< 200 where down == nil {
        while monitor.pollAction() != nil {}
        let target = try #require(monitor.pollTimeout())
        now = max(now, target) + late
        monitor.handleSchedulingLag(late, now: now)
        monitor.handleTimeout(now: now)
        if monitor.pollEvent() == .peerDown("dead") { down = now }
    }
    let c = monitor.configuration
    let at = try #require(down)
    let idleBound = c.interval * UInt64(c.failureThreshold - 1) + c.timeout
    let starvedBound = UInt64(c.failureThreshold) * (c.interval + c.maxLagCredit + c.timeout + late)
    #expect(at > idleBound && at <= starvedBound, "down at \(at / ms) ms; bounds \(idleBound / ms) … \(starvedBound / ms) ms")
    #expect(try #require(monitor.health(of: "dead")).timeouts == UInt64(c.failureThreshold))
}

@Test func lagWithinTheToleranceChangesNoVerdict() throws {
    var monitor = HealthMonitor<String>(nonceSeed: 5)
    monitor.addPeer("p", now: 0)
    let first = monitor.pollAction()
    guard case .sendProbe(_, let nonce) = try #require(first) else { return }
    let deadline = try #require(monitor.pollTimeout())
    monitor.handleSchedulingLag(monitor.configuration.lagTolerance, now: deadline)
    monitor.handleTimeout(now: deadline)
    monitor.handleProbeResponse(from: "p", nonce: nonce, now: deadline + 1)
    let h = try #require(monitor.health(of: "p"))
    #expect(h.timeouts == 1 && h.lateAnswers == 1)
}
