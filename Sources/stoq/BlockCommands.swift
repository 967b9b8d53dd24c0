import ArgumentParser
import Foundation
import Crypto
import HyperMesh

/// `stoq block …`: HyperMesh block storage.
struct BlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract: "HyperMesh: erasure-coded, encrypted block storage.",
        subcommands: [BlockPlanCommand.self, BlockBenchErasureCommand.self]
    )
}

/// `stoq block plan ID`: where the block's shards and manifest replicas go, and why.
struct BlockPlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show where a block's 14 shards and 3 manifest replicas are placed, and why.",
        discussion: """
            Until Nexus provides the live node list, nodes come from --nodes (lines of \
            `NODE_ID_HEX REGION FREE_BYTES [WEIGHT]`) or a synthetic cluster (--demo-nodes, --regions).
            """
    )

    @Argument(help: "Block id (64 hex digits).")
    var id: String

    @Option(help: "File listing nodes: NODE_ID_HEX REGION FREE_BYTES [WEIGHT] per line.")
    var nodes: String?

    @Option(help: "Synthetic cluster size when --nodes is not given.")
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
        guard let block = BlockID(hex: id) else {
            throw ValidationError("block id must be 64 hex digits")
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

/// `stoq block bench-erasure`: the Swift side of scripts/bench-erasure.sh.
struct BlockBenchErasureCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-erasure",
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
