import NIOConcurrencyHelpers
import NIOCore

/// What the sockets of one ``Endpoint`` share when it runs several (``EndpointConfiguration/eventLoops``
/// above 1): the Retry and stateless-reset secrets, the streams the application reads, and the
/// table saying which socket's event loop owns each connection ID.
///
/// Every socket is bound to the same address and port with `SO_REUSEPORT`; the kernel hashes a
/// datagram's 4-tuple to one of them. A datagram whose destination connection ID belongs to a
/// connection of another loop (after the client migrated or a NAT rebound its port, or because
/// the connection was placed on the least-loaded loop) is handed to that loop. A Retry token
/// made by one socket verifies at any other, and every loop derives stateless-reset tokens from
/// the same secret.
///
/// Thread-safe: the table is behind a lock, taken when a connection ID is issued or retired, when
/// a connection starts or ends, and for a datagram whose ID its own loop does not know.
final class EndpointShared: Sendable {
    /// Number of sockets (event loops).
    let count: Int
    /// Secret of the Retry tokens (any socket verifies what any other issued).
    let retrySecret = NGTCP2Packet.randomBytes(32)
    /// Secret the stateless-reset tokens of every connection ID are derived from.
    let resetSecret = NGTCP2Packet.randomBytes(32)
    let incoming: AsyncStream<Connection>
    let incomingContinuation: AsyncStream<Connection>.Continuation
    let handshakeFailures: AsyncStream<STOQError>
    let handshakeFailureContinuation: AsyncStream<STOQError>.Continuation

    struct Table {
        /// Connection ID → index of the loop whose connection it is (only kept with count > 1).
        var owners: [ConnectionID: Int] = [:]
        /// Connections per loop, including ones assigned to a loop that has not created them yet.
        var load: [Int]
        /// Accepted connections per remote IPv6 address, all loops together.
        var perAddress: [IPv6Key: Int] = [:]
    }

    private let table: NIOLockedValueBox<Table>
    private let coresBox = NIOLockedValueBox<[EndpointCore]>([])

    init(count: Int) {
        self.count = count
        table = NIOLockedValueBox(Table(load: Array(repeating: 0, count: count)))
        (incoming, incomingContinuation) = AsyncStream.makeStream(of: Connection.self)
        (handshakeFailures, handshakeFailureContinuation) = AsyncStream.makeStream(
            of: STOQError.self, bufferingPolicy: .bufferingNewest(64))
    }

    /// Sets the loops' cores once they exist; `[]` on close breaks the reference cycle.
    func setCores(_ cores: [EndpointCore]) { coresBox.withLockedValue { $0 = cores } }

    func core(_ index: Int) -> EndpointCore? {
        coresBox.withLockedValue { index < $0.count ? $0[index] : nil }
    }

    // MARK: Connection IDs

    func owner(of cid: ConnectionID) -> Int? {
        table.withLockedValue { $0.owners[cid] }
    }

    func setOwner(_ cid: ConnectionID, _ index: Int) {
        guard count > 1 else { return }
        table.withLockedValue { $0.owners[cid] = index }
    }

    func clearOwner(_ cid: ConnectionID, _ index: Int) {
        guard count > 1 else { return }
        table.withLockedValue { t in
            if t.owners[cid] == index { t.owners[cid] = nil }
        }
    }

    // MARK: Load and limits

    /// Connections held (or being created) by all loops together.
    var totalConnections: Int { table.withLockedValue { $0.load.reduce(0) { $0 + ($1 >= Int.max / 4 ? 0 : $1) } } }

    func accepted(from key: IPv6Key) -> Int { table.withLockedValue { $0.perAddress[key, default: 0] } }

    /// Picks the loop for a new incoming connection whose first datagram reached loop `arrived`:
    /// the one holding fewest connections (ties keep `arrived`, which needs no hand-over). The
    /// connection is counted there at once, and its first connection ID routed there, so that
    /// further Initials reaching `arrived` follow it.
    func assign(arrived: Int, dcid: ConnectionID) -> Int {
        table.withLockedValue { t in
            var best = arrived
            for i in 0..<count where t.load[i] < t.load[best] { best = i }
            t.load[best] += 1
            if count > 1 { t.owners[dcid] = best }
            return best
        }
    }

    /// The loop a dialed connection goes to: the least loaded.
    func leastLoaded() -> Int {
        table.withLockedValue { t in
            var best = 0
            for i in 0..<count where t.load[i] < t.load[best] { best = i }
            return best
        }
    }

    /// A connection was created on loop `index` (accepted ones from `remote`). `counted`: the
    /// loop was already charged for it by ``assign(arrived:dcid:)``.
    func added(_ index: Int, remote: IPv6Key?, counted: Bool) {
        table.withLockedValue { t in
            if !counted { t.load[index] += 1 }
            if let remote { t.perAddress[remote, default: 0] += 1 }
        }
    }

    /// A connection of loop `index` ended, or an assigned one was never created.
    func removed(_ index: Int, remote: IPv6Key?) {
        table.withLockedValue { t in
            t.load[index] = max(0, t.load[index] - 1)
            if let remote {
                let left = t.perAddress[remote, default: 1] - 1
                t.perAddress[remote] = left > 0 ? left : nil
            }
        }
    }

    /// Loop `index` lost its socket for good: no new connection is placed there.
    func retire(_ index: Int) {
        table.withLockedValue { $0.load[index] = Int.max / 2 }
    }

    /// Connections per loop (for tests and stats).
    var loads: [Int] { table.withLockedValue { $0.load } }
}
