import ArgumentParser
import Foundation
import Crypto
import HyperMesh
import Nexus
import STOQSimulation
import STOQ
import HyperMeshBenchmarks

/// `stoq block …`: HyperMesh block storage.
struct BlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract: "HyperMesh: erasure-coded, encrypted block storage.",
        subcommands: [
            BlockPutCommand.self, BlockGetCommand.self, BlockVerifyCommand.self, BlockRepairCommand.self, BlockPlanCommand.self,
            BlockReaderCommand.self,
            BlockAuditCommand.self,
            BlockBenchNetAlias.self, BlockBenchErasureAlias.self,
        ]
    )
}

/// `stoq block plan ID`: where the block's shards and manifest replicas go, and why.
struct BlockPlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show where a block's 14 shards and 3 manifest replicas are placed, and why.",
        discussion: """
            For a block stored from this block directory, the plan is recomputed over the nodes known \
            when it was stored and shown beside the shards' actual holders (re-placed shards differ). \
            Otherwise nodes come from --nodes-file (lines of `NODE_ID_HEX REGION FREE_BYTES [WEIGHT]`) or \
            a synthetic cluster (--demo-nodes, --regions).
            """
    )

    @Argument(help: "Block id (64 hex digits, or a unique prefix of a stored block's id).")
    var id: String

    @Option(help: "Block directory (records, audit log, reader key); default $STOQ_BLOCKS or ~/.stoq/blocks.")
    var blocks: String?

    @Option(help: "File listing nodes: NODE_ID_HEX REGION FREE_BYTES [WEIGHT] per line.")
    var nodesFile: String?

    /// The old spelling of `--nodes-file` (`--node` names the nodes a command talks to).
    @Option(name: .customLong("nodes"), help: .hidden)
    var legacyNodesFile: String?

    @Option(help: "Synthetic cluster size when --nodes-file is not given.")
    var demoNodes = 40

    @Option(help: "Regions in the synthetic cluster.")
    var regions = 4

    @Option(help: "Shard size in bytes (nodes with less free space are skipped).")
    var shardSize = 1 << 20

    @Option(help: "Data shards (k).")
    var dataShards = 10

    @Option(help: "Parity shards (m).")
    var parityShards = 4

    func run() async throws {
        let nodes = nodesFile ?? legacyNodesFile
        let directory = try BlockDirectory(path: blocks ?? BlockDirectory.defaultPath)
        if nodes == nil, let block = try? directory.resolve(id), directory.contains(block) {
            let record = try directory.record(block)
            let manifest = try record.decodedManifest()
            if let text = record.plan {
                print(text)
            } else {
                let list = record.nodes.compactMap { n in
                    MeshNodeID(hex: n.node).map { StorageNode(id: $0, region: n.region, freeBytes: Int(clamping: n.freeBytes)) }
                }
                print(try PlacementPlanner(nodes: list).plan(block: block, shardCount: manifest.totalShards, shardSize: manifest.shardSize).explain())
            }
            let regions = Dictionary(record.nodes.map { ($0.node, $0.region) }, uniquingKeysWith: { a, _ in a })
            let planned = Dictionary((record.planned ?? []).map { ($0.shard, $0.node) }, uniquingKeysWith: { a, _ in a })
            print("holders now (\(record.holders.count) of \(manifest.totalShards) shards, \(record.decodedReceipts().count) receipts; commit needs \(manifest.dataShards + 2)):")
            for h in record.holders {
                let moved = planned[h.shard].map { $0 != h.node } ?? false
                print("  shard \(h.shard): \(h.address) node \(h.node.prefix(8)) region \(regions[h.node] ?? "?")"
                      + (moved ? " (moved: planned node \(planned[h.shard]!.prefix(8)) failed at put, or repair replaced it)" : ""))
            }
            print("manifest replicas: " + record.manifestReplicas.map(\.address).joined(separator: ", "))
            return
        }
        guard let block = BlockID(hex: id) else {
            throw ValidationError("block id must be 64 hex digits (no stored block matches '\(id)' in \(directory.path))")
        }
        var list: [StorageNode] = []
        if let nodes {
            let text = try String(contentsOfFile: nodes, encoding: .utf8)
            for (n, line) in text.split(separator: "\n").enumerated() where !line.hasPrefix("#") {
                let f = line.split(separator: " ")
                guard f.count >= 3, let nid = MeshNodeID(hex: String(f[0])), let free = Int(f[2]) else {
                    throw ValidationError("\(nodes):\(n + 1): expected NODE_ID_HEX REGION FREE_BYTES [WEIGHT]")
                }
                list.append(StorageNode(id: nid, region: String(f[1]), freeBytes: free, weight: f.count > 3 ? Double(f[3]) ?? 1 : 1))
            }
        } else {
            for i in 0..<demoNodes {
                let nid = MeshNodeID.hashing(Array("demo-node-\(i)".utf8))
                list.append(StorageNode(id: nid, region: "region-\(i % max(regions, 1))", freeBytes: (64 + (i * 37) % 192) << 30))
            }
        }
        let plan = try PlacementPlanner(nodes: list).plan(
            block: block, shardCount: dataShards + parityShards, shardSize: shardSize
        )
        print(plan.explain())
    }
}

/// `stoq bench erasure` (old spelling `block bench-erasure`, hidden): the Swift side of scripts/bench-erasure.sh.
struct BlockBenchErasureCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erasure",
        abstract: "Time ErasureCoder encode and rebuild (compare with scripts/bench-erasure.sh)."
    )

    @Option(help: "Data shards (k).") var dataShards = 10
    @Option(help: "Parity shards (m).") var parityShards = 4
    @Option(help: "Bytes per shard.") var shardSize = 1 << 20
    @Option(help: "Data shards lost and rebuilt.") var lost = 4
    @Option(help: "Seconds per measured loop.") var seconds = 1.0

    func run() async throws {
        let result = try ErasureBenchmark.run(
            dataShards: dataShards, parityShards: parityShards, shardSize: shardSize, lost: lost,
            minimumDuration: .milliseconds(Int(seconds * 1000))
        )
        print(result.line)
    }
}

/// Options shared by the block commands that talk to storage nodes.
struct BlockClientOptions: ParsableArguments {
    @Option(help: "Client certificate (PEM) presented to the storage nodes.") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca
    @Option(help: "Block directory (records, audit log, reader key); default $STOQ_BLOCKS or ~/.stoq/blocks.")
    var blocks: String?

    /// Opens a client.
    func client() async throws -> BlockClient {
        let tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca))
        return try await BlockClient.connect(tls: tls, directory: try BlockDirectory(path: blocks ?? BlockDirectory.defaultPath))
    }

    /// Runs `body` with a client, closing it afterwards.
    func with<T>(_ body: (BlockClient) async throws -> T) async throws -> T {
        let client = try await client()
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

/// Parses `[::1]:4001,[::1]:4002`.
func parseNodeList(_ text: String) throws -> [PeerAddress] {
    try text.split(separator: ",").map { item in
        let t = item.trimmingCharacters(in: .whitespaces)
        guard let a = PeerAddress(t) else { throw ValidationError("'\(t)' is not an IPv6 address like [::1]:4433 (STOQ is IPv6-only)") }
        return a
    }
}

/// Storage node addresses from `--node` and/or the storage providers announced in the Nexus DHT
/// reached through `--bootstrap` (looked up with the client's own certificate).
func storageNodeAddresses(nodes: String?, dht: String?, client: BlockClientOptions) async throws -> [PeerAddress] {
    var addresses = try nodes.map(parseNodeList) ?? []
    if let dht {
        let nexus = try await NexusClient.connect(seeds: try parseNodeList(dht), certificate: client.cert, key: client.key, ca: client.ca)
        do {
            let found = try await StorageDiscovery.addresses(via: nexus)
            FileHandle.standardError.write(Data("stoq: \(found.count) storage nodes announced in the DHT\n".utf8))
            addresses += found
            await nexus.close()
        } catch {
            await nexus.close()
            throw error
        }
    }
    return addresses
}

/// Formats a duration in milliseconds.
func ms(_ d: Duration) -> String { String(format: "%.1f ms", d.seconds * 1000) }

/// One line per stage with its share of the total.
func stageLines(_ s: BlockStageTimes, reading: Bool) -> String {
    let rows: [(String, Duration)] = reading
        ? [("transfer", s.transfer), ("hash (verify shards, block id)", s.hash), ("erasure decode", s.encode), ("decrypt", s.encrypt), ("decompress", s.compress)]
        : [("compress", s.compress), ("encrypt (+ seal key)", s.encrypt), ("erasure encode", s.encode), ("hash (block id, shards)", s.hash), ("transfer (until last receipt)", s.transfer), ("receipts (verify signatures)", s.receipts)]
    let total = rows.reduce(Duration.zero) { $0 + $1.1 }
    return rows.map { name, d in
        "  " + name.padding(toLength: 32, withPad: " ", startingAt: 0)
            + String(format: " %9.2f ms  %5.1f %%", d.seconds * 1000, total > .zero ? d.seconds / total.seconds * 100 : 0)
    }.joined(separator: "\n")
}

/// Where `stoq block put` finds storage nodes: `--node` (old `--nodes`) and/or `--bootstrap`
/// (old `--dht`), a Nexus DHT node through which the storage providers are looked up.
struct StorageNodeOptions: ParsableArguments {
    @Option(name: .customLong("node"), help: ArgumentHelp("Storage nodes, comma-separated: '[::1]:4001,[::1]:4002,...'.", valueName: "addresses"))
    var node: String?
    /// The old spelling of `--node`.
    @Option(name: .customLong("nodes"), help: .hidden) var legacyNodes: String?
    @Option(help: ArgumentHelp("Find storage nodes through the Nexus DHT, joined through these nodes (comma-separated, e.g. '[::1]:4433').", valueName: "addresses"))
    var bootstrap: String?
    /// The old spelling of `--bootstrap`.
    @Option(name: .customLong("dht"), help: .hidden) var legacyDHT: String?

    func validate() throws {
        if node != nil && legacyNodes != nil { throw ValidationError("give --node only (--nodes is its old spelling)") }
        if bootstrap != nil && legacyDHT != nil { throw ValidationError("give --bootstrap only (--dht is its old spelling)") }
    }

    /// The storage node addresses given (`--node`, or the old `--nodes`).
    var nodes: String? { node ?? legacyNodes }
    /// The DHT entry points given (`--bootstrap`, or the old `--dht`).
    var bootstrapNodes: String? { bootstrap ?? legacyDHT }
}

/// `stoq block put FILE --node ADDR,...`
struct BlockPutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Encrypt, erasure-code (10 + 4) and store a file as one block on storage nodes.",
        discussion: """
            Asks every node for its id, region and space, places the 14 shards on distinct nodes \
            across regions, and commits once k + 2 = 12 signed receipts verify and 2 of 3 manifest \
            replicas are stored. The record (manifest, receipts, holders) goes to the block directory \
            and the audit log; the block id printed is what get/verify/repair/plan take.
            """
    )
    @Argument(help: "The file to store (one block, up to 640 MiB).") var file: String
    @OptionGroup var storage: StorageNodeOptions
    @OptionGroup var client: BlockClientOptions
    @OptionGroup var progressOptions: ProgressOptions
    @Option(help: ArgumentHelp("Also seal the block for this reader public key (what `stoq block reader` prints on the reader's side), so it can read the block from anywhere; repeatable.", valueName: "file"))
    var reader: [String] = []

    func validate() throws {
        if storage.nodes == nil && storage.bootstrapNodes == nil { throw ValidationError("give --node ADDR,... or --bootstrap ADDR (or both): the storage nodes, or a Nexus DHT node to find them through") }
    }

    func run() async throws {
        let view = ProgressView("block put", mode: progressOptions.mode())
        LogBootstrap.forCommand(quiet: progressOptions.quiet)
        defer { view.abandon() }
        view.phase("reading \(file)…")
        guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
        if storage.bootstrapNodes != nil { view.phase("finding storage nodes through the DHT…") }
        let addresses = try await storageNodeAddresses(nodes: storage.nodes, dht: storage.bootstrapNodes, client: client)
        try await client.with { client in
            view.phase("asking \(addresses.count) storage nodes for their space…")
            let (found, failures) = await client.discover(addresses)
            for (address, why) in failures { Console.shared.note("skipping \(address): \(why)") }
            view.phase("encoding \(ProgressView.humanSize(Int64(data.count))) (compress, encrypt, erasure-code 10 + 4)…")
            let report = try await client.put([UInt8](data), nodes: found, fileName: (file as NSString).lastPathComponent, readers: try readReaderKeys(reader)) { p in
                view.update(done: p.bytesDone, total: p.totalBytes)
            }
            view.update(done: Int64(report.record.holders.count) * Int64(try report.record.decodedManifest().shardSize), total: nil)
            view.finish()
            let receipts = report.record.receipts.count
            // stdout: the block id alone (the result); the figures go to stderr.
            Console.shared.result("block \(report.block.hex)")
            Console.shared.note(String(format: "stored %d bytes as %d shards of %d bytes on %d nodes in %d regions: %d receipts (commit needs %d), %.1f MB/s",
                         report.bytes, report.record.holders.count, try report.record.decodedManifest().shardSize,
                         Set(report.record.holders.map(\.node)).count, Set(found.filter { n in report.record.holders.contains { $0.node == n.node.hex } }.map(\.region)).count,
                         receipts, try report.record.decodedManifest().dataShards + 2, Double(report.bytes) / report.wall.seconds / 1e6))
            for f in report.failures { Console.shared.raw("  re-placed shard \(f.shard) away from \(f.node.short): \(f.reason)") }
            if !report.unplaced.isEmpty { Console.shared.raw("  unplaced shards \(report.unplaced.map(String.init).joined(separator: ", ")) (too few nodes); run `stoq block repair` when more nodes exist") }
            Console.shared.raw(stageLines(report.stages, reading: false))
        }
    }
}

/// `stoq block get ID -o FILE`
struct BlockGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Read a block back: k + 2 shards from the fastest holders, tail cancelled once k verify.",
        discussion: """
            With the block's record in the block directory (it was stored from there) the holders are \
            known. Otherwise give the full block id and the storage nodes: --node ADDR,... and/or \
            --bootstrap ADDR (storage providers in the Nexus DHT); they are asked for the block's \
            manifest and for signed receipts of the shards they hold, and everything is verified. \
            The block must be sealed for this directory's reader key: see `stoq block reader --help`.
            """
    )
    @Argument(help: "Block id (64 hex digits; a unique prefix of at least 8 works for blocks recorded in this block directory).") var id: String
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    @Option(name: .customLong("node"), help: ArgumentHelp("Storage nodes to find the block on when this block directory has no record of it, comma-separated.", valueName: "addresses"))
    var node: String?
    @Option(help: ArgumentHelp("Find storage nodes through the Nexus DHT, joined through these nodes (when there is no local record).", valueName: "addresses"))
    var bootstrap: String?
    /// Old spellings, as on `block put`.
    @Option(name: .customLong("nodes"), help: .hidden) var legacyNodes: String?
    @Option(name: .customLong("dht"), help: .hidden) var legacyDHT: String?
    @OptionGroup var client: BlockClientOptions
    @OptionGroup var progressOptions: ProgressOptions

    func run() async throws {
        let view = ProgressView("block get", mode: progressOptions.mode())
        LogBootstrap.forCommand(quiet: progressOptions.quiet)
        defer { view.abandon() }
        try await client.with { client in
            view.phase("reaching the holders of block \(id.prefix(16))…")
            let (block, report) = try await readBlock(id, client: client, nodes: node ?? legacyNodes, bootstrap: bootstrap ?? legacyDHT, options: self.client) { p in
                view.update(done: p.bytesDone, total: p.totalBytes, sources: p.nodes)
            }
            view.finish()
            guard FileManager.default.createFile(atPath: output, contents: Data(report.content)) else { throw ValidationError("cannot write \(output)") }
            Console.shared.note(String(format: "read block %@: %d bytes in %.1f ms (%.1f MB/s); %d requests, %d cancelled after k verified",
                         block.short, report.content.count, report.wall.seconds * 1000, Double(report.content.count) / report.wall.seconds / 1e6,
                         report.requested, report.cancelled))
            if !report.unreachable.isEmpty { Console.shared.raw("  unreachable holders: " + report.unreachable.map(\.description).joined(separator: ", ")) }
            for r in report.refused { Console.shared.raw("  refused shard \(r.shard) from \(r.node.short): \(r.reason)") }
            Console.shared.raw(stageLines(report.stages, reading: true))
        }
    }
}

/// `stoq block verify ID`
struct BlockVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Challenge every holder to hash a random range of its shard; report lost shards.",
        discussion: """
            Without the block's record in the block directory, give the full id and the storage nodes \
            (--node ADDR,... and/or --bootstrap ADDR): the holders found there are asked for their \
            shards, each checked against the manifest's SHA-256.
            """
    )
    @Argument(help: "Block id (64 hex digits; a unique prefix works for blocks recorded in this block directory).") var id: String
    @Option(name: .customLong("node"), help: ArgumentHelp("Storage nodes to find the block on when this block directory has no record of it, comma-separated.", valueName: "addresses"))
    var node: String?
    @Option(help: ArgumentHelp("Find storage nodes through the Nexus DHT, joined through these nodes (when there is no local record).", valueName: "addresses"))
    var bootstrap: String?
    /// Old spellings, as on `block put`.
    @Option(name: .customLong("nodes"), help: .hidden) var legacyNodes: String?
    @Option(name: .customLong("dht"), help: .hidden) var legacyDHT: String?
    @OptionGroup var client: BlockClientOptions

    func run() async throws {
        let lost = try await client.with { client in
            let report = try await verifyBlock(id, client: client, nodes: node ?? legacyNodes, bootstrap: bootstrap ?? legacyDHT, options: self.client)
            for c in report.checks {
                print("  shard \(c.shard) on \(c.address) (\(c.node.short)): " + (c.lost.map { "LOST — \($0)" } ?? "ok"))
            }
            for u in report.unplaced { print("  shard \(u): LOST — " + (report.located ? "no verified holder among the nodes asked" : "never placed")) }
            let remaining = report.total - report.lost.count
            print("block \(report.block.short): \(remaining) of \(report.total) shards verified, \(report.lost.count) lost\(report.lost.isEmpty ? "" : " (shards " + report.lost.map(String.init).joined(separator: ", ") + ")")"
                  + (remaining >= report.needed ? "; readable (needs \(report.needed))" : "; NOT readable: \(report.needed) needed"))
            if !report.lost.isEmpty {
                print(report.located
                      ? "run `stoq block repair \(report.block.hex)` from the block directory that stored it to rebuild the lost shards"
                      : "run `stoq block repair \(report.block.short)` to rebuild the lost shards")
            }
            return report.lost.count
        }
        if lost > 0 { throw ExitCode(1) }  // 1: the operation failed (2 is for usage errors)
    }
}

/// `stoq block repair ID`
struct BlockRepairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Rebuild lost shards from any k and place them on new nodes.",
        discussion: """
            Without the block's record in the block directory, give the full id and the storage nodes: \
            the block is found there (as `block get` finds it), its record is saved in this block \
            directory, and shards with no holder among those nodes are rebuilt onto them.
            """
    )
    @Argument(help: "Block id (or a unique prefix).") var id: String
    @Option(name: .customLong("node"), help: ArgumentHelp("More candidate storage nodes beyond those known at put time, comma-separated.", valueName: "addresses"))
    var nodes: String?
    /// The old spelling of `--node`.
    @Option(name: .customLong("nodes"), help: .hidden) var legacyNodes: String?
    @Option(help: ArgumentHelp("Also take candidate nodes from the storage providers in the Nexus DHT, joined through these nodes (comma-separated).", valueName: "addresses"))
    var bootstrap: String?
    /// The old spelling of `--bootstrap`.
    @Option(name: .customLong("dht"), help: .hidden) var legacyDHT: String?
    @OptionGroup var client: BlockClientOptions

    func validate() throws {
        if nodes != nil && legacyNodes != nil { throw ValidationError("give --node only (--nodes is its old spelling)") }
        if bootstrap != nil && legacyDHT != nil { throw ValidationError("give --bootstrap only (--dht is its old spelling)") }
    }

    func run() async throws {
        let extra = try await storageNodeAddresses(nodes: nodes ?? legacyNodes, dht: bootstrap ?? legacyDHT, client: client)
        try await client.with { client in
            let block = try client.directory.resolve(id)
            try await adoptIfUnrecorded(block, client: client, nodes: extra)
            let report = try await client.repair(block, extraNodes: extra)
            if report.before.lost.isEmpty {
                print("block \(block.short): all \(report.before.total) shards verified; nothing to repair")
                return
            }
            for m in report.moved {
                print("  shard \(m.shard): rebuilt, \(m.from.map { "moved from \($0.short)" } ?? "placed") to \(m.to.address) (\(m.to.node.short), \(m.to.region))")
            }
            for f in report.failed { print("  shard \(f.shard): NOT repaired — \(f.reason)") }
            print("block \(block.short): \(report.moved.count) of \(report.before.lost.count) lost shards repaired")
            if !report.failed.isEmpty { throw ExitCode(1) }
        }
    }
}

/// `stoq bench block` (old spelling `block bench-net`, hidden): end-to-end put and get over real nodes on loopback.
struct BlockBenchNetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract: "Put and get blocks through real storage nodes on [::1] (in this process); MB/s and time per stage."
    )
    @Option(help: "Storage nodes.") var nodes = 16
    @Option(help: "Regions.") var regions = 4
    @Option(help: "Block size in bytes.") var blockSize = 16 << 20
    @Option(help: "Blocks to put and get.") var blocks = 4
    @Option(help: "Content: random (incompressible) or text (compressible).") var content = "random"

    func run() async throws {
        let cluster = try await LocalStorageCluster.start(count: nodes, regions: regions, name: "bench")
        do {
            let client = try await cluster.client()
            let (found, _) = await client.discover(cluster.addresses)
            var rng = SplitMix64(seed: 0x5eed)
            let words = ("the of and to in is that for it as with was on be by at this which from or have an are not but had "
                + "shard block region receipt audit quic node parity stripe manifest reader key zstd chacha poly repair placement "
                + "challenge nonce range commit proof holder latency tail cancel verify rebuild").split(separator: " ").map { Array($0.utf8) + [32] }
            var putStages = BlockStageTimes(), getStages = BlockStageTimes()
            var putWall = Duration.zero, getWall = Duration.zero
            var ids: [(BlockID, [UInt8])] = []
            var wire = 0
            for _ in 0..<blocks {
                var bytes: [UInt8] = []
                bytes.reserveCapacity(blockSize + 16)
                if content == "text" {
                    // Words drawn at random: compresses about 3x with zstd, like prose.
                    while bytes.count < blockSize { bytes += words[Int(rng.next() % UInt64(words.count))] }
                } else {
                    while bytes.count < blockSize { withUnsafeBytes(of: rng.next()) { bytes += $0 } }
                }
                bytes.removeLast(bytes.count - blockSize)
                let report = try await client.put(bytes, nodes: found)
                putStages += report.stages
                putWall += report.wall
                wire += try report.record.decodedManifest().shardSize * report.record.holders.count
                ids.append((report.block, bytes))
            }
            for (id, original) in ids {
                let report = try await client.get(id)
                guard report.content == original else { throw CLIError("block \(id.short) did not read back bit-identical") }
                getStages += report.stages
                getWall += report.wall
            }
            await client.close()
            let total = Double(blockSize * blocks)
            print("hypermesh end-to-end: \(blocks) blocks of \(blockSize) B (\(content)), 10+4, \(nodes) nodes in \(regions) regions, real QUIC on [::1], one process")
            print(String(format: "put  %8.1f MB/s  (%.1f MB of shards on the wire, %.2fx the content)", total / putWall.seconds / 1e6, Double(wire) / 1e6, Double(wire) / total))
            print(stageLines(putStages, reading: false))
            print(String(format: "get  %8.1f MB/s", total / getWall.seconds / 1e6))
            print(stageLines(getStages, reading: true))
            let cpu = putStages.compress + putStages.encrypt + putStages.encode + putStages.hash
            print(String(format: "put: pipeline CPU %.1f MB/s vs transfer+receipts %.1f MB/s (ratio %.2f); get: transfer %.1f MB/s vs decode+decrypt %.1f MB/s",
                         total / cpu.seconds / 1e6, total / (putStages.transfer + putStages.receipts).seconds / 1e6,
                         (putStages.transfer + putStages.receipts).seconds / cpu.seconds,
                         total / getStages.transfer.seconds / 1e6,
                         total / (getStages.hash + getStages.encode + getStages.encrypt + getStages.compress).seconds / 1e6))
            await cluster.close()
        } catch {
            await cluster.close()
            throw error
        }
    }
}

/// `stoq block audit`: print the hash-chained audit log and check every link.
struct BlockAuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Print the block directory's audit log (commits, transfers, losses) and check its hash chain."
    )
    @Option(help: "Block directory; default $STOQ_BLOCKS or ~/.stoq/blocks.") var blocks: String?
    @Option(help: "Only entries of this block (id or prefix).") var block: String?

    func run() async throws {
        let directory = try BlockDirectory(path: blocks ?? BlockDirectory.defaultPath)
        let log = try directory.auditLog()  // throws, naming the entry, when a link is broken
        let only = try block.map { try directory.resolve($0) }
        for e in log.entries {
            let line: String
            switch e.event {
            case .commit(let b, let receipts):
                guard only == nil || only == b else { continue }
                line = "commit   block \(b.short) with \(receipts) receipts"
            case .transfer(let b, let shard, let from, let to):
                guard only == nil || only == b else { continue }
                line = "transfer block \(b.short) shard \(shard) " + (from.map { "from \($0.short) " } ?? "") + "to \(to.short)"
            case .shardLost(let b, let shard, let node, let reason):
                guard only == nil || only == b else { continue }
                line = "lost     block \(b.short) shard \(shard) on \(node.short): \(reason)"
            }
            let time = Date(timeIntervalSince1970: e.time.seconds)
            print("\(e.sequence) \(ISO8601DateFormatter().string(from: time)) \(e.hash.short) \(line)")
        }
        print("audit log intact: \(log.entries.count) entries, head \(log.head.hex)")
    }
}
