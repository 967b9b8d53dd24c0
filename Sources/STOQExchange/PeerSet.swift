import Foundation
import Logging
import STOQTransport

/// Connections to a node's peers, dialled on first use and re-dialled after they fail.
///
/// A ``PeerHealthService`` marks peers down and up here as it happens; callers that choose among
/// peers (an edge's upstream, a fetch's sources) read that with ``isDown(_:)`` or order their
/// candidates with ``healthyFirst(_:)``. A down peer is still dialled when asked for: health can
/// be wrong under load, and a caller with no other peer is better served by trying.
///
/// With a relay (``init(endpoint:metrics:inbound:via:logger:)``), every other peer is reached
/// through it: the clients share the relay's connection and open each request stream with
/// RELAY_OPEN, so health probes travel the path the data takes.
public actor PeerSet {
    private let endpoint: Endpoint
    private var clients: [PeerAddress: PeerClient] = [:]
    private var dialing: [PeerAddress: Task<PeerClient, any Error>] = [:]
    private let logger: Logger
    private let metrics: NodeMetrics?
    private let inbound: (@Sendable (Connection) async -> Void)?
    private var connectHook: (@Sendable (PeerAddress, PeerClient) async -> Void)?
    /// The relay every other peer is reached through (nil: direct).
    public nonisolated let relay: PeerAddress?
    /// Peers the health monitor reports down.
    package nonisolated let downPeers = PeerMarks()

    /// Creates a peer set dialling through `endpoint`.
    /// - Parameters:
    ///   - metrics: where the clients it makes count received bytes and fetch times.
    ///   - inbound: serves the requests a peer sends back over a connection this set dialled (an
    ///     origin pushing invalidations to its edge); nil: such streams are not read.
    public init(endpoint: Endpoint, metrics: NodeMetrics? = nil, inbound: (@Sendable (Connection) async -> Void)? = nil, logger: Logger = Logger(label: "stoq.peers")) {
        self.endpoint = endpoint
        self.relay = nil
        self.metrics = metrics
        self.inbound = inbound
        self.logger = logger
    }

    /// Creates a peer set that reaches every peer other than `relay` through the relay node at
    /// `relay` (`stoq get --via`; nil: directly, as ``init(endpoint:metrics:inbound:logger:)``).
    public init(endpoint: Endpoint, via relay: PeerAddress?, metrics: NodeMetrics? = nil, logger: Logger = Logger(label: "stoq.peers")) {
        self.endpoint = endpoint
        self.relay = relay
        self.metrics = metrics
        self.inbound = nil
        self.logger = logger
    }

    /// Runs `hook` on every client this set makes from now on — each first dial and each re-dial
    /// after a connection was lost, direct or through the relay — before the client is handed to
    /// anyone (`stoq get --grant` presents its grant there, so a re-dialled connection carries it
    /// too). The hook's failures are its own: it should not throw or hang.
    public func onConnect(_ hook: @escaping @Sendable (PeerAddress, PeerClient) async -> Void) {
        connectHook = hook
    }

    /// A connected client for `address`, dialling if needed.
    public func client(for address: PeerAddress) async throws -> PeerClient {
        if let client = clients[address] { return client }
        if let relay, address != relay {
            let carrier = try await client(for: relay)
            if let client = clients[address] { return client }  // made while this one dialled the relay
            let client = PeerClient(relay: carrier.connection, to: address, metrics: metrics)
            if let connectHook {
                await connectHook(address, client)
                if let made = clients[address] { return made }  // made by another caller meanwhile
            }
            clients[address] = client
            forgetWhenClosed(address, client)
            return client
        }
        if let task = dialing[address] { return try await task.value }
        let endpoint = self.endpoint
        let metrics = self.metrics
        let hook = connectHook
        let task = Task {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            let client = PeerClient(connection: connection, name: address.description, metrics: metrics)
            // Callers that ask meanwhile wait for this task, so nothing goes out before the hook.
            await hook?(address, client)
            return client
        }
        dialing[address] = task
        defer { dialing[address] = nil }
        let client = try await task.value
        clients[address] = client
        forgetWhenClosed(address, client)
        if let inbound { Task { await inbound(client.connection) } }
        return client
    }

    /// Drops `client` from the set once its connection closes, so the next use of `address`
    /// dials again instead of getting a dead connection (a relay's targets, an edge's upstream).
    private func forgetWhenClosed(_ address: PeerAddress, _ client: PeerClient) {
        Task { [weak self] in
            _ = await client.connection.closed()
            await self?.forget(address, client)
        }
    }

    private func forget(_ address: PeerAddress, _ client: PeerClient) {
        if clients[address] === client { clients[address] = nil }
    }

    /// The address this set dialled `connection` to, or nil when it is not one of its connections.
    public func address(of connection: Connection) -> PeerAddress? {
        clients.first { $0.value.relayedTarget == nil && $0.value.connection === connection }?.key
    }

    /// Whether the health monitor reports `address` down.
    public nonisolated func isDown(_ address: PeerAddress) -> Bool { downPeers.contains(address) }

    /// `addresses` with the peers reported down moved to the end (order otherwise kept): the
    /// order in which to try upstream peers.
    public nonisolated func healthyFirst(_ addresses: [PeerAddress]) -> [PeerAddress] {
        addresses.filter { !isDown($0) } + addresses.filter { isDown($0) }
    }

    /// Peers with an open connection.
    public var connected: [PeerAddress] { Array(clients.keys) }

    /// The clients of the peers with an open connection (dials nothing).
    public var connectedClients: [PeerClient] { Array(clients.values) }

    /// Forgets a connection after a failure so the next use dials again.
    public func drop(_ address: PeerAddress) async {
        if let client = clients.removeValue(forKey: address), client.relayedTarget == nil {
            // A relayed client's connection is the relay's, shared with the others: keep it.
            await client.connection.close(code: 0, reason: "dropped")
        }
    }

    /// Closes every connection.
    public func closeAll() async {
        for (_, client) in clients where client.relayedTarget == nil { await client.connection.close() }
        clients.removeAll()
    }
}

/// A set of peer addresses readable without awaiting.
///
/// `@unchecked Sendable`: state behind `lock`.
package final class PeerMarks: @unchecked Sendable {
    private let lock = NSLock()
    private var marked = Set<PeerAddress>()
    package func contains(_ peer: PeerAddress) -> Bool { lock.withLock { marked.contains(peer) } }
    package func set(_ peer: PeerAddress, down: Bool) {
        lock.withLock { if down { marked.insert(peer) } else { marked.remove(peer) } }
    }
}
