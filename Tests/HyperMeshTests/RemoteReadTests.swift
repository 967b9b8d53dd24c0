import Crypto
import Foundation
import STOQNode
import Testing

@testable import HyperMesh

/// A block read from its id alone, by a client with another block directory (no record): the
/// manifest from its replicas, the holders from their signed HOLDINGS answers (real QUIC on [::1]).
/// Runs with `STOQ_LONG=1`: `make test` covers the same read with the release binary in
/// Tests/Journeys/test_hypermesh.py (`test_block_read_from_another_block_directory`), which keeps
/// the 30-minute CI budget.
@Suite(.serialized, .timeLimit(.minutes(2)), .enabled(if: ProcessInfo.processInfo.environment["STOQ_LONG"] != nil)) struct RemoteReadTests {
    @Test func anotherDirectoryReadsABlockSealedForItsReaderKey() async throws {
        try await withCluster(count: 15, regions: 4) { cluster, writer in
            let elsewhere = try await cluster.client(name: "elsewhere")
            let stranger = try await cluster.client(name: "stranger")
            defer { Task { await elsewhere.close(); await stranger.close() } }
            let (nodes, _) = await writer.discover(cluster.addresses)
            let content = randomBytes(250_000, seed: 11)
            let put = try await writer.put(content, nodes: nodes, readers: [elsewhere.reader.publicKey])
            #expect(try put.record.decodedManifest().readers.count == 2)
            #expect(!elsewhere.directory.contains(put.block))

            // Each holder answers HOLDINGS with a receipt that verifies against the manifest.
            let holder = try #require(put.record.locatedHolders().first)
            let answer = try await elsewhere.peer(holder.address).holdings(block: put.block)
            #expect(answer.map(\.shardIndex) == [holder.shard])
            #expect(answer.first?.verify(against: try put.record.decodedManifest(), expectedNode: holder.node) == .valid)

            let found = try await elsewhere.locate(put.block, nodes: cluster.addresses)
            #expect(found.first?.shardsFound == 14)
            #expect((found.first?.manifestReplicas.count ?? 0) >= 2)
            let read = try await elsewhere.get(put.block, from: cluster.addresses)
            #expect(read.content == content)
            let verified = try await elsewhere.verify(put.block, from: cluster.addresses)
            #expect(verified.located && verified.lost.isEmpty && verified.checks.count == 14)

            // Another directory takes the block on (no reader key needed): its record is saved
            // there, and the local verify reads each shard whole, then prepares challenges.
            let adopted = try await stranger.adopt(put.block, from: cluster.addresses)
            #expect(adopted.holders.count == 14 && stranger.directory.contains(put.block))
            #expect(try await stranger.verify(put.block).lost.isEmpty)
            #expect(try stranger.directory.record(put.block).challenges.count == 14 * stranger.challengesPerShard)

            // Two holders down: still read from the rest.
            for h in put.record.locatedHolders().prefix(2) {
                if let i = cluster.members.firstIndex(where: { $0.service.node == h.node }) { await cluster.stop(i) }
            }
            #expect(try await elsewhere.get(put.block, from: cluster.addresses).content == content)
            let degraded = try await elsewhere.verify(put.block, from: cluster.addresses)
            #expect(degraded.lost.count == 2 && degraded.unplaced.count == 2, "\(degraded.lost)")

            // A directory whose reader key the block is not sealed for: a clear error, saying what to do.
            do {
                _ = try await stranger.get(put.block, from: cluster.addresses)
                Issue.record("a reader the block is not sealed for read it")
            } catch let error as HyperMeshError {
                #expect(error.code == .noReaderKey)
                #expect(error.reason.contains("reader.key") && error.reason.contains("stoq block put --reader"), "\(error.reason)")
            }
            // No storage node keeps a block that was never stored.
            await #expect(throws: HyperMeshError.self) {
                _ = try await elsewhere.get(BlockID.hashing([1, 2, 3]), from: cluster.addresses)
            }
        }
    }
}
