/// The router's name for a node: 64 bits, e.g. the first 8 bytes of the node's `NodeID`
/// (SHA-256 of its public key) or a simulator index.
///
/// The router keeps its per-node state in dense slots; this id is only the key that maps
/// to a slot, so it stays small and cheap to hash.
public struct RoutingNodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The 64-bit value.
    public let rawValue: UInt64

    /// Creates an id from its 64-bit value.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// Creates an id from the first 8 bytes (big-endian) of a longer node id.
    /// - Parameter bytes: at least 8 bytes, e.g. a SHA-256 `NodeID`.
    public init?(prefixOf bytes: some Collection<UInt8>) {
        guard bytes.count >= 8 else { return nil }
        var value: UInt64 = 0
        for byte in bytes.prefix(8) { value = value << 8 | UInt64(byte) }
        self.rawValue = value
    }

    public static func < (lhs: RoutingNodeID, rhs: RoutingNodeID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "r" + String(rawValue, radix: 16) }
}
