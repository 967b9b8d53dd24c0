/// The address of a node in a simulated network: a dense index `0 ..< nodeCount`.
///
/// Dense indices keep per-node state in flat arrays, so a simulator holds a million nodes
/// without one heap object per node. `address` renders it as an IPv6 ULA for logs.
public struct SimNodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The node's index in the simulator.
    public let rawValue: UInt32

    /// Creates the id of node number `index`.
    public init(_ index: Int) {
        precondition(index >= 0 && index <= Int(UInt32.max), "SimNodeID index out of range: \(index)")
        self.rawValue = UInt32(index)
    }

    /// Creates the id from its raw value.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The node's index as an `Int`, for array access.
    @inlinable public var index: Int { Int(rawValue) }

    /// The node's simulated IPv6 address (in `fd00::/8`).
    public var address: String {
        "fd00::\(String(rawValue >> 16, radix: 16)):\(String(rawValue & 0xFFFF, radix: 16))"
    }

    public static func < (lhs: SimNodeID, rhs: SimNodeID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "n\(rawValue)" }
}
