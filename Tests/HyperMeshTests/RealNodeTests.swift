import Crypto
import Foundation
import NIOCore
import STOQNode
import STOQSimulation
import STOQTransport
import STOQWire
import STOQSimulation
import Testing

@testable import HyperMesh

/// A storage node that stores shards but signs its receipts with a key that is not its node key
/// (a forged receipt); everything else it answers honestly.
struct ForgingService: NodeService {
    let inner: StorageService
    let forger = P256.Signing.PrivateKey()
    var name: String { inner.name }
    var frameTypes: ClosedRange<UInt64> { inner.frameTypes }
    var maximumRequestLength: Int { inner.maximumRequestLength }
    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        guard case .putShard(let block, let index, let length, let hash)? = try? HyperMeshMessage.decode(request) else {
            return await inner.serve(request: request, remaining: remaining, stream: stream, connection: connection)
        }
        do {
            var body = Array(remaining.readableBytesView)
            while body.count < length, let more = try await stream.read() { body.append(contentsOf: more.readableBytesView) }
            try inner.store.put(block: block, index: index, bytes: body, hash: hash)
            let receipt = try StorageReceipt.sign(blockID: block, shardIndex: index, shardHash: hash, key: forger)
            try await stream.write(HyperMeshMessage.receipt(receipt).encoded())
            try await stream.finish()
        } catch {
            await stream.reset(code: 6)
        }
    }
}

/// Runs `body` with a started cluster and a client, closing both however it ends.
func withCluster(
    count: Int, regions: Int, wrap: (@Sendable (Int, StorageService) -> any NodeService)? = nil, box: ClusterBox? = nil,
    _ body: (LocalStorageCluster, BlockClient) async throws -> Void
) async throws {
    let cluster = try await LocalStorageCluster.start(count: count, regions: regions, wrap: wrap)
    box?.value = cluster
    do {
        let client = try await cluster.client()
        do {
            try await body(cluster, client)
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

/// A storage node that dies in the middle of its first PUT_SHARD: it reads part of the shard,
/// then its whole node is stopped (endpoint closed) without answering.
struct DyingService: NodeService {
    let inner: StorageService
    let index: Int
    let cluster: ClusterBox
    var name: String { inner.name }
    var frameTypes: ClosedRange<UInt64> { inner.frameTypes }
    var maximumRequestLength: Int { inner.maximumRequestLength }
    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        guard case .putShard? = try? HyperMeshMessage.decode(request), let cluster = cluster.value else {
            return await inner.serve(request: request, remaining: remaining, stream: stream, connection: connection)
        }
        _ = try? await stream.read()
        let index = self.index
        Task { await cluster.stop(index) }
    }
}

/// Lets services reach the cluster they run in once it has started.
///
/// `@unchecked Sendable`: set once before any request arrives, read under `lock`.
final class ClusterBox: @unchecked Sendable {
    private let lock = NSLock()
    private var cluster: LocalStorageCluster?
    var value: LocalStorageCluster? {
        get { lock.withLock { cluster } }
        set { lock.withLock { cluster = newValue } }
    }
}

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
}

/// HyperMesh over real QUIC on [::1]: storage nodes in this process, the block client driving
/// the sans-IO put/read state machines with the real clock.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RealNodeTests {
    @Test func putGetAcrossSixteenNodesSurvivesFourDownAndReportsFive() async throws {
        let seed = UInt64.random(in: 0 ... .max)
        print("putGet seed \(seed)")
        try await withCluster(count: 16, regions: 4) { cluster, client in
            let (nodes, failures) = await client.discover(cluster.addresses)
            #expect(nodes.count == 16 && failures.isEmpty)
            let content = randomBytes(300_000 + Int(seed % 5000), seed: seed)
            let put = try await client.put(content, nodes: nodes, fileName: "data.bin")
            let manifest = try put.record.decodedManifest()
            #expect(put.record.holders.count == 14)
            #expect(Set(put.record.holders.map(\.node)).count == 14, "shards on distinct nodes")
            let proof = BlockProof(blockID: put.block, receipts: put.record.decodedReceipts())
            #expect(proof.verify(against: manifest), "committed with >= k + 2 valid receipts")
            #expect(put.record.manifestReplicas.count >= 2)
            // Each receipt is signed by the node that holds the shard on disk.
            for r in put.record.decodedReceipts() {
                let member = try #require(cluster.member(r.node))
                #expect(member.service.store.path(block: put.block, index: r.shardIndex) != nil)
            }
            // The audit log records the transfers and the commit, and its chain holds.
            let log = try client.directory.auditLog()
            #expect(log.verify() == .intact)
            #expect(log.entries.contains { $0.event == .commit(block: put.block, receipts: 14) })
            #expect(log.entries.filter { if case .transfer(put.block, _, nil, _) = $0.event { true } else { false } }.count == 14)

            let first = try await client.get(put.block)
            #expect(first.content == content)
            #expect(first.requested >= 10)

            // Any 4 holders down: still bit-identical.
            var rng = SplitMix64(seed: seed)
            let holderNodes = put.record.holders.map(\.node).shuffled(using: &rng)
            let indices = holderNodes.compactMap { hex in cluster.members.firstIndex { $0.service.node.hex == hex } }
            for i in indices.prefix(4) { await cluster.stop(i) }
            let degraded = try await client.get(put.block)
            #expect(degraded.content == content, "seed \(seed)")
            #expect(degraded.unreachable.count == 4)

            // A fifth: a clear error that says how many are missing.
            await cluster.stop(indices[4])
            do {
                _ = try await client.get(put.block)
                Issue.record("read with 5 shards missing should fail (seed \(seed))")
            } catch let error as HyperMeshError {
                #expect(error.code == .notEnoughShards)
                #expect(error.reason.contains("5 of 14 shards are missing"), "\(error.reason)")
                #expect(error.reason.contains("10 are needed"))
            }
            let verify = try await client.verify(put.block)
            #expect(verify.lost.count == 5)
        }
    }

    @Test func tamperedShardsAreRefusedReportedAndRepaired() async throws {
        try await withCluster(count: 18, regions: 3) { cluster, client in
            let (nodes, _) = await client.discover(cluster.addresses)
            let content = Array(String(repeating: "HyperMesh keeps blocks whole. ", count: 20_000).utf8) + randomBytes(50_000, seed: 9)
            let put = try await client.put(content, nodes: nodes)
            // Flip one byte in four shards on their holders' disks.
            let damaged = put.record.holders.prefix(4)
            for h in damaged {
                let member = try #require(cluster.members.first { $0.service.node.hex == h.node })
                let path = try #require(member.service.store.path(block: put.block, index: h.shard))
                var bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
                bytes[bytes.count / 2] ^= 0x40
                try Data(bytes).write(to: URL(fileURLWithPath: path))
            }
            // Read: the holders refuse their corrupt copies; 10 good shards remain, so it is bit-identical.
            let read = try await client.get(put.block)
            #expect(read.content == content)
            #expect(read.refused.count >= 2, "12 requests among 14 shards must hit at least 2 of the 4 damaged")
            #expect(read.refused.allSatisfy { r in damaged.contains { $0.shard == r.shard } })
            #expect(read.refused.allSatisfy { $0.reason.contains("corrupt") })

            let verify = try await client.verify(put.block)
            #expect(verify.lost == damaged.map(\.shard).sorted())
            #expect(verify.checks.filter { $0.lost != nil }.allSatisfy { $0.lost!.contains("corrupt") })
            let log = try client.directory.auditLog()
            #expect(log.entries.filter { if case .shardLost = $0.event { true } else { false } }.count == 4)

            let repair = try await client.repair(put.block)
            #expect(repair.failed.isEmpty, "\(repair.failed)")
            #expect(repair.moved.map(\.shard) == damaged.map(\.shard).sorted())
            let record = try client.directory.record(put.block)
            let holders = Set(record.holders.map(\.node))
            #expect(holders.count == 14, "repaired shards are on new, distinct nodes")
            for m in repair.moved {
                #expect(!damaged.contains { $0.node == m.to.node.hex })
                // The damaged copy is gone from the old holder.
                let from = try #require(m.from)
                let old = try #require(cluster.member(from))
                #expect(old.service.store.path(block: put.block, index: m.shard) == nil)
            }
            #expect(BlockProof(blockID: put.block, receipts: record.decodedReceipts()).verify(against: try record.decodedManifest()))
            let after = try await client.verify(put.block)
            #expect(after.lost.isEmpty)
            #expect(try await client.get(put.block).content == content)
            let transfers = try client.directory.auditLog().entries.filter { if case .transfer(_, _, .some, _) = $0.event { true } else { false } }
            #expect(transfers.count == 4)
            #expect(try client.directory.auditLog().verify() == .intact)
        }
    }

    @Test func forgedReceiptsAreRefusedAndTheShardPlacedElsewhere() async throws {
        // Three of 16 nodes forge: placement picks 14, so at least one forger gets a shard.
        let forgers: Set<Int> = [0, 5, 10]
        try await withCluster(count: 16, regions: 4, wrap: { i, service in
            forgers.contains(i) ? ForgingService(inner: service) as any NodeService : service
        }) { cluster, client in
            let (nodes, _) = await client.discover(cluster.addresses)
            let content = randomBytes(200_000, seed: 3)
            let put = try await client.put(content, nodes: nodes)
            let forgerIDs = Set(forgers.map { cluster.members[$0].service.node })
            #expect(!put.failures.isEmpty)
            #expect(put.failures.allSatisfy { forgerIDs.contains($0.node) && $0.reason.contains("receipt refused") })
            #expect(put.rejected.count == put.failures.count)
            #expect(put.record.holders.allSatisfy { h in !forgerIDs.contains { $0.hex == h.node } })
            #expect(put.record.decodedReceipts().count >= 12)
            #expect(BlockProof(blockID: put.block, receipts: put.record.decodedReceipts()).verify(against: try put.record.decodedManifest()))
            // The forgers were asked to drop the shards they took.
            for i in forgers { #expect(cluster.members[i].service.store.stats().shards == 0) }
            #expect(try await client.get(put.block).content == content)
        }
    }

    @Test func nodesDyingDuringPutArePlacedAroundOrThePutRollsBack() async throws {
        try await withCluster(count: 16, regions: 4) { cluster, client in
            let (nodes, _) = await client.discover(cluster.addresses)
            // Three die after discovery: at least one is in the plan; its shard goes elsewhere.
            for i in [1, 6, 11] { await cluster.stop(i) }
            let dead = Set([1, 6, 11].map { cluster.members[$0].service.node })
            let content = randomBytes(150_000, seed: 4)
            let put = try await client.put(content, nodes: nodes)
            #expect(!put.failures.isEmpty)
            #expect(put.record.holders.allSatisfy { h in !dead.contains { $0.hex == h.node } })
            #expect(put.record.holders.count + put.unplaced.count == 14)
            #expect(put.record.holders.count >= 12)
            #expect(try await client.get(put.block).content == content)
            // A dead node costs one connect timeout: the client remembers the addresses it could
            // not dial and fails at once on them (re-placements, rollbacks, reads, verifies).
            for i in [1, 6, 11] where put.failures.contains(where: { $0.node == cluster.members[i].service.node }) {
                do {
                    _ = try await client.peer(cluster.members[i].address)
                    Issue.record("a stopped node answered")
                } catch let error as HyperMeshError {
                    #expect(error.code == .unreachable)
                    #expect(error.reason.contains("not dialled again"), "\(error.reason)")
                }
            }
        }

        // Only 11 of 14 nodes left alive: k + 2 = 12 receipts are impossible, so the put fails and
        // every shard and manifest already stored is deleted; nothing is recorded.
        try await withCluster(count: 14, regions: 3) { small, other in
            let (nodes, _) = await other.discover(small.addresses)
            for i in [2, 7, 12] { await small.stop(i) }
            do {
                _ = try await other.put(randomBytes(100_000, seed: 5), nodes: nodes)
                Issue.record("put with 11 live nodes should fail")
            } catch let error as HyperMeshError {
                #expect(error.code == .placementImpossible)
                #expect(error.reason.contains("stored shards were deleted"))
            }
            for (i, m) in small.members.enumerated() where ![2, 7, 12].contains(i) {
                let stats = m.service.store.stats()
                #expect(stats.shards == 0, "node \(i) kept \(stats.shards) shards of a failed put")
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: m.service.store.directory)) ?? []).isEmpty, "node \(i) kept files")
            }
            let records = try FileManager.default.contentsOfDirectory(atPath: other.directory.path).filter { $0.hasSuffix(".json") }
            #expect(records.isEmpty)
            #expect(!(try other.directory.auditLog().entries.contains { if case .commit = $0.event { true } else { false } }))
        }
    }

    @Test func nodesDyingMidTransferArePlacedAround() async throws {
        // Three of 16 nodes die while receiving their first shard: at least one is in the plan.
        let dying: Set<Int> = [2, 8, 14]
        let box = ClusterBox()
        try await withCluster(count: 16, regions: 4, wrap: { i, service in
            dying.contains(i) ? DyingService(inner: service, index: i, cluster: box) as any NodeService : service
        }, box: box) { cluster, client in
            let (nodes, _) = await client.discover(cluster.addresses)
            let content = randomBytes(400_000, seed: 6)
            let put = try await client.put(content, nodes: nodes)
            let dead = Set(dying.map { cluster.members[$0].service.node })
            #expect(!put.failures.isEmpty)
            #expect(put.failures.allSatisfy { dead.contains($0.node) })
            #expect(put.record.holders.allSatisfy { h in !dead.contains { $0.hex == h.node } })
            #expect(put.record.holders.count >= 12)
            #expect(BlockProof(blockID: put.block, receipts: put.record.decodedReceipts()).verify(against: try put.record.decodedManifest()))
            #expect(try await client.get(put.block).content == content)
        }
    }
}
