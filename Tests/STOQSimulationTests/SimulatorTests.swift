import Testing
@testable import STOQSimulation

/// A node that pings a list of peers every `interval` and answers pings with pongs,
/// recording what it saw. Small enough to run many thousands.
struct PingNode: SimulatedNode {
    enum Message: Equatable {
        case ping(UInt32)
        case pong(UInt32)
        case garbage
    }

    var id: SimNodeID
    var peers: [SimNodeID]
    var interval: SimDuration
    var nextPing: SimInstant?
    var outbox: [SimTransmit<Message>] = []
    var sequence: UInt32 = 0
    var pongs: [(from: SimNodeID, at: SimInstant)] = []
    var pings = 0
    var garbage = 0
    var restarts = 0
    var payloadSize = 100

    init(id: SimNodeID, peers: [SimNodeID], interval: SimDuration? = nil) {
        self.id = id
        self.peers = peers
        self.interval = interval ?? .milliseconds(100)
        self.nextPing = interval == nil ? nil : SimInstant.zero
    }

    mutating func handle(message: Message, from: SimNodeID, now: SimInstant) {
        switch message {
        case .ping(let n):
            pings += 1
            outbox.append(SimTransmit(to: from, message: .pong(n), size: payloadSize))
        case .pong:
            pongs.append((from, now))
        case .garbage:
            garbage += 1
        }
    }

    mutating func handleTimeout(now: SimInstant) {
        for peer in peers {
            sequence += 1
            outbox.append(SimTransmit(to: peer, message: .ping(sequence), size: payloadSize))
        }
        nextPing = now + interval
    }

    mutating func pollTransmit(now: SimInstant) -> SimTransmit<Message>? {
        outbox.isEmpty ? nil : outbox.removeFirst()
    }

    func pollTimeout() -> SimInstant? { nextPing }

    mutating func handleRestart(now: SimInstant) { restarts += 1 }
}

/// A node whose timer is always due now: the runaway loop the event budget must stop.
struct RunawayNode: SimulatedNode {
    typealias Message = Int
    var fired = 0
    mutating func handle(message: Int, from: SimNodeID, now: SimInstant) {}
    mutating func handleTimeout(now: SimInstant) { fired += 1 }
    mutating func pollTransmit(now: SimInstant) -> SimTransmit<Int>? { nil }
    func pollTimeout() -> SimInstant? { .zero }
}

func makeSeed() -> UInt64 {
    var generator = SystemRandomNumberGenerator()
    return generator.next()
}

@Suite struct SimulatorTests {
    @Test func latencyAndSerializationDelay() {
        let a = PingNode(id: SimNodeID(0), peers: [])
        var b = PingNode(id: SimNodeID(1), peers: [])
        b.payloadSize = 1250 // 10,000 bits
        var sim = Simulator(
            nodes: [a, b], seed: 1,
            link: SimLink(latency: .milliseconds(10), bandwidthBitsPerSecond: 1_000_000)
        )
        // 1250 bytes at 1 Mbit/s: 10 ms serialization each; two back to back queue up.
        sim.inject(.ping(1), from: SimNodeID(0), to: SimNodeID(1), size: 1250)
        sim.inject(.ping(2), from: SimNodeID(0), to: SimNodeID(1), size: 1250)
        #expect(sim.runUntilIdle() == .idle)
        #expect(sim[SimNodeID(1)].pings == 2)
        // Pings arrive at 20 and 30 ms; pongs leave b's queue at 30 and 40 and arrive at 40, 50 ms.
        let times = sim[SimNodeID(0)].pongs.map { $0.at.nanoseconds }
        #expect(times == [40_000_000, 50_000_000])
    }

    @Test func sameSeedSameRun() {
        let seed = makeSeed()
        func run(_ seed: UInt64) -> [UInt64] {
            let count = 20
            let nodes = (0 ..< count).map { i in
                PingNode(id: SimNodeID(i), peers: [SimNodeID((i + 1) % count), SimNodeID((i + 7) % count)], interval: .milliseconds(50))
            }
            var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(5), jitter: .milliseconds(5), loss: 0.1))
            sim.drive(until: SimInstant.zero + .seconds(2))
            return (0 ..< count).flatMap { sim[SimNodeID($0)].pongs.map { $0.at.nanoseconds } } + [sim.stats.droppedLoss]
        }
        let first = run(seed)
        #expect(first == run(seed), "seed \(seed)")
        #expect(first != run(seed &+ 1), "seed \(seed)")
    }

    @Test func lossRateMatches() {
        let seed = makeSeed()
        let nodes = [PingNode(id: SimNodeID(0), peers: [SimNodeID(1)], interval: .milliseconds(1)), PingNode(id: SimNodeID(1), peers: [])]
        var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(1), loss: 0.2))
        sim.drive(until: SimInstant.zero + .seconds(5))
        let rate = Double(sim.stats.droppedLoss) / Double(sim.stats.sent)
        #expect(abs(rate - 0.2) < 0.03, "loss rate \(rate), seed \(seed)")
    }

    @Test func partitionKillReviveAndSlowLinkOnSchedule() {
        let seed = makeSeed()
        let nodes = (0 ..< 3).map { PingNode(id: SimNodeID($0), peers: $0 == 0 ? [SimNodeID(1), SimNodeID(2)] : [], interval: .milliseconds(100)) }
        var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(10)))
        let t = { (s: Double) in SimInstant.zero + .seconds(s) }
        sim.schedule(.partition([[SimNodeID(0)], [SimNodeID(1), SimNodeID(2)]]), at: t(1))
        sim.schedule(.heal, at: t(2))
        sim.schedule(.kill(SimNodeID(2)), at: t(3))
        sim.schedule(.revive(SimNodeID(2)), at: t(4))
        sim.schedule(.setLink(from: SimNodeID(0), to: SimNodeID(1), link: SimLink(latency: .milliseconds(200))), at: t(5))
        sim.drive(until: t(6))

        func pongs(from peer: Int, between start: Double, _ end: Double) -> [SimInstant] {
            sim[SimNodeID(0)].pongs.filter { $0.from == SimNodeID(peer) && $0.at > t(start) && $0.at <= t(end) }.map(\.at)
        }
        #expect(pongs(from: 1, between: 1.05, 2).isEmpty, "partitioned, seed \(seed)")
        #expect(pongs(from: 1, between: 2.05, 3).count >= 9, "healed, seed \(seed)")
        #expect(pongs(from: 2, between: 3.05, 4).isEmpty, "killed, seed \(seed)")
        #expect(pongs(from: 2, between: 4.05, 5).count >= 9, "revived, seed \(seed)")
        #expect(sim[SimNodeID(2)].restarts == 1)
        #expect(sim.stats.droppedPartition > 0 && sim.stats.droppedDeadNode > 0)
        // After 5 s the 0 → 1 direction takes 200 ms: a ping sent at 5.0 s comes back at 5.21 s.
        let late = pongs(from: 1, between: 5.0, 6)
        #expect(late.first.map { $0 >= t(5.2) } == true, "slow link, seed \(seed)")
    }

    @Test func corruptionFromOneNode() {
        let seed = makeSeed()
        let nodes = [PingNode(id: SimNodeID(0), peers: [SimNodeID(1)], interval: .milliseconds(10)), PingNode(id: SimNodeID(1), peers: [])]
        var sim = Simulator(nodes: nodes, seed: seed)
        sim.corrupt = { message, _ in message = .garbage }
        sim.setCorrupting(SimNodeID(0), probability: 1)
        sim.drive(until: SimInstant.zero + .seconds(1))
        #expect(sim[SimNodeID(1)].pings == 0, "seed \(seed)")
        #expect(sim[SimNodeID(1)].garbage > 90, "seed \(seed)")
        // The last corrupted ping may still be in flight at the deadline.
        #expect(sim.stats.corrupted - UInt64(sim[SimNodeID(1)].garbage) <= 1)
    }

    @Test func runawayLoopIsBounded() {
        var sim = Simulator(nodes: [RunawayNode()], seed: 7)
        #expect(sim.runUntilIdle(maxEvents: 10_000) == .budgetExhausted(events: 10_000))
        #expect(sim.drive(until: SimInstant.zero + .seconds(1), maxEvents: 500) == .budgetExhausted(events: 500))
        #expect(sim.now == .zero)
    }

    @Test func scheduledActionsAndPerPairLatency() {
        let nodes = (0 ..< 4).map { PingNode(id: SimNodeID($0), peers: []) }
        var sim = Simulator(nodes: nodes, seed: 3, latencyModel: .perPair { a, b in .milliseconds(Double(a.index + b.index)) })
        sim.schedule(at: SimInstant.zero + .milliseconds(100)) { sim in
            sim.inject(.ping(9), from: SimNodeID(1), to: SimNodeID(3))
        }
        #expect(sim.runUntilIdle() == .idle)
        #expect(sim[SimNodeID(1)].pongs.map(\.at) == [SimInstant.zero + .milliseconds(108)])
    }

    @Test func tenThousandNodesPingRing() {
        let seed = makeSeed()
        let count = 10_000
        let nodes = (0 ..< count).map { PingNode(id: SimNodeID($0), peers: [SimNodeID(($0 + 1) % count)], interval: .milliseconds(200)) }
        var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(20), jitter: .milliseconds(10)))
        let outcome = sim.drive(until: SimInstant.zero + .seconds(1))
        #expect(outcome == .reachedDeadline)
        // Pings at 0, 200, 400, 600, 800 ms each come back within 60 ms.
        #expect(sim.stats.delivered == UInt64(count * 10), "seed \(seed)")
        #expect(SimNodeID(70000).address == "fd00::1:1170")
    }
}

@Suite struct PartitionPrimitiveTests {
    @Test func aCutSeparatesTwoSetsOnlyAndHealRestoresThem() {
        let seed = makeSeed()
        let nodes = (0 ..< 4).map { PingNode(id: SimNodeID($0), peers: $0 == 0 ? [SimNodeID(1), SimNodeID(2), SimNodeID(3)] : [], interval: .milliseconds(100)) }
        var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(10), jitter: .milliseconds(5)))
        let t = { (s: Double) in SimInstant.zero + .seconds(s) }
        // Two cuts that add up: 0 loses 1 and 3, keeps 2; 1, 2 and 3 still reach each other.
        sim.schedule(.cut([SimNodeID(0)], [SimNodeID(1)]), at: t(1))
        sim.schedule(.cut([SimNodeID(3)], [SimNodeID(0), SimNodeID(2)]), at: t(1))
        sim.schedule(at: t(1.5)) { sim in
            #expect(sim.isSeparated(SimNodeID(0), SimNodeID(1)) && sim.isSeparated(SimNodeID(1), SimNodeID(0)))
            #expect(sim.isSeparated(SimNodeID(3), SimNodeID(2)) && sim.isSeparated(SimNodeID(0), SimNodeID(3)))
            #expect(!sim.isSeparated(SimNodeID(0), SimNodeID(2)) && !sim.isSeparated(SimNodeID(1), SimNodeID(2)))
            #expect(!sim.isSeparated(SimNodeID(1), SimNodeID(3)))
        }
        sim.schedule(.heal, at: t(2))
        sim.drive(until: t(3))
        func pongs(from peer: Int, between start: Double, _ end: Double) -> Int {
            sim[SimNodeID(0)].pongs.filter { $0.from == SimNodeID(peer) && $0.at > t(start) && $0.at <= t(end) }.count
        }
        #expect(pongs(from: 1, between: 1.05, 2) == 0, "seed \(seed)")
        #expect(pongs(from: 3, between: 1.05, 2) == 0, "seed \(seed)")
        #expect(pongs(from: 2, between: 1.05, 2) >= 9, "seed \(seed)")
        for peer in 1 ... 3 { #expect(pongs(from: peer, between: 2.05, 3) >= 9, "peer \(peer) after the heal, seed \(seed)") }
        #expect(!sim.isSeparated(SimNodeID(0), SimNodeID(1)))
    }

    @Test func whatIsSentDuringAPartitionIsLostEvenIfItWouldArriveAfterTheHeal() {
        let nodes = (0 ..< 2).map { PingNode(id: SimNodeID($0), peers: []) }
        var sim = Simulator(nodes: nodes, seed: 5, link: SimLink(latency: .milliseconds(500)))
        let t = { (ms: Double) in SimInstant.zero + .milliseconds(ms) }
        sim.schedulePartition([[SimNodeID(0)], [SimNodeID(1)]], at: t(0), for: .milliseconds(100))
        // Sent at 50 ms, due at 550 ms: the partition healed at 100 ms, but the packet left into a cut.
        sim.schedule(at: t(50)) { $0.inject(.ping(1), from: SimNodeID(0), to: SimNodeID(1)) }
        // Sent at 200 ms, after the heal: delivered.
        sim.schedule(at: t(200)) { $0.inject(.ping(2), from: SimNodeID(0), to: SimNodeID(1)) }
        #expect(sim.runUntilIdle() == .idle)
        #expect(sim[SimNodeID(1)].pings == 1)
        #expect(sim.stats.droppedPartition == 1)
        #expect(sim[SimNodeID(0)].pongs.map(\.at) == [t(1200)])
    }

    @Test func aPacketInFlightWhenThePartitionStartsIsLost() {
        let nodes = (0 ..< 2).map { PingNode(id: SimNodeID($0), peers: []) }
        var sim = Simulator(nodes: nodes, seed: 6, link: SimLink(latency: .milliseconds(500)))
        sim.inject(.ping(1), from: SimNodeID(0), to: SimNodeID(1))
        sim.schedulePartition([[SimNodeID(0)]], at: SimInstant.zero + .milliseconds(100), for: .milliseconds(1000))
        #expect(sim.runUntilIdle() == .idle)
        #expect(sim[SimNodeID(1)].pings == 0)
        #expect(sim.stats.droppedPartition == 1)
    }
}
