/// A peer went down or came back (DESIGN.md §5 "Health").
public struct PeerHealthChange: Sendable, Hashable, CustomStringConvertible {
    /// The peer.
    public var peer: PeerAddress
    /// Its new state.
    public var isUp: Bool

    /// Creates a change.
    public init(peer: PeerAddress, isUp: Bool) {
        self.peer = peer
        self.isUp = isUp
    }

    public var description: String { "\(peer) \(isUp ? "up" : "down")" }
}
