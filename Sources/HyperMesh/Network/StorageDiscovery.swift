import Foundation
import Nexus
import STOQNode

/// Finding storage nodes through Nexus: a storage node that runs the DHT announces itself a
/// provider of ``providerKey`` (the DHT only stores a provider record from the provider itself);
/// a client looks the providers up and hands their addresses to ``BlockClient/discover(_:)``,
/// which asks each node for its id, region and space over its certificate as before.
public enum StorageDiscovery {
    /// The well-known DHT key storage nodes provide: SHA-256 of "hypermesh/storage".
    public static let providerKey: NexusID = NexusHash.sha256(Array("hypermesh/storage".utf8))

    /// The storage providers the DHT knows of.
    /// - Returns: each provider's node record (id, addresses, region), in the order found.
    /// - Throws: `.notFound` when no provider is announced; `.unreachable` when the lookup fails.
    public static func providers(via client: NexusClient) async throws(HyperMeshError) -> [NodeRecord] {
        let result: LookupResult
        do {
            result = try await client.dht.lookup(.providers, target: providerKey)
        } catch {
            throw HyperMeshError(.unreachable, "the Nexus lookup of storage providers failed: \(error.reason)")
        }
        guard !result.providers.isEmpty else {
            throw HyperMeshError(.notFound, "no storage node is announced in the DHT (asked \(result.messages) nodes); start storage nodes with `stoq node --role storage --dht --bootstrap ADDR`, or pass --nodes")
        }
        return result.providers
    }

    /// The addresses of the storage providers the DHT knows of (the first address of each).
    public static func addresses(via client: NexusClient) async throws(HyperMeshError) -> [PeerAddress] {
        try await providers(via: client).compactMap { $0.addresses.first?.peerAddress }
    }
}
