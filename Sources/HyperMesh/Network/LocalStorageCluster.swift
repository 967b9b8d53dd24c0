import Foundation
import NIOConcurrencyHelpers
import Nexus
import STOQIdentity
import STOQNode
import STOQTransport

/// Real storage nodes in this process on `[::1]`: one throwaway CA, and per node a certificate,
/// a chunk store and a shard directory in a temporary directory, each running a ``StorageService``
/// on its own QUIC endpoint. For integration tests and the end-to-end benchmark (`stoq bench block`).
public final class LocalStorageCluster: Sendable {
    /// One running node.
    public struct Member: Sendable {
        /// The node.
        public let node: Node
        /// Its storage service.
        public let service: StorageService
        /// Nexus on the node (clusters started with `dht: true`).
        public let nexus: NexusNode?
        /// Its serving task.
        let serving: Task<Void, Never>
        /// Its address.
        public var address: PeerAddress { node.address }
    }

    /// The temporary directory.
    public let directory: String
    /// The network CA.
    public let ca: CertificateAuthority
    /// The CA certificate path.
    public let caPath: String
    /// The nodes, in start order.
    public let members: [Member]
    private let stopped = StoppedSet()

    /// The DHT settings of the cluster's nodes and of ``nexusClient(name:)``: a 5 s request
    /// timeout instead of 1 s. Sixteen nodes and a client share one process on a machine that may
    /// be starved (two busy loops beside a test suite left a request unanswered for over a second,
    /// and a lookup that counts live nodes as failed finds too few providers); here a timeout must
    /// mean a dead node, as the block client's timeouts do.
    public static let dhtConfiguration: DHTConfiguration = {
        var configuration = DHTConfiguration()
        configuration.requestTimeout = 5_000
        return configuration
    }()

    /// Starts `count` storage nodes spread round-robin over `regions` regions.
    /// - Parameters:
    ///   - wrap: replaces node `i`'s service (tests use it to run misbehaving nodes).
    ///   - dht: run Nexus on every node too: all join through node 0, then each publishes its
    ///     signed node record and announces itself a provider of ``StorageDiscovery/providerKey``
    ///     (publishing after every join, so each provider record lands on the final closest nodes).
    public static func start(
        count: Int, regions: Int = 4, name: String = "mesh", wrap: (@Sendable (Int, StorageService) -> any NodeService)? = nil,
        dht: Bool = false
    ) async throws -> LocalStorageCluster {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = try CertificateAuthority.create(commonName: "STOQ HyperMesh test CA")
        let caPath = try ca.write(to: directory).certificate
        var members: [Member] = []
        do {
            for i in 0..<count {
                let nodeName = "\(name)-\(i)"
                let region = "region-\(i % max(regions, 1))"
                let credentials = try ca.issue(name: nodeName, region: region, dnsNames: ["localhost"], ipAddresses: ["::1"])
                let paths = try credentials.write(to: directory, name: nodeName)
                let configuration = NodeConfiguration(
                    name: nodeName, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
                    ca: caPath, store: (directory as NSString).appendingPathComponent("\(nodeName)-store"), roles: ["storage"],
                    region: region, idleTimeoutSeconds: 30)
                let service = try StorageService.load(
                    directory: (directory as NSString).appendingPathComponent("\(nodeName)-shards"), keyPath: paths.key, region: region)
                if dht {
                    let nexus = try await NexusNode.start(
                        configuration, dht: Self.dhtConfiguration, services: [wrap?(i, service) ?? service], serviceKeys: [StorageDiscovery.providerKey])
                    members.append(Member(node: nexus.node, service: service, nexus: nexus, serving: Task { await nexus.run() }))
                } else {
                    let node = try await Node.start(configuration, services: [wrap?(i, service) ?? service])
                    members.append(Member(node: node, service: service, nexus: nil, serving: Task { await node.run() }))
                }
            }
            if dht, let seed = members.first?.address {
                // All at once: one after another, 16 nodes took 174 s of a loaded 2-core machine
                // to join and publish (each step mostly handshakes), holding a single core.
                // Every join goes through the seed, which learns each joiner, so the publishes
                // that follow (after every join) still reach the final closest nodes.
                let nexuses = members.compactMap(\.nexus)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for nexus in nexuses.dropFirst() { group.addTask { _ = try await nexus.join([seed]) } }
                    try await group.waitForAll()
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for nexus in nexuses { group.addTask { _ = try await nexus.publish() } }
                    try await group.waitForAll()
                }
            }
        } catch {
            for m in members {
                let node = m.node
                await m.nexus?.dht.stop()
                _ = try? await deadline(.seconds(10), "closing \(node.configuration.name)") { await node.close() }
            }
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        return LocalStorageCluster(directory: directory, ca: ca, caPath: caPath, members: members)
    }

    private init(directory: String, ca: CertificateAuthority, caPath: String, members: [Member]) {
        self.directory = directory
        self.ca = ca
        self.caPath = caPath
        self.members = members
    }

    /// Every node's address.
    public var addresses: [PeerAddress] { members.map(\.address) }

    /// The member whose node id is `node`.
    public func member(_ node: MeshNodeID) -> Member? { members.first { $0.service.node == node } }

    /// Stops node `index` (its endpoint closes; peers see the connection end).
    ///
    /// Waits at most 10 s for the node to close and does not wait for its serving task: a
    /// request handler still draining must not hold up the caller (the task ends on its own).
    public func stop(_ index: Int) async {
        guard stopped.insert(index) else { return }
        let node = members[index].node
        await members[index].nexus?.dht.stop()
        _ = try? await deadline(.seconds(10), "closing \(node.configuration.name)") { await node.close() }
    }

    /// Issues a client identity and opens a ``BlockClient`` on it.
    /// - Parameters:
    ///   - blocks: the block directory (default: a fresh one inside the cluster's directory).
    ///   - timeouts: connect and request timeouts. Generous by default, since tests run beside
    ///     many others on two cores and a timeout here must mean a dead node, not a busy machine:
    ///     a handshake on `[::1]` takes milliseconds (16 nodes discovered in 0.2 s at load 15), so
    ///     10 s is a wide margin, and it is what each dead node costs an operation (the client
    ///     remembers an address it could not dial and does not wait for it again).
    public func client(
        name: String = "client", blocks: String? = nil, timeouts: (connect: Duration, request: Duration) = (.seconds(10), .seconds(60))
    ) async throws -> BlockClient {
        let credentials = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"])
        let tls = TLSConfiguration(
            certificateChainPEM: credentials.certificateChainPEM, privateKeyPEM: credentials.privateKeyPEM, trustRootsPEM: ca.certificatePEM)
        let directory = try BlockDirectory(path: blocks ?? (self.directory as NSString).appendingPathComponent("\(name)-blocks"))
        return try await BlockClient.connect(tls: tls, directory: directory, connectTimeout: timeouts.connect, requestTimeout: timeouts.request)
    }

    /// Opens a ``NexusClient`` joined through node 0 (clusters started with `dht: true`), on a
    /// fresh identity issued by the cluster's CA.
    public func nexusClient(name: String = "dht-client") async throws -> NexusClient {
        let credentials = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"])
        let paths = try credentials.write(to: directory, name: name)
        return try await NexusClient.connect(seeds: [addresses[0]], certificate: paths.certificate, key: paths.key, ca: caPath, dht: Self.dhtConfiguration)
    }

    /// Stops every node and removes the directory.
    public func close() async {
        for i in members.indices { await stop(i) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Indices of stopped members (checked `Sendable`: the set lives in a locked box).
final class StoppedSet: Sendable {
    private let set = NIOLockedValueBox(Set<Int>())
    func insert(_ i: Int) -> Bool { set.withLockedValue { $0.insert(i).inserted } }
}
