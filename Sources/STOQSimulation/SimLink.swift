/// The properties of a (directed) simulated link.
///
/// A message of `size` bytes sent over a link leaves after the sender's queue drains and its
/// own serialization delay (`size * 8 / bandwidthBitsPerSecond`), then arrives after
/// `latency` plus a uniform jitter in `0 ... jitter`. It is lost with probability `loss`,
/// and dropped when it would wait in the queue longer than `maxQueueDelay`.
public struct SimLink: Sendable, Equatable {
    /// One-way propagation delay (used unless a latency model gives a per-pair value).
    public var latency: SimDuration
    /// Upper bound of the uniformly distributed extra delay added to each message.
    public var jitter: SimDuration
    /// Serialization rate in bits per second; `0` means unlimited (no serialization delay).
    public var bandwidthBitsPerSecond: UInt64
    /// Probability in `0 ... 1` that a message is lost.
    public var loss: Double
    /// Longest time a message may wait in the sender's queue before it is dropped (tail drop).
    public var maxQueueDelay: SimDuration

    /// Creates a link description.
    public init(
        latency: SimDuration = .milliseconds(10),
        jitter: SimDuration = .zero,
        bandwidthBitsPerSecond: UInt64 = 0,
        loss: Double = 0,
        maxQueueDelay: SimDuration = .seconds(10)
    ) {
        self.latency = latency
        self.jitter = jitter
        self.bandwidthBitsPerSecond = bandwidthBitsPerSecond
        self.loss = loss
        self.maxQueueDelay = maxQueueDelay
    }

    /// A link that loses everything (a cut cable).
    public static let cut = SimLink(latency: .zero, loss: 1)
}

/// How the simulator picks the propagation latency between two nodes.
public enum SimLatencyModel {
    /// Every pair uses the latency of the default link.
    case uniform
    /// A per-pair one-way latency, e.g. from a geographic model. Must be deterministic.
    case perPair((SimNodeID, SimNodeID) -> SimDuration)
}

/// A fault (or change of conditions) the simulator applies at a scheduled virtual time.
public enum SimFault: Sendable, Equatable {
    /// The node stops: it receives nothing and its timers do not fire.
    case kill(SimNodeID)
    /// A killed node comes back with its state as it was (its `handleRestart(now:)` runs).
    case revive(SimNodeID)
    /// Splits the network: messages between nodes of different groups are dropped, both those
    /// sent while it lasts and those already in flight when it starts. Nodes not listed form one
    /// more group together.
    case partition([[SimNodeID]])
    /// Cuts every link between two sets of nodes, both ways, while the nodes of each set still
    /// reach each other and everyone else (a partition that need not split the whole network,
    /// e.g. an origin cut off from its edges while their readers still reach the edges).
    /// Cuts add up until `heal`.
    case cut([SimNodeID], [SimNodeID])
    /// Removes every partition and every cut.
    case heal
    /// Overrides the directed link `from → to` (nil restores the default).
    case setLink(from: SimNodeID, to: SimNodeID, link: SimLink?)
    /// Messages sent by the node are corrupted with this probability (0 stops it).
    /// The simulator's `corrupt` closure does the corrupting.
    case corrupt(SimNodeID, probability: Double)
}

/// Counters of what happened during a run.
public struct SimStats: Sendable, Equatable {
    /// Events processed (deliveries, timers, faults, actions).
    public var events: UInt64 = 0
    /// Messages handed to the network.
    public var sent: UInt64 = 0
    /// Bytes handed to the network.
    public var bytesSent: UInt64 = 0
    /// Messages delivered to a live node.
    public var delivered: UInt64 = 0
    /// Messages lost to random loss.
    public var droppedLoss: UInt64 = 0
    /// Messages dropped by a partition or a cut (when sent, or in flight when it started).
    public var droppedPartition: UInt64 = 0
    /// Messages addressed to a dead node.
    public var droppedDeadNode: UInt64 = 0
    /// Messages dropped because the sender's queue was too long.
    public var droppedQueue: UInt64 = 0
    /// Messages corrupted in flight.
    public var corrupted: UInt64 = 0
    /// Timer callbacks run.
    public var timersFired: UInt64 = 0
    /// Scheduled faults and actions applied.
    public var faultsApplied: UInt64 = 0

    /// Creates zeroed counters.
    public init() {}
}

/// Why `drive(until:)` or `runUntilIdle(maxEvents:)` returned.
public enum SimRunOutcome: Sendable, Equatable {
    /// No event is left: every node is quiet and nothing is in flight.
    case idle
    /// Virtual time reached the requested deadline.
    case reachedDeadline
    /// The event budget ran out first: probably a runaway loop (or a budget too small).
    case budgetExhausted(events: UInt64)
}
