import Crypto
import Foundation
import NIOConcurrencyHelpers
import STOQNode
import STOQTransport
import STOQWire

/// A storage node as the client found it: where it is, who it is (its certificate's node id,
/// checked against what it reports), its region, space and round-trip time.
public struct DiscoveredNode: Hashable, Sendable {
    /// Where it listens.
    public let address: PeerAddress
    /// Its id; its receipts must be signed by this key.
    public let node: MeshNodeID
    /// Its region.
    public let region: String
    /// Free bytes it reported.
    public let freeBytes: UInt64
    /// Measured round trip.
    public let latency: Duration

    /// Creates an entry.
    public init(address: PeerAddress, node: MeshNodeID, region: String, freeBytes: UInt64, latency: Duration) {
        self.address = address
        self.node = node
        self.region = region
        self.freeBytes = freeBytes
        self.latency = latency
    }
}

/// What a put did.
public struct BlockPutReport: Sendable {
    /// The stored block's record (also saved in the block directory).
    public let record: BlockRecord
    /// The block id.
    public let block: BlockID
    /// Bytes of content stored.
    public let bytes: Int
    /// Time per stage.
    public let stages: BlockStageTimes
    /// Wall time of the whole put.
    public let wall: Duration
    /// Receipts refused: shard, signer, reason.
    public let rejected: [(shard: Int, node: MeshNodeID, reason: String)]
    /// Stores that failed and were re-placed: shard, node, reason.
    public let failures: [(shard: Int, node: MeshNodeID, reason: String)]
    /// Shards that found no node (the block is committed without them; repair places them later).
    public let unplaced: [Int]
}

/// What a get did.
public struct BlockGetReport: Sendable {
    /// The block's content, bit-identical to what was stored.
    public let content: [UInt8]
    /// Time per stage (the codec's fields hold the reverse steps).
    public let stages: BlockStageTimes
    /// Wall time of the whole get.
    public let wall: Duration
    /// Shard requests sent.
    public let requested: Int
    /// Requests cancelled once k shards verified (the long tail).
    public let cancelled: Int
    /// Holders that could not be reached.
    public let unreachable: [PeerAddress]
    /// Answers refused: shard, node, why (corrupt on the node, or failed the SHA-256 check here).
    public let refused: [(shard: Int, node: MeshNodeID, reason: String)]
}

/// One holder's answer to a storage challenge.
public struct ShardCheck: Sendable {
    /// The shard.
    public let shard: Int
    /// The holder.
    public let node: MeshNodeID
    /// Its address.
    public let address: String
    /// nil when the node proved it holds the shard; otherwise why the shard counts as lost.
    public let lost: String?
}

/// What a verify found.
public struct BlockVerifyReport: Sendable {
    /// The block.
    public let block: BlockID
    /// One entry per shard with a holder, in shard order.
    public let checks: [ShardCheck]
    /// Shards with no holder at all (never placed); for a block verified without its record
    /// (``located``), shards with no verified holder among the nodes asked.
    public let unplaced: [Int]
    /// Whether the holders were found on the network (no local record) rather than recorded.
    public var located = false
    /// Indices of lost shards (failed checks and unplaced).
    public var lost: [Int] { (checks.filter { $0.lost != nil }.map(\.shard) + unplaced).sorted() }
    /// Shards still needed to read the block (k).
    public let needed: Int
    /// Total shards (k + m).
    public let total: Int
}

/// What a repair did.
public struct BlockRepairReport: Sendable {
    /// The verification before the repair.
    public let before: BlockVerifyReport
    /// Rebuilt shards: index, old holder (nil if unplaced), new holder.
    public let moved: [(shard: Int, from: MeshNodeID?, to: DiscoveredNode)]
    /// Shards that could not be re-placed, with why.
    public let failed: [(shard: Int, reason: String)]
}

/// Stores and reads HyperMesh blocks on real storage nodes over `stoq/1`, driving the sans-IO
/// ``BlockPutStateMachine``, ``BlockReadStateMachine`` and ``ChallengeTracker`` with the real
/// clock, and keeping block records and the audit log in a ``BlockDirectory``.
public final class BlockClient: Sendable {
    /// The client's endpoint (mutual TLS with the network's CA).
    public let endpoint: Endpoint
    /// Connections to storage nodes.
    public let peers: PeerSet
    /// Where records, the audit log and the reader key live.
    public let directory: BlockDirectory
    /// The block pipeline.
    public let codec: BlockCodec
    /// The key blocks are sealed for.
    public let reader: P256.KeyAgreement.PrivateKey
    /// How long a node has to connect and answer INFO.
    public let connectTimeout: Duration
    /// How long one shard store or read may take before another node is asked.
    public let requestTimeout: Duration
    /// How long an address that could not be dialled is taken for dead: requests to it fail at
    /// once instead of waiting for another handshake timeout.
    public let unreachableMemory: Duration
    /// Addresses whose last dial failed, with why and until when they are not dialled again.
    private let unreachable = UnreachablePeers()
    /// Challenges prepared per shard at put and repair time.
    public let challengesPerShard = 8

    /// Creates a client over an endpoint.
    /// - Parameters:
    ///   - endpoint: a bound endpoint whose TLS identity the storage nodes accept.
    ///   - directory: records, audit log and reader key.
    ///   - codec: the block pipeline (10 + 4 with zstd by default).
    ///   - reader: the reader key (default: the directory's `reader.key`).
    ///   - connectTimeout: how long a node has to complete the handshake and answer INFO or PING.
    ///   - requestTimeout: how long one request (a shard store or read, a deletion) may take.
    ///   - unreachableMemory: how long an address whose dial failed is not dialled again.
    public init(
        endpoint: Endpoint, directory: BlockDirectory, codec: BlockCodec? = nil, reader: P256.KeyAgreement.PrivateKey? = nil,
        connectTimeout: Duration = .seconds(3), requestTimeout: Duration = .seconds(10), unreachableMemory: Duration = .seconds(60)
    ) throws {
        self.endpoint = endpoint
        self.peers = PeerSet(endpoint: endpoint)
        self.directory = directory
        self.codec = try codec ?? BlockCodec(coder: ErasureCoder(dataShards: 10, parityShards: 4))
        self.reader = try reader ?? directory.readerKey()
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.unreachableMemory = unreachableMemory
    }

    /// Binds a client endpoint on `[::]` with `tls` and a short handshake timeout.
    /// - Parameters:
    ///   - connectTimeout: how long a node has to complete the handshake and answer INFO or PING.
    ///   - requestTimeout: how long one shard store or read may take.
    public static func connect(
        tls: TLSConfiguration, directory: BlockDirectory, connectTimeout: Duration = .seconds(3), requestTimeout: Duration = .seconds(10)
    ) async throws -> BlockClient {
        var configuration = EndpointConfiguration()
        configuration.handshakeTimeout = connectTimeout
        configuration.idleTimeout = max(.seconds(30), requestTimeout * 2)
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: configuration)
        return try BlockClient(endpoint: endpoint, directory: directory, connectTimeout: connectTimeout, requestTimeout: requestTimeout)
    }

    /// Closes connections and the endpoint.
    public func close() async {
        await peers.closeAll()
        await endpoint.close()
    }

    // MARK: Nodes

    /// A HyperMesh client for the node at `address`, dialled within ``connectTimeout``.
    ///
    /// A dial that fails is remembered for ``unreachableMemory``: until then the address fails at
    /// once with the same reason, so a dead node costs one handshake timeout per operation, not
    /// one per shard, manifest replica, retry or rollback that names it.
    /// - Throws: ``HyperMeshError/Code/unreachable`` when the node cannot be reached.
    public func peer(_ address: PeerAddress) async throws(HyperMeshError) -> StoragePeer {
        if let known = unreachable.reason(address, now: .now) {
            throw HyperMeshError(.unreachable, "\(known) (a failed node is not dialled again within \(unreachableMemory))")
        }
        let peers = self.peers
        let failure: HyperMeshError
        do {
            let client = try await deadline(connectTimeout, "connecting to \(address)") { try await peers.client(for: address) }
            return StoragePeer(connection: client.connection, name: address.description)
        } catch let error as HyperMeshError {
            failure = error
        } catch {
            failure = HyperMeshError(.unreachable, "cannot reach \(address): \(describe(error))")
        }
        await peers.drop(address)
        unreachable.mark(address, failure.reason, until: .now + unreachableMemory)
        throw failure
    }

    /// Asks every address for its id, region and space, in parallel.
    /// - Returns: the nodes that answered (fastest first), and the failures.
    public func discover(_ addresses: [PeerAddress]) async -> (nodes: [DiscoveredNode], failures: [(PeerAddress, String)]) {
        await withTaskGroup(of: (PeerAddress, Result<DiscoveredNode, HyperMeshError>).self) { group in
            for address in Set(addresses) {
                group.addTask { [self] in
                    do {
                        let peer = try await self.peer(address)
                        let started = ContinuousClock.now
                        let info = try await deadline(connectTimeout, "INFO from \(address)") { try await peer.info() }
                        let rtt = ContinuousClock.now - started
                        guard let certified = peer.node, certified == info.node else {
                            return (address, .failure(HyperMeshError(.peerFailed, "reports node \(info.node.short) but its certificate is \(peer.node?.short ?? "missing"); not used")))
                        }
                        return (address, .success(DiscoveredNode(address: address, node: info.node, region: info.region, freeBytes: info.freeBytes, latency: rtt)))
                    } catch let error as HyperMeshError {
                        return (address, .failure(error))
                    } catch {
                        return (address, .failure(HyperMeshError(.unreachable, describe(error))))
                    }
                }
            }
            var nodes: [DiscoveredNode] = []
            var failures: [(PeerAddress, String)] = []
            for await (address, result) in group {
                switch result {
                case .success(let n): nodes.append(n)
                case .failure(let e): failures.append((address, e.reason))
                }
            }
            var seen = Set<MeshNodeID>()
            nodes = nodes.sorted { ($0.latency, $0.address.description) < ($1.latency, $1.address.description) }.filter { seen.insert($0.node).inserted }
            return (nodes, failures)
        }
    }

    // MARK: Put

    /// Encodes `content` into a block and stores it on `nodes`: placement over their regions,
    /// receipts verified against each node's certificate key, committed at k + 2 receipts and a
    /// majority of manifest replicas. On failure every stored shard and manifest is deleted and
    /// nothing is recorded.
    /// - Parameters:
    ///   - content: the block's bytes.
    ///   - nodes: candidate storage nodes (see ``discover(_:)``).
    ///   - fileName: recorded for the user.
    ///   - readers: more reader keys (besides this client's) the block key is sealed for: whoever
    ///     holds one of the private halves can read the block from anywhere.
    ///   - progress: called once the block is encoded and after each receipt, with the shard
    ///     bytes acknowledged of those to store (progress bars).
    public func put(
        _ content: [UInt8], nodes: [DiscoveredNode], fileName: String? = nil, readers: [P256.KeyAgreement.PublicKey] = [],
        progress: (@Sendable (BlockTransferProgress) -> Void)? = nil
    ) async throws -> BlockPutReport {
        let clock = ContinuousClock()
        let start = clock.now
        func now() -> Duration { clock.now - start }
        var stages = BlockStageTimes()
        var sealedFor = [reader.publicKey]
        for r in readers where !sealedFor.contains(where: { $0.derRepresentation == r.derRepresentation }) { sealedFor.append(r) }
        let block = try codec.encode(content, readers: sealedFor, stages: &stages)
        let manifest = block.manifest
        let byID = Dictionary(nodes.map { ($0.node, $0) }, uniquingKeysWith: { a, _ in a })
        let planner = PlacementPlanner(nodes: nodes.map {
            StorageNode(id: $0.node, region: $0.region, freeBytes: Int(clamping: $0.freeBytes))
        })
        let plan = try planner.plan(block: manifest.blockID, shardCount: manifest.totalShards, shardSize: manifest.shardSize)
        var machine = BlockPutStateMachine(manifest: manifest, plan: plan, planner: planner, now: now(), storeTimeout: requestTimeout)
        let shardBytes = Int64(manifest.shardSize)
        var acknowledged = Set<Int>()
        progress?(BlockTransferProgress(bytesDone: 0, totalBytes: shardBytes * Int64(manifest.totalShards), nodes: 0))

        enum Event: Sendable {
            case receipt(StorageReceipt, shard: Int, node: MeshNodeID)
            case storeFailed(shard: Int, node: MeshNodeID, reason: String)
            case manifestStored(MeshNodeID)
            case manifestFailed(MeshNodeID)
            /// The node could not be dialled: everything in flight to it moves, and it is not
            /// chosen again for this block.
            case nodeDown(MeshNodeID, reason: String)
            case tick
        }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let ticker = tick(continuation, .tick)
        defer { ticker.cancel() }
        var inFlight: [Task<Void, Never>] = []
        var deletions: [(shard: Int?, node: MeshNodeID)] = []
        var failures: [(shard: Int, node: MeshNodeID, reason: String)] = []
        var outcome: BlockPutStateMachine.Action?
        let transferStart = clock.now
        var iterator = events.makeAsyncIterator()
        driving: while true {
            while let action = machine.pollAction() {
                switch action {
                case .store(let shard, let node):
                    guard let target = byID[node] else {
                        machine.handleStoreFailed(shard: shard, node: node, now: now())
                        continue
                    }
                    let bytes = block.shards[shard]
                    let hash = manifest.shardHashes[shard]
                    let limit = requestTimeout
                    inFlight.append(Task { [self] in
                        let peer: StoragePeer
                        do {
                            peer = try await self.peer(target.address)
                        } catch {
                            continuation.yield(.nodeDown(node, reason: describe(error)))
                            return
                        }
                        do {
                            let receipt = try await deadline(limit, "storing shard \(shard) on \(target.address)") {
                                try await peer.putShard(block: manifest.blockID, index: shard, bytes: bytes, hash: hash)
                            }
                            continuation.yield(.receipt(receipt, shard: shard, node: node))
                        } catch {
                            continuation.yield(.storeFailed(shard: shard, node: node, reason: describe(error)))
                        }
                    })
                case .storeManifest(let node):
                    guard let target = byID[node] else {
                        machine.handleManifestFailed(node: node, now: now())
                        continue
                    }
                    let limit = requestTimeout
                    inFlight.append(Task { [self] in
                        let peer: StoragePeer
                        do {
                            peer = try await self.peer(target.address)
                        } catch {
                            continuation.yield(.nodeDown(node, reason: describe(error)))
                            return
                        }
                        do {
                            try await deadline(limit, "storing the manifest on \(target.address)") { try await peer.putManifest(manifest) }
                            continuation.yield(.manifestStored(node))
                        } catch {
                            continuation.yield(.manifestFailed(node))
                        }
                    })
                case .delete(let shard, let node): deletions.append((shard, node))
                case .deleteManifest(let node): deletions.append((nil, node))
                case .committed: break
                case .completed, .failed:
                    outcome = action
                    break driving
                }
            }
            guard let event = await iterator.next() else { break }
            switch event {
            case .receipt(let receipt, let shard, let node):
                let verdict = stages.measure(\.receipts) { machine.handleReceipt(receipt, now: now()) }
                if case .invalid(let reason) = verdict {
                    // Refused (forged, wrong signer or hash): that node is not trusted with this shard.
                    failures.append((shard, node, "receipt refused: \(reason)"))
                    deletions.append((shard, node))
                    machine.handleStoreFailed(shard: shard, node: node, now: now())
                } else if let progress {
                    acknowledged.insert(shard)
                    let holders = Set(machine.receipts.map(\.node)).count
                    progress(BlockTransferProgress(
                        bytesDone: shardBytes * Int64(acknowledged.count), totalBytes: shardBytes * Int64(manifest.totalShards), nodes: holders))
                }
            case .storeFailed(let shard, let node, let reason):
                failures.append((shard, node, reason))
                machine.handleStoreFailed(shard: shard, node: node, now: now())
            case .manifestStored(let node): machine.handleManifestStored(node: node, now: now())
            case .manifestFailed(let node): machine.handleManifestFailed(node: node, now: now())
            case .nodeDown(let node, let reason):
                for (shard, holder) in machine.holders where holder == node && !machine.receipts.contains(where: { $0.shardIndex == shard }) {
                    failures.append((shard, node, reason))
                }
                machine.handleNodeDown(node, now: now())
            case .tick: machine.handleTimeout(now: now())
            }
        }
        stages.transfer += clock.now - transferStart
        // Let stores still on the wire land (or pass their deadline) before any deletion, so a
        // rollback is not overtaken by a store that was merely slow.
        for task in inFlight { await task.value }
        // Deletions are best effort and bounded: a node that is down keeps what it has (its
        // copy is an orphan no record names), and it costs no more than one timeout.
        let limit = requestTimeout
        await withTaskGroup(of: Void.self) { group in
            for (shard, node) in deletions {
                guard let target = byID[node] else { continue }
                group.addTask { [self] in
                    guard let peer = try? await self.peer(target.address) else { return }
                    if let shard {
                        _ = try? await deadline(limit, "deleting shard \(shard) on \(target.address)") {
                            try await peer.deleteShard(block: manifest.blockID, index: shard)
                        }
                    } else {
                        _ = try? await deadline(limit, "deleting the manifest on \(target.address)") {
                            try await peer.deleteManifest(block: manifest.blockID)
                        }
                    }
                }
            }
        }
        switch outcome {
        case .completed(let proof, let unplaced):
            var record = BlockRecord(
                block: manifest.blockID.hex, manifest: Data(manifest.encoded()).base64EncodedString(), receipts: [], holders: [],
                manifestReplicas: machine.manifestHolders.sorted().compactMap { id in
                    byID[id].map { BlockRecord.Holder(shard: -1, node: id.hex, address: $0.address.description) }
                },
                nodes: nodes.map { BlockRecord.KnownNode(node: $0.node.hex, address: $0.address.description, region: $0.region, freeBytes: $0.freeBytes) },
                challenges: [],
                plan: plan.explain(),
                planned: plan.shards.map { BlockRecord.Holder(shard: $0.slot, node: $0.node.hex, address: byID[$0.node]?.address.description ?? "") },
                fileName: fileName, committed: Date())
            var audit: [AuditEvent] = []
            for receipt in proof.receipts.sorted(by: { $0.shardIndex < $1.shardIndex }) {
                guard let target = byID[receipt.node] else { continue }
                record.setHolder(shard: receipt.shardIndex, node: receipt.node, address: target.address.description, receipt: receipt)
                record.prepareChallenges(
                    block: manifest.blockID, shard: receipt.shardIndex, node: receipt.node, bytes: block.shards[receipt.shardIndex],
                    count: challengesPerShard)
                audit.append(.transfer(block: manifest.blockID, shard: receipt.shardIndex, from: nil, to: receipt.node))
            }
            audit.append(.commit(block: manifest.blockID, receipts: proof.receipts.count))
            try directory.save(record)
            try directory.appendAudit(audit)
            return BlockPutReport(
                record: record, block: manifest.blockID, bytes: content.count, stages: stages, wall: clock.now - start,
                rejected: machine.rejected, failures: failures, unplaced: unplaced)
        case .failed(let error):
            let why = failures.map { "shard \($0.shard) on \(byID[$0.node]?.address.description ?? $0.node.short): \($0.reason)" }
            throw HyperMeshError(error.code, error.reason + (why.isEmpty ? "" : "\n  " + why.joined(separator: "\n  ")))
        default:
            throw HyperMeshError(.peerFailed, "the put of block \(manifest.blockID.short) stopped without an outcome")
        }
    }

    // MARK: Get

    /// Reads a block recorded in the directory: asks k + 2 of the fastest reachable holders at
    /// once, verifies each shard's SHA-256, cancels the tail once k verify, then decodes.
    /// - Throws: ``HyperMeshError/Code/notEnoughShards`` saying how many are missing.
    /// - Parameter progress: called as verified shards arrive, with the shard bytes of the k
    ///   needed (progress bars).
    public func get(_ blockID: BlockID, progress: (@Sendable (BlockTransferProgress) -> Void)? = nil) async throws -> BlockGetReport {
        let clock = ContinuousClock()
        let start = clock.now
        let record = try directory.record(blockID)
        let manifest = try record.decodedManifest()
        try checkReader(manifest)
        let (slots, report) = try await fetchShards(holders: record.locatedHolders(), manifest: manifest, extra: 2, progress: progress)
        var stages = report.stages
        let content = try codec.decode(manifest: manifest, shards: slots, reader: reader, stages: &stages)
        return BlockGetReport(
            content: content, stages: stages, wall: clock.now - start, requested: report.requested, cancelled: report.cancelled,
            unreachable: report.unreachable, refused: report.refused)
    }

    /// Reads a block this client has no record of, from its id alone: asks every node in `nodes`
    /// for the block's manifest and for the shards it holds (see ``locate(_:nodes:)``), then reads
    /// as ``get(_:)`` does from the holders whose signed receipts verified. The manifest must seal
    /// the block key for this client's reader key.
    /// - Throws: ``HyperMeshError/Code/notFound`` (no manifest among the nodes),
    ///   ``HyperMeshError/Code/notEnoughShards``, ``HyperMeshError/Code/noReaderKey``.
    public func get(_ blockID: BlockID, from nodes: [PeerAddress]) async throws -> BlockGetReport {
        let clock = ContinuousClock()
        let start = clock.now
        let found = try await locate(blockID, nodes: nodes)
        let readable = found.filter { isSealedForReader($0.manifest) }
        guard !readable.isEmpty else {
            try checkReader(found[0].manifest)
            throw HyperMeshError(.noReaderKey, "block \(blockID.short) is not sealed for this reader")
        }
        var lastError: (any Error)?
        for location in readable {
            do {
                let (slots, report) = try await fetchShards(holders: location.holders, manifest: location.manifest, extra: 2)
                var stages = report.stages
                let content = try codec.decode(manifest: location.manifest, shards: slots, reader: reader, stages: &stages)
                return BlockGetReport(
                    content: content, stages: stages, wall: clock.now - start, requested: report.requested, cancelled: report.cancelled,
                    unreachable: report.unreachable, refused: report.refused)
            } catch {
                // A manifest that does not rebuild to the block id (forged by a replica) or whose
                // holders failed: try the next candidate, if any.
                lastError = error
            }
        }
        throw lastError ?? HyperMeshError(.notFound, "block \(blockID.short) could not be read")
    }

    /// Finds a block without its record: asks every address, in parallel, for the block's manifest
    /// (GET_MANIFEST) and for its receipts for the shards it holds (HOLDINGS_REQUEST), and keeps
    /// what verifies (see ``BlockLocation``). It does not wait for nodes that are down: it stops
    /// once every shard has a verified holder, or 200 ms after k + 2 shards had one.
    /// - Returns: the candidate manifests with their verified holders, best first.
    public func locate(_ blockID: BlockID, nodes: [PeerAddress]) async throws(HyperMeshError) -> [BlockLocation] {
        let limit = requestTimeout
        let unique = Array(Set(nodes))
        enum Event: Sendable {
            case answer(HoldingsAnswer?)
            case tick
        }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        for address in unique {
            Task { [self] in
                guard let peer = try? await self.peer(address), let node = peer.node else {
                    continuation.yield(.answer(nil))
                    return
                }
                async let manifest = try? deadline(limit, "GET_MANIFEST from \(address)") { try await peer.manifest(block: blockID) }
                async let receipts = try? deadline(limit, "HOLDINGS_REQUEST to \(address)") { try await peer.holdings(block: blockID) }
                continuation.yield(.answer(HoldingsAnswer(address: address, node: node, manifest: await manifest, receipts: await receipts ?? [])))
            }
        }
        let ticker = tick(continuation, .tick)
        defer {
            ticker.cancel()
            continuation.finish()
        }
        var answers: [HoldingsAnswer] = []
        var received = 0
        var enoughSince: ContinuousClock.Instant?
        for await event in events {
            if case .answer(let answer) = event {
                received += 1
                if let answer {
                    answers.append(answer)
                    if answer.manifest != nil || !answer.receipts.isEmpty,
                        let best = (try? BlockLocation.choose(block: blockID, answers: answers, asked: unique.count))?.first
                    {
                        if best.shardsFound == best.manifest.totalShards { break }
                        if best.shardsFound >= best.manifest.dataShards + 2, enoughSince == nil { enoughSince = .now }
                    }
                }
            }
            if received == unique.count { break }
            if let enoughSince, ContinuousClock.now - enoughSince >= .milliseconds(200) { break }
        }
        answers.sort { $0.address.description < $1.address.description }
        return try BlockLocation.choose(block: blockID, answers: answers, asked: unique.count)
    }

    /// Whether `manifest` seals the block key for this client's reader key.
    public func isSealedForReader(_ manifest: BlockManifest) -> Bool {
        let id = SealedBlockKey.readerID(reader.publicKey)
        return manifest.readers.contains { $0.reader == id }
    }

    /// Throws, saying how to get a key that opens it, when `manifest` is not sealed for this
    /// client's reader key.
    /// - Throws: ``HyperMeshError/Code/noReaderKey``.
    public func checkReader(_ manifest: BlockManifest) throws(HyperMeshError) {
        guard !isSealedForReader(manifest) else { return }
        let keyPath = (directory.path as NSString).appendingPathComponent("reader.key")
        throw HyperMeshError(
            .noReaderKey,
            "block \(manifest.blockID.short) is sealed for \(manifest.readers.count) reader key\(manifest.readers.count == 1 ? "" : "s"), "
                + "and this block directory's (\(keyPath), reader \(SealedBlockKey.readerID(reader.publicKey).short)) is not one of them; "
                + "copy the writer's reader.key into \(directory.path), or have the writer store the block with "
                + "`stoq block put --reader FILE`, FILE being what `stoq block reader --blocks \(directory.path)` prints")
    }

    private struct FetchReport {
        var stages = BlockStageTimes()
        var requested = 0
        var cancelled = 0
        var unreachable: [PeerAddress] = []
        var refused: [(shard: Int, node: MeshNodeID, reason: String)] = []
    }

    /// Fetches any k verified shards of a block with long-tail cutting.
    private func fetchShards(
        holders located: [LocatedHolder], manifest: BlockManifest, extra: Int,
        progress: (@Sendable (BlockTransferProgress) -> Void)? = nil
    ) async throws -> ([[UInt8]?], FetchReport) {
        let clock = ContinuousClock()
        let start = clock.now
        func now() -> Duration { clock.now - start }
        var report = FetchReport()
        var addresses: [MeshNodeID: PeerAddress] = [:]
        for h in located { addresses[h.node] = h.address }
        let shardCount = Set(located.map(\.shard)).count
        // Reach every holder in parallel and time a round trip: the fastest are asked first. The
        // read starts once k + extra holders answered and the others had a moment more (a dead
        // holder would otherwise hold the read for a whole handshake timeout).
        enum Ping: Sendable {
            case answer(MeshNodeID, PeerAddress, Duration?)
            case tick
        }
        let (pings, pinged) = AsyncStream.makeStream(of: Ping.self)
        for (node, address) in addresses {
            Task { [self] in
                guard let peer = try? await self.peer(address), peer.node == node else {
                    pinged.yield(.answer(node, address, nil))
                    return
                }
                let client = PeerClient(connection: peer.connection, name: address.description)
                pinged.yield(.answer(node, address, try? await deadline(connectTimeout, "PING") { try await client.ping() }))
            }
        }
        let grace = tick(pinged, .tick)
        defer { grace.cancel() }
        var latencies: [MeshNodeID: Duration] = [:]
        var answered = Set<MeshNodeID>()
        var enoughSince: ContinuousClock.Instant?
        let wanted = min(manifest.dataShards + extra, shardCount)
        for await ping in pings {
            if case .answer(let node, let address, let rtt) = ping {
                answered.insert(node)
                if let rtt { latencies[node] = rtt } else { report.unreachable.append(address) }
            }
            let reachableShards = Set(located.filter { latencies[$0.node] != nil }.map(\.shard)).count
            if reachableShards >= wanted && enoughSince == nil { enoughSince = clock.now }
            if answered.count == addresses.count { break }
            if let enoughSince, clock.now - enoughSince >= .milliseconds(200) { break }
        }
        for (node, address) in addresses where !answered.contains(node) { report.unreachable.append(address) }
        let holders = located.compactMap { h in latencies[h.node].map { ShardHolder(shard: h.shard, node: h.node, latency: $0) } }
        var machine = BlockReadStateMachine(manifest: manifest, holders: holders, extra: extra, now: now(), requestTimeout: requestTimeout)
        let neededBytes = Int64(manifest.shardSize) * Int64(manifest.dataShards)
        var verifiedShards = 0
        progress?(BlockTransferProgress(bytesDone: 0, totalBytes: neededBytes, nodes: Set(holders.map(\.node)).count))

        enum Event: Sendable {
            case shard(Int, MeshNodeID, [UInt8])
            case failed(Int, MeshNodeID, String)
            case tick
        }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let ticker = tick(continuation, .tick)
        defer { ticker.cancel() }
        var handles: [Int: StreamHandle] = [:]
        var iterator = events.makeAsyncIterator()
        let transferStart = clock.now
        while true {
            while let action = machine.pollAction() {
                switch action {
                case .request(let shard, let node):
                    report.requested += 1
                    guard let address = addresses[node] else {
                        machine.handleFailure(shard, from: node, now: now())
                        continue
                    }
                    let handle = StreamHandle()
                    handles[shard] = handle
                    let size = manifest.shardSize
                    Task { [self] in
                        do {
                            let bytes = try await self.peer(address).getShard(block: manifest.blockID, index: shard, maximumLength: size, handle: handle)
                            continuation.yield(.shard(shard, node, bytes))
                        } catch {
                            continuation.yield(.failed(shard, node, describe(error)))
                        }
                    }
                case .cancel(let shard, _):
                    report.cancelled += 1
                    if let handle = handles.removeValue(forKey: shard) { Task { await handle.cancel() } }
                case .complete(let slots):
                    report.stages.transfer += clock.now - transferStart
                    report.refused += machine.tampered.map { ($0.shard, $0.node, "failed its SHA-256 check here") }
                    return (slots, report)
                case .failed(let error):
                    let down = report.unreachable.isEmpty ? "" : "; unreachable holders: " + report.unreachable.map(\.description).sorted().joined(separator: ", ")
                    let refused = report.refused.isEmpty ? "" : "; refused: " + report.refused.map { "shard \($0.shard) (\($0.reason))" }.joined(separator: "; ")
                    throw HyperMeshError(error.code, error.reason + down + refused)
                }
            }
            guard let event = await iterator.next() else {
                throw HyperMeshError(.peerFailed, "the read of block \(manifest.blockID.short) stopped without an outcome")
            }
            switch event {
            case .shard(let shard, let node, let bytes):
                handles[shard] = nil
                let verified = report.stages.measure(\.hash) { machine.handleShard(shard, from: node, bytes: bytes, now: now()) }
                if verified, let progress {
                    verifiedShards += 1
                    progress(BlockTransferProgress(
                        bytesDone: min(neededBytes, Int64(manifest.shardSize) * Int64(verifiedShards)), totalBytes: neededBytes,
                        nodes: Set(holders.map(\.node)).count))
                }
            case .failed(let shard, let node, let reason):
                handles[shard] = nil
                if !reason.contains("cancel") { report.refused.append((shard, node, reason)) }
                machine.handleFailure(shard, from: node, now: now())
            case .tick:
                machine.handleTimeout(now: now())
            }
        }
    }

    // MARK: Verify

    /// Challenges every holder of the block to hash a random range of its shard (prepared at put
    /// time; when a shard's challenges are used up, the shard is read whole, checked against the
    /// manifest and new challenges are prepared). Lost shards go to the audit log.
    public func verify(_ blockID: BlockID) async throws -> BlockVerifyReport {
        var record = try directory.record(blockID)
        let (report, audit) = try await challengeHolders(&record)
        try directory.save(record)
        if !audit.isEmpty { try directory.appendAudit(audit) }
        return report
    }

    /// Verifies a block this client has no record of: finds its manifest and holders as
    /// ``get(_:from:)`` does, then reads each holder's shard whole and checks it against the
    /// manifest's SHA-256 (there are no prepared challenges without the record). Nothing is saved.
    /// The report's ``BlockVerifyReport/unplaced`` shards are those with no verified holder among
    /// `nodes` (``BlockVerifyReport/located`` is true).
    public func verify(_ blockID: BlockID, from nodes: [PeerAddress]) async throws -> BlockVerifyReport {
        var record = try await locate(blockID, nodes: nodes)[0].record()
        var (report, _) = try await challengeHolders(&record)
        report.located = true
        return report
    }

    /// Takes on a block this directory has no record of: finds it on `nodes` (see
    /// ``locate(_:nodes:)``) and saves a record of what verified there (manifest, one holder per
    /// shard and its receipt; no prepared challenges yet, so the first verify reads shards whole).
    /// After that, verify, repair and plan work from this directory. Shards with no holder among
    /// `nodes` count as lost.
    public func adopt(_ blockID: BlockID, from nodes: [PeerAddress]) async throws -> BlockRecord {
        let record = try await locate(blockID, nodes: nodes)[0].record()
        try directory.save(record)
        return record
    }

    /// Challenges (or, without prepared challenges, reads whole) every holder in `record`.
    /// - Returns: the report, and the audit events for the shards found lost.
    private func challengeHolders(_ record: inout BlockRecord) async throws -> (BlockVerifyReport, [AuditEvent]) {
        let blockID = try record.decodedManifest().blockID
        let manifest = try record.decodedManifest()
        let holders = record.holderMap()
        var tracker = ChallengeTracker(timeout: requestTimeout)
        let clock = ContinuousClock()
        let start = clock.now
        var asked: [(shard: Int, node: MeshNodeID, address: String, challenge: StorageChallenge?)] = []
        for (i, (shard, h)) in holders.sorted(by: { $0.key < $1.key }).enumerated() {
            asked.append((shard, h.node, h.address, record.takeChallenge(shard: shard, node: h.node, id: UInt64(i))))
        }
        for a in asked { if let c = a.challenge { tracker.handleSent(c, now: clock.now - start) } }
        let limit = requestTimeout
        let answers = await withTaskGroup(of: (Int, Digest256?, String?, [UInt8]?).self) { group in
            for (i, a) in asked.enumerated() {
                group.addTask { [self] in
                    guard let address = PeerAddress(a.address) else { return (i, nil, "bad address \(a.address)", nil) }
                    do {
                        let peer = try await self.peer(address)
                        if let c = a.challenge {
                            let (digest, why) = try await deadline(limit, "the challenge of shard \(a.shard) on \(address)") {
                                try await peer.challenge(block: blockID, index: a.shard, nonce: c.nonce, offset: c.offset, length: c.length)
                            }
                            return (i, digest, why, nil)
                        }
                        let bytes = try await deadline(limit, "reading shard \(a.shard) from \(address)") {
                            try await peer.getShard(block: blockID, index: a.shard, maximumLength: manifest.shardSize)
                        }
                        return (i, nil, BlockCodec.verifyShard(bytes, index: a.shard, of: manifest) ? nil : "shard bytes fail the manifest's SHA-256", bytes)
                    } catch {
                        return (i, nil, describe(error), nil)
                    }
                }
            }
            var out: [Int: (Digest256?, String?, [UInt8]?)] = [:]
            for await (i, d, w, b) in group { out[i] = (d, w, b) }
            return out
        }
        var checks: [ShardCheck] = []
        var audit: [AuditEvent] = []
        for (i, a) in asked.enumerated() {
            let (digest, why, bytes) = answers[i] ?? (nil, "no answer", nil)
            var lost: String?
            if let c = a.challenge {
                tracker.handleAnswer(id: c.id, digest: digest, now: clock.now - start)
                if case .shardLost(_, _, _, let reason) = tracker.pollEvent() { lost = why ?? reason }
            } else if let bytes, why == nil {
                record.prepareChallenges(block: blockID, shard: a.shard, node: a.node, bytes: bytes, count: challengesPerShard)
            } else {
                lost = why ?? "no answer"
            }
            if let lost { audit.append(.shardLost(block: blockID, shard: a.shard, node: a.node, reason: lost)) }
            checks.append(ShardCheck(shard: a.shard, node: a.node, address: a.address, lost: lost))
        }
        let unplaced = (0..<manifest.totalShards).filter { holders[$0] == nil }
        return (BlockVerifyReport(block: blockID, checks: checks, unplaced: unplaced, needed: manifest.dataShards, total: manifest.totalShards), audit)
    }

    // MARK: Repair

    /// Verifies the block, rebuilds its lost shards from any k verified ones and places them on
    /// new nodes (away from the surviving holders), then asks the old holders to drop their bad
    /// copies. Candidates are the nodes known at put time plus `extraNodes`.
    public func repair(_ blockID: BlockID, extraNodes: [PeerAddress] = []) async throws -> BlockRepairReport {
        let before = try await verify(blockID)
        var record = try directory.record(blockID)
        let manifest = try record.decodedManifest()
        let lost = before.lost
        guard !lost.isEmpty else { return BlockRepairReport(before: before, moved: [], failed: []) }
        let oldHolders = record.holderMap()
        let (slots, _) = try await fetchShards(holders: record.locatedHolders().filter { !lost.contains($0.shard) }, manifest: manifest, extra: 0)
        let rebuilt = try BlockRepair.rebuild(manifest: manifest, shards: slots, lost: lost, coder: codec.coder)

        let known = record.nodes.compactMap { PeerAddress($0.address) } + extraNodes
        let (alive, _) = await discover(known)
        let byID = Dictionary(alive.map { ($0.node, $0) }, uniquingKeysWith: { a, _ in a })
        var nodes = record.nodes.filter { n in !alive.contains { $0.node.hex == n.node } }
        nodes += alive.map { BlockRecord.KnownNode(node: $0.node.hex, address: $0.address.description, region: $0.region, freeBytes: $0.freeBytes) }
        record.nodes = nodes
        let planner = PlacementPlanner(nodes: alive.map { StorageNode(id: $0.node, region: $0.region, freeBytes: Int(clamping: $0.freeBytes)) })
        let surviving = Dictionary(oldHolders.filter { !lost.contains($0.key) }.map { ($0.key, $0.value.node) }, uniquingKeysWith: { a, _ in a })
        var excluded = Set(lost.compactMap { oldHolders[$0]?.node })
        var moved: [(shard: Int, from: MeshNodeID?, to: DiscoveredNode)] = []
        var failed: [(shard: Int, reason: String)] = []
        var audit: [AuditEvent] = []
        var pending = lost
        var attempts = 0
        while !pending.isEmpty && attempts < 3 {
            attempts += 1
            let taken = Set(moved.map(\.to.node))
            let placements: [PlacementAssignment]
            do {
                placements = try BlockRepair.placements(
                    for: pending, manifest: manifest, holders: surviving.merging(moved.map { ($0.shard, $0.to.node) }, uniquingKeysWith: { _, b in b }),
                    planner: planner, excluding: excluded.union(taken))
            } catch {
                // Not enough nodes for all of them: place what fits, one shard at a time.
                var partial: [PlacementAssignment] = []
                for shard in pending {
                    let holders = surviving.merging(moved.map { ($0.shard, $0.to.node) } + partial.map { ($0.slot, $0.node) }, uniquingKeysWith: { _, b in b })
                    if let one = try? BlockRepair.placements(
                        for: [shard], manifest: manifest, holders: holders, planner: planner, excluding: excluded.union(taken)
                    ).first {
                        partial.append(one)
                    } else {
                        failed.append((shard, error.reason))
                    }
                }
                if partial.isEmpty {
                    pending = []
                    break
                }
                placements = partial
            }
            let results = await withTaskGroup(of: (Int, DiscoveredNode, Result<StorageReceipt, HyperMeshError>).self) { group in
                for p in placements {
                    guard let target = byID[p.node], let bytes = rebuilt[p.slot] else { continue }
                    let limit = requestTimeout
                    group.addTask { [self] in
                        do {
                            let peer = try await self.peer(target.address)
                            let receipt = try await deadline(limit, "storing shard \(p.slot) on \(target.address)") {
                                try await peer.putShard(block: blockID, index: p.slot, bytes: bytes, hash: manifest.shardHashes[p.slot])
                            }
                            return (p.slot, target, .success(receipt))
                        } catch {
                            return (p.slot, target, .failure(error as? HyperMeshError ?? HyperMeshError(.peerFailed, describe(error))))
                        }
                    }
                }
                var out: [(Int, DiscoveredNode, Result<StorageReceipt, HyperMeshError>)] = []
                for await r in group { out.append(r) }
                return out
            }
            var next: [Int] = []
            for (shard, target, result) in results {
                switch result {
                case .success(let receipt) where receipt.verify(against: manifest, expectedNode: target.node) == .valid:
                    let old = oldHolders[shard]?.node
                    moved.append((shard, old, target))
                    record.setHolder(shard: shard, node: target.node, address: target.address.description, receipt: receipt)
                    if let bytes = rebuilt[shard] {
                        record.prepareChallenges(block: blockID, shard: shard, node: target.node, bytes: bytes, count: challengesPerShard)
                    }
                    audit.append(.transfer(block: blockID, shard: shard, from: old, to: target.node))
                case .success(let receipt):
                    excluded.insert(target.node)
                    next.append(shard)
                    if case .invalid(let reason) = receipt.verify(against: manifest, expectedNode: target.node) {
                        failed.append((shard, "receipt from \(target.address) refused: \(reason)"))
                    }
                case .failure(let error):
                    excluded.insert(target.node)
                    next.append(shard)
                    failed.append((shard, "\(target.address): \(error.reason)"))
                }
            }
            pending = next.filter { shard in !failed.contains { $0.shard == shard && $0.reason.contains("eligible") } }
        }
        failed.removeAll { f in moved.contains { $0.shard == f.shard } }
        try directory.save(record)
        if !audit.isEmpty { try directory.appendAudit(audit) }
        // The old holders' copies are wrong or unreachable: ask them to drop theirs (best effort).
        await withTaskGroup(of: Void.self) { group in
            for m in moved {
                guard let old = oldHolders[m.shard], let address = PeerAddress(old.address) else { continue }
                let limit = requestTimeout
                group.addTask { [self] in
                    guard let peer = try? await self.peer(address) else { return }
                    _ = try? await deadline(limit, "deleting shard \(m.shard) on \(address)") {
                        try await peer.deleteShard(block: blockID, index: m.shard)
                    }
                }
            }
        }
        return BlockRepairReport(before: before, moved: moved.sorted { $0.shard < $1.shard }, failed: failed)
    }
}

/// What went wrong, in words for a person: an error's reason without its type name.
func describe(_ error: any Error) -> String {
    switch error {
    case let error as HyperMeshError: error.reason
    case let error as STOQError: error.reason
    case let error as WireError: error.reason
    default: "\(error)"
    }
}

/// Addresses whose dial failed, each with why and until when it counts as down (checked
/// `Sendable`: the table lives in a locked box).
final class UnreachablePeers: Sendable {
    private let table = NIOLockedValueBox([PeerAddress: (reason: String, until: ContinuousClock.Instant)]())

    /// Why `address` counts as down at `now`, or nil when it may be dialled.
    func reason(_ address: PeerAddress, now: ContinuousClock.Instant) -> String? {
        table.withLockedValue { table in
            guard let entry = table[address] else { return nil }
            guard entry.until > now else {
                table[address] = nil
                return nil
            }
            return entry.reason
        }
    }

    /// Records that `address` could not be reached, for `reason`, until `until`.
    func mark(_ address: PeerAddress, _ reason: String, until: ContinuousClock.Instant) {
        table.withLockedValue { $0[address] = (reason, until) }
    }
}

/// Feeds `event` into `continuation` every 100 ms until cancelled: the timer that drives a state
/// machine's `handleTimeout(now:)` (its deadlines are far coarser than the tick).
func tick<E: Sendable>(_ continuation: AsyncStream<E>.Continuation, _ event: E) -> Task<Void, Never> {
    Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            continuation.yield(event)
        }
    }
}

/// Runs `operation`, giving up after `limit` with ``HyperMeshError/Code/unreachable`` (the
/// operation keeps running in the background until its own timeout ends it).
func deadline<T: Sendable>(_ limit: Duration, _ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let gate = OnceGate<T>()
    return try await withCheckedThrowingContinuation { continuation in
        gate.arm(continuation)
        Task {
            do { gate.resume(.success(try await operation())) } catch { gate.resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            gate.resume(.failure(HyperMeshError(.unreachable, "\(what) took longer than \(limit)")))
        }
    }
}

/// Resumes a continuation once, whichever of several tasks gets there first (checked `Sendable`:
/// the continuation lives in a locked box).
final class OnceGate<T: Sendable>: Sendable {
    private let continuation = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    func arm(_ c: CheckedContinuation<T, any Error>) { continuation.withLockedValue { $0 = c } }
    func resume(_ result: Result<T, any Error>) {
        let c = continuation.withLockedValue { value -> CheckedContinuation<T, any Error>? in
            defer { value = nil }
            return value
        }
        c?.resume(with: result)
    }
}

/// How far a block transfer is (``BlockClient/put(_:nodes:fileName:progress:)``,
/// ``BlockClient/get(_:progress:)``).
public struct BlockTransferProgress: Sendable, Hashable {
    /// Shard bytes stored (acknowledged by a receipt) or read and verified.
    public var bytesDone: Int64
    /// Shard bytes to store (every shard) or to read (the k data shards' worth).
    public var totalBytes: Int64
    /// Nodes taking part: holders with a receipt (put), holders reachable (get).
    public var nodes: Int

    /// Creates a progress value.
    public init(bytesDone: Int64, totalBytes: Int64, nodes: Int) {
        self.bytesDone = bytesDone
        self.totalBytes = totalBytes
        self.nodes = nodes
    }
}
