import Foundation
import Nexus
import STOQSimulation
import STOQNode
import STOQTransport
import Testing

@testable import HyperMesh

/// HyperMesh finding its storage nodes through Nexus over real QUIC on [::1]: storage nodes that
/// also run the DHT announce themselves providers of ``StorageDiscovery/providerKey``; a client that
/// knows only the bootstrap node looks them up and places a block on them.
@Suite(.serialized, .timeLimit(.minutes(2))) struct DHTDiscoveryTests {
    @Test func putGivenOnlyTheBootstrapFindsSixteenStorageNodesThroughTheDHT() async throws {
        let seed = UInt64.random(in: 0 ... .max)
        print("dht discovery seed \(seed)")
        let cluster = try await LocalStorageCluster.start(count: 16, regions: 4, name: "mesh-dht", dht: true)
        do {
            let bootstrap = cluster.addresses[0]
            let nexus = try await cluster.nexusClient()
            let found: [NodeRecord]
            do {
                found = try await StorageDiscovery.providers(via: nexus)
            } catch {
                await nexus.close()
                throw error
            }
            await nexus.close()
            // Every storage node, with its address and region from its own announcement.
            #expect(Set(found.map(\.id)).count == 16)
            let addresses = found.compactMap { $0.addresses.first?.peerAddress }
            #expect(Set(addresses) == Set(cluster.addresses), "found through \(bootstrap): \(addresses)")
            #expect(Set(found.map(\.region)) == Set((0..<4).map { "region-\($0)" }))

            let client = try await cluster.client()
            do {
                let (nodes, failures) = await client.discover(addresses)
                #expect(nodes.count == 16 && failures.isEmpty)
                let content = randomBytes(250_000 + Int(seed % 5000), seed: seed)
                let put = try await client.put(content, nodes: nodes, fileName: "dht.bin")
                #expect(put.record.holders.count == 14)
                #expect(Set(put.record.holders.map(\.node)).count == 14, "shards on distinct nodes")
                #expect(Set(put.record.holders.map(\.address)).isSubset(of: Set(addresses.map(\.description))))
                let back = try await client.get(put.block)
                #expect(back.content == content, "seed \(seed)")
            } catch {
                await client.close()
                throw error
            }
            await client.close()
        } catch {
            await cluster.close()
            throw error
        }
        await cluster.close()
    }
}
