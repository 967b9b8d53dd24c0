import Logging
import STOQTransport

/// Connections to a node's peers, dialled on first use and re-dialled after they fail.
public actor PeerSet {
    private let endpoint: Endpoint
    private var clients: [PeerAddress: PeerClient] = [:]
    private var dialing: [PeerAddress: Task<PeerClient, any Error>] = [:]
    private let logger: Logger
    private let inbound: (@Sendable (Connection) async -> Void)?

    /// Creates a peer set dialling through `endpoint`.
    /// - Parameter inbound: serves the requests a peer sends back over a connection this set
    ///   dialled (an origin pushing invalidations to its edge); nil: such streams are not read.
    public init(endpoint: Endpoint, inbound: (@Sendable (Connection) async -> Void)? = nil, logger: Logger = Logger(label: "stoq.peers")) {
        self.endpoint = endpoint
        self.inbound = inbound
        self.logger = logger
    }

    /// A connected client for `address`, dialling if needed.
    public func client(for address: PeerAddress) async throws -> PeerClient {
        if let client = clients[address] { return client }
        if let task = dialing[address] { return try await task.value }
        let endpoint = self.endpoint
        let task = Task {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            return PeerClient(connection: connection, name: address.description)
        }
        dialing[address] = task
        defer { dialing[address] = nil }
        let client = try await task.value
        clients[address] = client
        if let inbound { Task { await inbound(client.connection) } }
        return client
    }

    /// The address this set dialled `connection` to, or nil when it is not one of its connections.
    public func address(of connection: Connection) -> PeerAddress? {
        clients.first { $0.value.connection === connection }?.key
    }

    /// Forgets a connection after a failure so the next use dials again.
    public func drop(_ address: PeerAddress) async {
        if let client = clients.removeValue(forKey: address) {
            await client.connection.close(code: 0, reason: "dropped")
        }
    }

    /// Closes every connection.
    public func closeAll() async {
        for (_, client) in clients { await client.connection.close() }
        clients.removeAll()
    }
}
