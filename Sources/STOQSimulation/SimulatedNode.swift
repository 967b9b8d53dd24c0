/// A sans-IO state machine that can run under the simulator.
///
/// The simulator feeds input with the `handle…` verbs and takes output with the `poll…`
/// verbs, the same shape the real QUIC adapter uses: after every input it drains
/// `pollTransmit(now:)` until it returns nil and then re-arms the node's timer from
/// `pollTimeout()`. Nodes are stored by value in one flat array, so keep them small for
/// very large runs.
public protocol SimulatedNode {
    /// The message type the nodes exchange.
    associatedtype Message

    /// A message from `from` arrived at virtual time `now`.
    mutating func handle(message: Message, from: SimNodeID, now: SimInstant)

    /// The deadline last returned by `pollTimeout()` has passed.
    mutating func handleTimeout(now: SimInstant)

    /// The next message to send, or nil when there is nothing more to send now.
    mutating func pollTransmit(now: SimInstant) -> SimTransmit<Message>?

    /// When the node next wants `handleTimeout(now:)`, or nil for never.
    func pollTimeout() -> SimInstant?

    /// The node was revived after a kill (default: nothing). Reset volatile state here.
    mutating func handleRestart(now: SimInstant)
}

extension SimulatedNode {
    /// Does nothing: a revived node keeps its state.
    public mutating func handleRestart(now: SimInstant) {}
}

/// A message a node wants to send.
public struct SimTransmit<Message> {
    /// The destination.
    public var to: SimNodeID
    /// The message itself.
    public var message: Message
    /// Its size on the wire in bytes (for serialization delay and queueing).
    public var size: Int

    /// Creates a transmit of `message` to `to` that occupies `size` bytes on the wire.
    public init(to: SimNodeID, message: Message, size: Int = 100) {
        self.to = to
        self.message = message
        self.size = size
    }
}

extension SimTransmit: Sendable where Message: Sendable {}
