/// An in-memory simulated network with a virtual clock, deterministic from a seed.
///
/// Nodes are sans-IO state machines (`SimulatedNode`) kept by value in one array; per-node
/// network state (alive, partition group, timer, sender queue) lives in flat arrays, so a
/// run holds thousands of nodes easily and a million when each node is small. Links have
/// latency, jitter, bandwidth (serialization delay and a tail-drop queue) and loss; faults
/// (kill, revive, partition, slow or cut links, corruption) apply at once or on a schedule.
///
/// ```swift
/// var sim = Simulator(nodes: nodes, seed: seed, link: SimLink(latency: .milliseconds(20)))
/// sim.schedule(.kill(SimNodeID(3)), at: SimInstant.zero + .seconds(2))
/// let outcome = sim.drive(until: SimInstant.zero + .seconds(10))
/// ```
///
/// Every random choice comes from the seed: the same seed and the same inputs give the same run.
public struct Simulator<Node: SimulatedNode> {
    /// The seed the run was created with (print it when a test fails).
    public let seed: UInt64
    /// The current virtual time.
    public private(set) var now: SimInstant = .zero
    /// Counters of what happened so far.
    public private(set) var stats = SimStats()
    /// The link used between nodes that have no override.
    public var defaultLink: SimLink
    /// How per-pair latency is chosen.
    public var latencyModel: SimLatencyModel
    /// Corrupts a message in place, used by `SimFault.corrupt`. Without it, a message from a
    /// corrupting node is dropped and counted as corrupted.
    public var corrupt: ((inout Node.Message, inout SimRandom) -> Void)?
    /// Called for every message delivered to a live node, before the node handles it.
    public var onDeliver: ((_ from: SimNodeID, _ to: SimNodeID, _ message: Node.Message, _ now: SimInstant) -> Void)?
    /// Longest run of `pollTransmit` calls drained from one node at once (a runaway guard).
    public var maxTransmitsPerPoll = 1_000_000

    /// The random source of the run; tests may draw from it to stay deterministic.
    public var random: SimRandom

    private var nodes: [Node]
    private var alive: [Bool]
    private var group: [UInt16]
    /// Active cuts: per cut, the side (1 or 2) of every node, 0 for neither.
    private var cuts: [[UInt8]] = []
    /// Armed timer deadline per node in nanoseconds, `UInt64.max` for none.
    private var armedTimer: [UInt64]
    /// When each node's sender queue (its uplink on the default link) is free again.
    private var uplinkFreeAt: [UInt64]
    private var linkOverrides: [UInt64: LinkOverride] = [:]
    private var corruptionProbability: [UInt32: Double] = [:]
    private var queue = SimEventQueue()
    private var sequence: UInt64 = 0
    private var messages: [Node.Message?] = []
    private var freeMessageSlots: [UInt32] = []
    private var faults: [SimFault] = []
    private var actions: [((inout Simulator<Node>) -> Void)?] = []

    private struct LinkOverride {
        var link: SimLink
        var freeAt: UInt64
    }

    /// Creates a simulated network of `nodes`; node `i` gets the id `SimNodeID(i)`.
    ///
    /// - Parameters:
    ///   - nodes: the state machines, in id order.
    ///   - seed: the seed of every random choice of the run.
    ///   - link: the default link between any two nodes.
    ///   - latencyModel: `.uniform` (the default link's latency) or a per-pair function.
    public init(nodes: [Node], seed: UInt64, link: SimLink = SimLink(), latencyModel: SimLatencyModel = .uniform) {
        precondition(nodes.count <= Int(UInt32.max), "too many simulated nodes")
        self.seed = seed
        self.random = SimRandom(seed: seed)
        self.defaultLink = link
        self.latencyModel = latencyModel
        self.nodes = nodes
        self.alive = Array(repeating: true, count: nodes.count)
        self.group = Array(repeating: 0, count: nodes.count)
        self.armedTimer = Array(repeating: .max, count: nodes.count)
        self.uplinkFreeAt = Array(repeating: 0, count: nodes.count)
        for index in nodes.indices { service(index) }
    }

    // MARK: Nodes

    /// The number of nodes.
    public var nodeCount: Int { nodes.count }

    /// The ids of all nodes.
    public var nodeIDs: [SimNodeID] { (0 ..< nodes.count).map { SimNodeID($0) } }

    /// Reads a node's state.
    public subscript(node: SimNodeID) -> Node { nodes[node.index] }

    /// Whether the node is running (not killed).
    public func isAlive(_ node: SimNodeID) -> Bool { alive[node.index] }

    /// Changes a node from outside (e.g. starts a fetch), then sends what it wants to send
    /// and re-arms its timer.
    ///
    /// - Parameters:
    ///   - node: the node to change.
    ///   - body: receives the node and the current virtual time.
    @discardableResult
    public mutating func withNode<Result>(_ node: SimNodeID, _ body: (inout Node, SimInstant) throws -> Result) rethrows -> Result {
        let result = try body(&nodes[node.index], now)
        service(node.index)
        return result
    }

    /// Sends a message through the network as if `from` had sent it (same latency, loss,
    /// partitions and queues).
    public mutating func inject(_ message: Node.Message, from: SimNodeID, to: SimNodeID, size: Int = 100) {
        transmit(from: from.index, SimTransmit(to: to, message: message, size: size))
    }

    // MARK: Faults

    /// Stops a node at once: it receives nothing and its timers do not fire.
    public mutating func kill(_ node: SimNodeID) {
        alive[node.index] = false
        armedTimer[node.index] = .max
    }

    /// Revives a killed node; it keeps its state (or takes `replacement`), then its
    /// `handleRestart(now:)` runs.
    public mutating func revive(_ node: SimNodeID, replacingWith replacement: Node? = nil) {
        let index = node.index
        if let replacement { nodes[index] = replacement }
        alive[index] = true
        armedTimer[index] = .max
        nodes[index].handleRestart(now: now)
        service(index)
    }

    /// Splits the network into groups; nodes not listed form one more group.
    public mutating func partition(_ groups: [[SimNodeID]]) {
        precondition(groups.count < Int(UInt16.max), "too many partition groups")
        for index in group.indices { group[index] = 0 }
        for (number, members) in groups.enumerated() {
            for member in members { group[member.index] = UInt16(number + 1) }
        }
    }

    /// Cuts every link between the nodes of `a` and those of `b`, both ways, until ``heal()``.
    /// Traffic inside each set, and between either set and the other nodes, still flows.
    /// A node in both sets is cut from every other node of either set.
    public mutating func cut(_ a: [SimNodeID], _ b: [SimNodeID]) {
        var sides = [UInt8](repeating: 0, count: nodes.count)
        for node in a { sides[node.index] |= 1 }
        for node in b { sides[node.index] |= 2 }
        cuts.append(sides)
    }

    /// Removes every partition and every cut.
    public mutating func heal() {
        for index in group.indices { group[index] = 0 }
        cuts.removeAll()
    }

    /// Whether a partition or a cut drops messages from `from` to `to` now.
    public func isSeparated(_ from: SimNodeID, _ to: SimNodeID) -> Bool {
        separated(from.index, to.index)
    }

    @inline(__always)
    private func separated(_ from: Int, _ to: Int) -> Bool {
        if group[from] != group[to] { return true }
        for sides in cuts {
            let s = sides[from], t = sides[to]
            if s != 0, t != 0, s | t == 3, from != to { return true }
        }
        return false
    }

    /// Schedules a partition into `groups` at `start` that heals `duration` later (the heal
    /// removes every other partition and cut too).
    public mutating func schedulePartition(_ groups: [[SimNodeID]], at start: SimInstant, for duration: SimDuration) {
        schedule(.partition(groups), at: start)
        schedule(.heal, at: start + duration)
    }

    /// Overrides the directed link `from → to`; nil restores the default link.
    public mutating func setLink(from: SimNodeID, to: SimNodeID, _ link: SimLink?) {
        let key = Self.pairKey(from.index, to.index)
        if let link {
            linkOverrides[key] = LinkOverride(link: link, freeAt: linkOverrides[key]?.freeAt ?? 0)
        } else {
            linkOverrides[key] = nil
        }
    }

    /// Overrides both directions between two nodes.
    public mutating func setLinkBothWays(_ a: SimNodeID, _ b: SimNodeID, _ link: SimLink?) {
        setLink(from: a, to: b, link)
        setLink(from: b, to: a, link)
    }

    /// Makes a node's outgoing messages corrupt with `probability` (0 stops it).
    public mutating func setCorrupting(_ node: SimNodeID, probability: Double) {
        corruptionProbability[node.rawValue] = probability > 0 ? probability : nil
    }

    /// Applies a fault now.
    public mutating func apply(_ fault: SimFault) {
        switch fault {
        case .kill(let node): kill(node)
        case .revive(let node): revive(node)
        case .partition(let groups): partition(groups)
        case .cut(let a, let b): cut(a, b)
        case .heal: heal()
        case .setLink(let from, let to, let link): setLink(from: from, to: to, link)
        case .corrupt(let node, let probability): setCorrupting(node, probability: probability)
        }
    }

    /// Applies a fault at virtual time `time` (or now, if `time` has passed).
    public mutating func schedule(_ fault: SimFault, at time: SimInstant) {
        faults.append(fault)
        push(time: max(time, now).nanoseconds, kind: .fault, target: 0, source: 0, payload: UInt32(faults.count - 1))
    }

    /// Runs an arbitrary change at virtual time `time`, e.g. starting a fetch on a node.
    public mutating func schedule(at time: SimInstant, _ action: @escaping (inout Simulator<Node>) -> Void) {
        actions.append(action)
        push(time: max(time, now).nanoseconds, kind: .action, target: 0, source: 0, payload: UInt32(actions.count - 1))
    }

    // MARK: Running

    /// The time of the next pending event, if any.
    public var nextEventTime: SimInstant? { queue.first.map { SimInstant(nanoseconds: $0.time) } }

    /// Processes every event up to and including `deadline`, then sets the clock to `deadline`.
    ///
    /// - Parameters:
    ///   - deadline: the virtual time to reach.
    ///   - maxEvents: a bound against runaway loops.
    /// - Returns: `.reachedDeadline`, or `.budgetExhausted` if `maxEvents` ran out first.
    @discardableResult
    public mutating func drive(until deadline: SimInstant, maxEvents: UInt64 = 50_000_000) -> SimRunOutcome {
        var budget = maxEvents
        while let next = queue.first, next.time <= deadline.nanoseconds {
            if budget == 0 { return .budgetExhausted(events: maxEvents) }
            budget -= 1
            step()
        }
        if deadline > now { now = deadline }
        return .reachedDeadline
    }

    /// Advances the clock by `duration`, processing every event on the way.
    @discardableResult
    public mutating func drive(for duration: SimDuration, maxEvents: UInt64 = 50_000_000) -> SimRunOutcome {
        drive(until: now + duration, maxEvents: maxEvents)
    }

    /// Processes events until none is left, or `maxEvents` have run.
    @discardableResult
    public mutating func runUntilIdle(maxEvents: UInt64 = 10_000_000) -> SimRunOutcome {
        var budget = maxEvents
        while !queue.isEmpty {
            if budget == 0 { return .budgetExhausted(events: maxEvents) }
            budget -= 1
            step()
        }
        return .idle
    }

    /// Processes one event. Returns false when there is none.
    @discardableResult
    public mutating func step() -> Bool {
        guard let event = queue.pop() else { return false }
        if event.time > now.nanoseconds { now = SimInstant(nanoseconds: event.time) }
        stats.events += 1
        switch event.kind {
        case .deliver:
            deliver(event)
        case .timer:
            let index = Int(event.target)
            guard alive[index], armedTimer[index] == event.time else { break }
            armedTimer[index] = .max
            stats.timersFired += 1
            nodes[index].handleTimeout(now: now)
            service(index)
        case .fault:
            stats.faultsApplied += 1
            apply(faults[Int(event.payload)])
        case .action:
            stats.faultsApplied += 1
            if let action = actions[Int(event.payload)] {
                actions[Int(event.payload)] = nil
                action(&self)
            }
        }
        return true
    }

    // MARK: Internals

    @inline(__always)
    private static func pairKey(_ from: Int, _ to: Int) -> UInt64 { UInt64(from) << 32 | UInt64(to) }

    private mutating func push(time: UInt64, kind: SimEvent.Kind, target: UInt32, source: UInt32, payload: UInt32) {
        sequence += 1
        queue.push(SimEvent(time: time, sequence: sequence, target: target, source: source, payload: payload, kind: kind))
    }

    /// Drains a node's output and re-arms its timer.
    private mutating func service(_ index: Int) {
        guard alive[index] else { return }
        var sent = 0
        while sent < maxTransmitsPerPoll, let transmit = nodes[index].pollTransmit(now: now) {
            self.transmit(from: index, transmit)
            sent += 1
        }
        if let deadline = nodes[index].pollTimeout() {
            let time = max(deadline.nanoseconds, now.nanoseconds)
            if armedTimer[index] != time {
                armedTimer[index] = time
                push(time: time, kind: .timer, target: UInt32(index), source: UInt32(index), payload: 0)
            }
        } else {
            armedTimer[index] = .max
        }
    }

    private mutating func transmit(from: Int, _ transmit: SimTransmit<Node.Message>) {
        let to = transmit.to.index
        precondition(to < nodes.count, "message to unknown node \(transmit.to)")
        stats.sent += 1
        stats.bytesSent += UInt64(max(0, transmit.size))
        // A partition or cut loses what is sent across it (the cable is down when it leaves).
        if separated(from, to) {
            stats.droppedPartition += 1
            return
        }
        let key = Self.pairKey(from, to)
        var override = linkOverrides[key]
        let link = override?.link ?? defaultLink

        // Serialization and the sender's queue.
        let start = now.nanoseconds
        var departure = start
        if link.bandwidthBitsPerSecond > 0 {
            let freeAt = override?.freeAt ?? uplinkFreeAt[from]
            let queued = max(freeAt, start)
            if queued - start > link.maxQueueDelay.nanoseconds {
                stats.droppedQueue += 1
                return
            }
            let bits = UInt64(max(0, transmit.size)) * 8
            let serialization = bits * 1_000_000_000 / link.bandwidthBitsPerSecond
            departure = queued + serialization
            if override != nil {
                override!.freeAt = departure
                linkOverrides[key] = override
            } else {
                uplinkFreeAt[from] = departure
            }
        }

        if link.loss > 0 && random.nextUnitDouble() < link.loss {
            stats.droppedLoss += 1
            return
        }

        var message = transmit.message
        if let probability = corruptionProbability[UInt32(from)], random.nextUnitDouble() < probability {
            stats.corrupted += 1
            guard corrupt != nil else { return }
            corrupt!(&message, &random)
        }

        var latency: UInt64
        if override == nil, case .perPair(let function) = latencyModel {
            latency = function(SimNodeID(from), transmit.to).nanoseconds
        } else {
            latency = link.latency.nanoseconds
        }
        if link.jitter.nanoseconds > 0 { latency += random.next() % (link.jitter.nanoseconds + 1) }

        let slot: UInt32
        if let free = freeMessageSlots.popLast() {
            slot = free
            messages[Int(free)] = message
        } else {
            slot = UInt32(messages.count)
            messages.append(message)
        }
        push(time: departure + latency, kind: .deliver, target: UInt32(to), source: UInt32(from), payload: slot)
    }

    private mutating func deliver(_ event: SimEvent) {
        let slot = Int(event.payload)
        guard let message = messages[slot] else { return }
        messages[slot] = nil
        freeMessageSlots.append(event.payload)
        let to = Int(event.target)
        let from = Int(event.source)
        guard alive[to] else {
            stats.droppedDeadNode += 1
            return
        }
        guard !separated(from, to) else {
            stats.droppedPartition += 1
            return
        }
        stats.delivered += 1
        onDeliver?(SimNodeID(from), SimNodeID(to), message, now)
        nodes[to].handle(message: message, from: SimNodeID(from), now: now)
        service(to)
    }
}

@available(*, unavailable)
extension Simulator: Sendable {}
