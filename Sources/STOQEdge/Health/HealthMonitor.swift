import Collections

/// Probes peers and reports them down and up (sans-IO; DESIGN.md §5 "Health").
///
/// Every peer gets a probe every ``Configuration/interval``; a probe not answered within
/// ``Configuration/timeout`` is a failure, and ``Configuration/failureThreshold`` consecutive
/// failures mark the peer down. A down peer is still probed, and
/// ``Configuration/recoveryThreshold`` consecutive answered probes mark it up again. State
/// changes are emitted at once as ``Event``s; probes to send are ``Action``s. An answer that
/// arrives after its timeout is counted as late and does not count as a success, so a slow
/// link whose RTT exceeds the timeout is reported down, not flapping.
///
/// A peer that dies right after answering is reported down within
/// `interval × failureThreshold + timeout`.
///
/// Drive it like every STOQ state machine: feed ``handleProbeResponse(from:nonce:now:)`` and
/// ``handleTimeout(now:)`` (when ``pollTimeout()`` has passed), then drain ``pollAction()``
/// and ``pollEvent()``.
public struct HealthMonitor<Peer: Hashable & Sendable>: Sendable {
    /// Tuning; the defaults are DESIGN.md's.
    public struct Configuration: Sendable, Equatable {
        /// Time between probes of one peer, in nanoseconds (default 1 s).
        public var interval: UInt64
        /// How long to wait for an answer, in nanoseconds (default 100 ms). Must be below `interval`.
        public var timeout: UInt64
        /// Consecutive failures that mark a peer down (default 3).
        public var failureThreshold: Int
        /// Consecutive answers that mark a down peer up (default 1).
        public var recoveryThreshold: Int
        /// Weight of a new RTT sample in the moving average (default 1/8, as TCP's SRTT).
        public var rttWeight: Double
        /// Lateness of the runtime's own wake-ups (``HealthMonitor/handleSchedulingLag(_:now:)``)
        /// that is ordinary jitter and credits nothing (default 5 ms).
        public var lagTolerance: UInt64 = 5_000_000
        /// The most local scheduling lag that extends one probe's timeout (default 1 s): a node
        /// starved of CPU does not count an answer it could not read in time as a miss, but a
        /// peer that really stopped is still reported down, at most `failureThreshold` × this later.
        public var maxLagCredit: UInt64 = 1_000_000_000

        /// Creates a configuration.
        public init(interval: UInt64 = 1_000_000_000, timeout: UInt64 = 100_000_000, failureThreshold: Int = 3, recoveryThreshold: Int = 1, rttWeight: Double = 0.125) {
            precondition(timeout > 0 && timeout < interval, "HealthMonitor: need 0 < timeout < interval")
            precondition(failureThreshold >= 1 && recoveryThreshold >= 1, "HealthMonitor: thresholds are at least 1")
            precondition(rttWeight > 0 && rttWeight <= 1, "HealthMonitor: rttWeight is in (0, 1]")
            self.interval = interval
            self.timeout = timeout
            self.failureThreshold = failureThreshold
            self.recoveryThreshold = recoveryThreshold
            self.rttWeight = rttWeight
        }
    }

    /// Something to send.
    public enum Action: Sendable, Equatable {
        /// Send a probe (PING) carrying `nonce` to `peer`; feed its answer to ``handleProbeResponse(from:nonce:now:)``.
        case sendProbe(Peer, nonce: UInt64)
    }

    /// A change of a peer's state, for the scheduler and the router.
    public enum Event: Sendable, Equatable {
        /// The peer missed `failureThreshold` probes in a row.
        case peerDown(Peer)
        /// The peer answers again.
        case peerUp(Peer)
    }

    /// What the monitor knows about one peer.
    public struct PeerHealth: Sendable, Equatable {
        /// Whether the peer is considered up.
        public var isUp: Bool
        /// Probes unanswered in a row.
        public var consecutiveFailures: Int = 0
        /// Probes answered in a row.
        public var consecutiveSuccesses: Int = 0
        /// Probes sent.
        public var probesSent: UInt64 = 0
        /// Probes answered in time.
        public var answered: UInt64 = 0
        /// Probes that timed out.
        public var timeouts: UInt64 = 0
        /// Answers that came after their timeout (or with an unknown nonce).
        public var lateAnswers: UInt64 = 0
        /// Moving average of the RTT in nanoseconds (nil before the first answer).
        public var smoothedRTT: Double?
        /// The last RTT sample in nanoseconds.
        public var lastRTT: UInt64?
        /// When the state last changed (or the peer was added).
        public var since: UInt64
    }

    private struct Probe: Sendable {
        var nonce: UInt64
        var sentAt: UInt64
        /// ``HealthMonitor/lagTotal`` when it was sent: lag measured after that extends its timeout.
        var lagAtSend: UInt64
    }

    private struct PeerState: Sendable {
        var peer: Peer
        var health: PeerHealth
        var outstanding: Probe?
        var nextProbeAt: UInt64
        var generation: UInt64
    }

    private struct Deadline: Comparable, Sendable {
        var time: UInt64
        var slot: Int
        var generation: UInt64
        static func < (a: Deadline, b: Deadline) -> Bool { (a.time, a.slot) < (b.time, b.slot) }
    }

    /// Tuning.
    public let configuration: Configuration
    private var slots: [Peer: Int] = [:]
    private var states: [PeerState?] = []
    private var freeSlots: [Int] = []
    private var deadlines = Heap<Deadline>()
    private var nonceCounter: UInt64
    /// Global, so a reused slot never matches a stale deadline.
    private var generationCounter: UInt64 = 0
    private var actions = Deque<Action>()
    private var events = Deque<Event>()
    /// Local scheduling lag credited so far, nanoseconds (only differences are used).
    private var lagTotal: UInt64 = 0

    /// Creates a monitor with no peers.
    /// - Parameters:
    ///   - configuration: tuning.
    ///   - nonceSeed: first nonce (use a random value in production so nonces are not guessable).
    public init(configuration: Configuration = Configuration(), nonceSeed: UInt64 = 1) {
        self.configuration = configuration
        self.nonceCounter = nonceSeed
    }

    /// Starts probing a peer (the first probe goes out at once). A peer starts up.
    /// - Parameters:
    ///   - peer: the peer.
    ///   - now: the runtime's clock in nanoseconds.
    public mutating func addPeer(_ peer: Peer, now: UInt64) {
        guard slots[peer] == nil else { return }
        let slot = freeSlots.popLast() ?? states.count
        let state = PeerState(peer: peer, health: PeerHealth(isUp: true, since: now), outstanding: nil, nextProbeAt: now, generation: 0)
        if slot == states.count { states.append(state) } else { states[slot] = state }
        slots[peer] = slot
        sendProbe(slot: slot, now: now)
    }

    /// Stops probing a peer (no event is emitted).
    public mutating func removePeer(_ peer: Peer) {
        guard let slot = slots.removeValue(forKey: peer) else { return }
        states[slot] = nil
        freeSlots.append(slot)
        dropStaleDeadlines()
    }

    /// An answer to a probe arrived.
    /// - Parameters:
    ///   - peer: who answered.
    ///   - nonce: the nonce it echoed.
    ///   - now: the runtime's clock in nanoseconds.
    public mutating func handleProbeResponse(from peer: Peer, nonce: UInt64, now: UInt64) {
        guard let slot = slots[peer], var state = states[slot] else { return }
        guard let probe = state.outstanding, probe.nonce == nonce, now <= timeoutDeadline(probe) else {
            state.health.lateAnswers += 1
            states[slot] = state
            return
        }
        let rtt = now - probe.sentAt
        state.outstanding = nil
        state.health.answered += 1
        state.health.lastRTT = rtt
        if let srtt = state.health.smoothedRTT {
            state.health.smoothedRTT = srtt + configuration.rttWeight * (Double(rtt) - srtt)
        } else {
            state.health.smoothedRTT = Double(rtt)
        }
        state.health.consecutiveFailures = 0
        state.health.consecutiveSuccesses += 1
        if !state.health.isUp, state.health.consecutiveSuccesses >= configuration.recoveryThreshold {
            state.health.isUp = true
            state.health.since = now
            events.append(.peerUp(peer))
        }
        generationCounter += 1
        state.generation = generationCounter
        states[slot] = state
        deadlines.insert(Deadline(time: state.nextProbeAt, slot: slot, generation: state.generation))
        dropStaleDeadlines()
    }

    /// Processes every deadline that has passed: timeouts, then probes due.
    public mutating func handleTimeout(now: UInt64) {
        while let top = deadlines.min, top.time <= now {
            deadlines.removeMin()
            guard var state = states[top.slot], state.generation == top.generation else { continue }
            if let probe = state.outstanding, case let deadline = timeoutDeadline(probe), deadline > now, probe.sentAt &+ configuration.timeout <= top.time {
                // Local lag measured since the probe went out extends its timeout: check again then.
                deadlines.insert(Deadline(time: deadline, slot: top.slot, generation: top.generation))
                continue
            }
            if let probe = state.outstanding, probe.sentAt &+ configuration.timeout <= top.time {
                // The probe timed out.
                state.outstanding = nil
                state.health.timeouts += 1
                state.health.consecutiveSuccesses = 0
                state.health.consecutiveFailures += 1
                if state.health.isUp, state.health.consecutiveFailures >= configuration.failureThreshold {
                    state.health.isUp = false
                    state.health.since = top.time
                    events.append(.peerDown(state.peer))
                }
                generationCounter += 1
        state.generation = generationCounter
                states[top.slot] = state
                deadlines.insert(Deadline(time: state.nextProbeAt, slot: top.slot, generation: state.generation))
            } else {
                states[top.slot] = state
                sendProbe(slot: top.slot, now: max(now, state.nextProbeAt))
            }
        }
        dropStaleDeadlines()
    }

    /// The runtime measured that it ran `lateness` nanoseconds later than it asked to (its timer
    /// fired late, or a probe went out late): this node itself is starved of CPU, so an answer
    /// may be waiting unread. Every probe in flight gets the lateness beyond
    /// ``Configuration/lagTolerance``, and as much again to read the backlog, added to its
    /// timeout (at most ``Configuration/maxLagCredit`` per probe). Slowness here is not the
    /// peer's death. Call it before ``handleTimeout(now:)`` when a timer fires late.
    public mutating func handleSchedulingLag(_ lateness: UInt64, now: UInt64) {
        guard lateness > configuration.lagTolerance else { return }
        let excess = lateness - configuration.lagTolerance
        let (doubled, overflow) = excess.multipliedReportingOverflow(by: 2)
        let (total, wrapped) = lagTotal.addingReportingOverflow(overflow ? UInt64.max : doubled)
        lagTotal = wrapped ? UInt64.max : total
    }

    /// When ``handleTimeout(now:)`` should next run, or nil with no peers.
    public func pollTimeout() -> UInt64? { deadlines.min?.time }

    /// The next probe to send, or nil.
    public mutating func pollAction() -> Action? { actions.popFirst() }

    /// The next state change, or nil.
    public mutating func pollEvent() -> Event? { events.popFirst() }

    /// What the monitor knows about `peer`.
    public func health(of peer: Peer) -> PeerHealth? {
        slots[peer].flatMap { states[$0]?.health }
    }

    /// Whether `peer` is known and up.
    public func isUp(_ peer: Peer) -> Bool { health(of: peer)?.isUp ?? false }

    /// Peers being probed.
    public var peers: [Peer] { Array(slots.keys) }

    /// When `probe` times out: its timeout, plus the local lag credited since it was sent.
    private func timeoutDeadline(_ probe: Probe) -> UInt64 {
        let credit = min(lagTotal &- probe.lagAtSend, configuration.maxLagCredit)
        let (deadline, overflow) = probe.sentAt.addingReportingOverflow(configuration.timeout &+ credit)
        return overflow ? UInt64.max : deadline
    }

    private mutating func sendProbe(slot: Int, now: UInt64) {
        guard var state = states[slot] else { return }
        nonceCounter &+= 0x9E37_79B9_7F4A_7C15
        var nonce = nonceCounter
        nonce = (nonce ^ (nonce >> 30)) &* 0xBF58_476D_1CE4_E5B9
        nonce ^= nonce >> 31
        state.outstanding = Probe(nonce: nonce, sentAt: now, lagAtSend: lagTotal)
        state.health.probesSent += 1
        state.nextProbeAt = now &+ configuration.interval
        generationCounter += 1
        state.generation = generationCounter
        states[slot] = state
        actions.append(.sendProbe(state.peer, nonce: nonce))
        deadlines.insert(Deadline(time: now &+ configuration.timeout, slot: slot, generation: state.generation))
    }

    private mutating func dropStaleDeadlines() {
        while let top = deadlines.min {
            if let state = states[top.slot], state.generation == top.generation { return }
            deadlines.removeMin()
        }
    }
}
