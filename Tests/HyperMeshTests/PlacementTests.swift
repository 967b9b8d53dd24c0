import Testing

@testable import HyperMesh

func makeNodes(_ count: Int, regions: Int, free: Int = 100 << 30) -> [StorageNode] {
    (0..<count).map { StorageNode(id: .hashing(Array("node-\($0)".utf8)), region: "r\($0 % regions)", freeBytes: free) }
}

@Suite struct PlacementTests {
    let block = BlockID.hashing(Array("block".utf8))

    @Test func fourteenDistinctNodesSpreadEvenlyAcrossRegions() throws {
        for regions in [1, 2, 3, 4, 5, 7, 14, 20] {
            let planner = PlacementPlanner(nodes: makeNodes(60, regions: regions))
            let plan = try planner.plan(block: block, shardCount: 14, shardSize: 1 << 20)
            #expect(Set(plan.shards.map(\.node)).count == 14)
            #expect(plan.shards.map(\.slot) == Array(0..<14))
            let quota = (14 + min(regions, 60) - 1) / min(regions, 60)
            var perRegion: [String: Int] = [:]
            for a in plan.shards { perRegion[a.region, default: 0] += 1 }
            #expect(perRegion.values.allSatisfy { $0 <= quota }, "regions \(regions): \(perRegion)")
            #expect(perRegion.count == min(regions, 14), "prefer more regions: \(perRegion)")
            #expect(plan.metadata.count == 3)
            #expect(Set(plan.metadata.map(\.region)).count == min(regions, 3))
        }
    }

    @Test func quotaIsRaisedOnlyWhenRegionsRunOutOfNodes() throws {
        // Region r0 has 20 nodes, r1 has 2, r2 has 1.
        var nodes = (0..<20).map { StorageNode(id: .hashing(Array("a\($0)".utf8)), region: "r0", freeBytes: 1 << 40) }
        nodes += (0..<2).map { StorageNode(id: .hashing(Array("b\($0)".utf8)), region: "r1", freeBytes: 1 << 40) }
        nodes.append(StorageNode(id: .hashing(Array("c".utf8)), region: "r2", freeBytes: 1 << 40))
        let plan = try PlacementPlanner(nodes: nodes).plan(block: block, shardCount: 14, shardSize: 1)
        #expect(plan.regions == ["r0", "r1", "r2"])
        #expect(plan.shards.filter { $0.region == "r0" }.count == 11)
        #expect(plan.shards.contains { $0.reason == .quotaRaised })
        #expect(plan.explain().contains("region quota raised"))
    }

    @Test func fullNodesAreSkippedAndCapacityWeighsTheChoice() throws {
        var nodes = makeNodes(30, regions: 3)
        for i in 0..<5 { nodes[i].freeBytes = 1000 }
        let plan = try PlacementPlanner(nodes: nodes).plan(block: block, shardCount: 14, shardSize: 4096)
        let full = Set(nodes[0..<5].map(\.id))
        #expect(plan.shards.allSatisfy { !full.contains($0.node) })
        #expect(plan.skipped.count == 5 && plan.skipped.values.allSatisfy { $0.hasPrefix("full") })

        // Over many blocks, a node with 8x the free space wins far more often.
        var big = makeNodes(40, regions: 1, free: 10 << 30)
        big[0].freeBytes = 80 << 30
        let planner = PlacementPlanner(nodes: big)
        var wins = (big: 0, small: 0)
        for b in 0..<300 {
            let plan = try planner.plan(block: .hashing([UInt8(b & 0xff), UInt8(b >> 8)]), shardCount: 5, shardSize: 1)
            let chosen = Set(plan.shards.map(\.node))
            if chosen.contains(big[0].id) { wins.big += 1 }
            if chosen.contains(big[1].id) { wins.small += 1 }
        }
        #expect(wins.big > 2 * wins.small, "\(wins)")
    }

    @Test func rendezvousIsStableWhenANodeJoins() throws {
        let nodes = makeNodes(50, regions: 50)
        var moved = 0
        for b in 0..<50 {
            let id = BlockID.hashing([UInt8(b)])
            let before = try PlacementPlanner(nodes: nodes).plan(block: id, shardCount: 14, shardSize: 1)
            let after = try PlacementPlanner(nodes: nodes + [StorageNode(id: .hashing([0xff]), region: "new", freeBytes: 100 << 30)])
                .plan(block: id, shardCount: 14, shardSize: 1)
            moved += Set(before.shards.map(\.node)).subtracting(after.shards.map(\.node)).count
        }
        // Only blocks the newcomer wins change, and by one node each.
        #expect(moved <= 50)
    }

    @Test func tooFewNodesIsAClearError() {
        let planner = PlacementPlanner(nodes: makeNodes(13, regions: 3))
        let e = #expect(throws: HyperMeshError.self) { try planner.plan(block: block, shardCount: 14, shardSize: 1) }
        #expect(e?.code == .placementImpossible)
        #expect(e?.reason.contains("need 14 distinct nodes") == true)
        // What a person reads (the CLI prints errorDescription) is the reason, no Swift type name.
        let shown = e.map { "\($0)" } ?? ""
        #expect(shown == e?.reason && !shown.contains("HyperMeshError") && !shown.contains("placementImpossible"))
        #expect(e?.errorDescription == e?.reason)
    }

    @Test func replacementsAvoidHoldersAndKeepRegionsBalanced() throws {
        let nodes = makeNodes(28, regions: 4)
        let planner = PlacementPlanner(nodes: nodes)
        let plan = try planner.plan(block: block, shardCount: 14, shardSize: 1)
        let dead = plan.shards[3].node
        let holders = plan.shards.filter { $0.slot != 3 }.map(\.node)
        let repl = try planner.replace([3], block: block, shardSize: 1, holders: holders, excluding: [dead])
        #expect(repl.count == 1 && repl[0].slot == 3)
        #expect(!holders.contains(repl[0].node) && repl[0].node != dead)
        #expect(repl[0].region == plan.shards[3].region || plan.shards.filter { $0.region == repl[0].region }.count < 4)
    }

    @Test func explanationNamesScoreQuotaAndCapacity() throws {
        let plan = try PlacementPlanner(nodes: makeNodes(20, regions: 4)).plan(block: block, shardCount: 14, shardSize: 1)
        let text = plan.explain()
        #expect(text.contains("shard 0: node"))
        #expect(text.contains("score"))
        #expect(text.contains("region 1/4") || text.contains("/4 free"))
        #expect(text.contains("first node of its region"))
        #expect(text.contains("metadata (3 replicas)"))
    }
}
