import Crypto
import Foundation
import STOQIdentity
import STOQNode
import STOQTestSupport
import STOQTransport
import Testing
@testable import Nexus
import NexusBenchmarks

/// Nexus nodes on `[::1]` from one ``TestNetwork``, joined through the first.
struct NexusTestCluster {
    let network: TestNetwork
    var nodes: [NexusNode] = []
    var serving: [Task<Void, Never>] = []

    init(count: Int, admission: CTAdmission? = nil) async throws {
        network = try TestNetwork()
        // Debug builds under a loaded test run can take over a second per request; a lookup that
        // times out on a live node would miss the true closest nodes (and store beside them).
        var config = DHTConfiguration()
        config.requestTimeout = 10_000
        for i in 0..<count {
            let node = try await NexusNode.start(try network.configuration("n\(i)"), dht: config, admission: admission)
            serving.append(Task { await node.run() })
            nodes.append(node)
        }
        try await nodes[0].join([])
        for node in nodes.dropFirst() { try await node.join([nodes[0].address]) }
    }

    func close() async {
        for node in nodes { await node.close() }
        for task in serving { await task.value }
        network.close()
    }
}

@Suite(.serialized) struct DHTOverQUICTests {
    @Test func nodesJoinStoreAndLookUpOverRealQUIC() async throws {
        let cluster = try await NexusTestCluster(count: 8)
        let nodes = cluster.nodes
        for node in nodes { #expect(await node.dht.contactCount >= 4, "node \(node.record) knows too few peers") }

        // A signed name record stored from one node is found from another.
        let owner = P256.Signing.PrivateKey()
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let name = try NexusName("site.stoq")
        let v1 = try NameRecord.sign(name: name, value: .content(.sha256([1])), version: 1, issuedAt: now, ttl: 600, owner: owner)
        let v2 = try NameRecord.sign(name: name, value: .content(.sha256([2])), version: 2, issuedAt: now, ttl: 600, owner: owner)
        #expect(try await nodes[2].dht.put(key: name.key, value: v2.encode()).count == 3)
        let clock = ContinuousClock()
        for node in nodes {
            var found: LookupResult?
            let elapsed = try await clock.measure { found = try await node.dht.lookup(.value, target: name.key) }
            let value = try #require(found?.value)
            #expect(try NameRecord.decode(value) == v2)
            if found!.messages > 0 { print("DHT over QUIC: value lookup on 8 nodes in \(elapsed), \(found!.messages) requests, \(found!.rounds) rounds") }
        }

        // Stale and forged records are refused by every holder.
        // (A holder refuses to publish it at all; any other node finds every holder refusing it.)
        func refused(_ node: NexusNode, _ record: NameRecord) async throws -> Bool {
            do { return try await node.dht.put(key: name.key, value: record.encode()).isEmpty } catch { return error.code == .staleRecord }
        }
        let thief = try NameRecord.sign(name: name, value: .content(.zero), version: 9, issuedAt: now, ttl: 600, owner: P256.Signing.PrivateKey())
        for node in nodes {
            #expect(try await refused(node, v1), "stale record accepted via \(node.record)")
            #expect(try await refused(node, thief), "forged record accepted via \(node.record)")
        }
        #expect(try NameRecord.decode(try #require(try await nodes[7].dht.lookup(.value, target: name.key).value)) == v2)

        // Provider records.
        let content = NexusHash.sha256(Array("manifest".utf8))
        #expect(try await nodes[3].dht.provide(key: content).count == 3)
        let providers = try await nodes[7].dht.lookup(.providers, target: content)
        #expect(providers.providers.map(\.id) == [nodes[3].record.id])
        #expect(providers.providers.first?.addresses == nodes[3].record.addresses)

        // Signed node records: published by the node, found by its id.
        let publication = try await nodes[4].publish()
        #expect(publication.nodeRecordStoredOn == 3)
        let byID = try await nodes[1].dht.lookup(.value, target: SignedNodeRecord.key(for: nodes[4].record.id))
        let signed = try SignedNodeRecord.decode(try #require(byID.value))
        try signed.verify(now: now)
        #expect(signed.record == nodes[4].record)

        // A client (no addresses) looks up through one node and stays out of routing tables.
        let clientNode = try await cluster.network.node("client", roles: ["client"])
        let clientCert = try PEMFile.certificateDERs(in: PEMFile.read(clientNode.configuration.certificate))[0]
        let client = NexusDHT()
        await client.attach(record: NodeRecord(id: NexusID(bytes: try NodeID(certificateDER: clientCert).bytes)!), peers: clientNode.peers)
        try await client.join(seeds: [nodes[0].address])
        let viaClient = try await client.lookup(.value, target: name.key)
        #expect(try NameRecord.decode(try #require(viaClient.value)) == v2)
        let clientRecord = try #require(await client.record)
        for node in nodes {
            let closest = try await node.dht.lookup(.node, target: clientRecord.id)
            #expect(!closest.closest.contains { $0.id == clientRecord.id })
        }
        await client.stop()
        await clientNode.close()

        // A node that leaves costs its peers a fast failure, not a stall.
        await nodes[5].close()
        let after = try await nodes[6].dht.lookup(.value, target: name.key)
        #expect(after.value != nil)
        await cluster.close()
    }

    @Test func resolvePicksAHealthyNodeOfTheServiceOverRealQUIC() async throws {
        let cluster = try await NexusTestCluster(count: 4)
        let nodes = cluster.nodes
        let owner = P256.Signing.PrivateKey()
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let endpoints = nodes[1...3].map { ServiceEndpoint(nodeID: $0.record.id, addresses: $0.record.addresses) }
        let record = try NameRecord.sign(name: try NexusName("video.svc"), value: .service(endpoints), version: 1, issuedAt: now, ttl: 600, owner: owner)
        #expect(try await nodes[0].dht.put(key: record.name.key, value: record.encode()).count == 3)

        // A client resolves through node 0 after node 2 has gone: 3 missed probes mark it down.
        let clientNode = try await cluster.network.node("resolver", roles: ["client"])
        let clientCert = try PEMFile.certificateDERs(in: PEMFile.read(clientNode.configuration.certificate))[0]
        let client = NexusDHT()
        await client.attach(record: NodeRecord(id: NexusID(bytes: try NodeID(certificateDER: clientCert).bytes)!), peers: clientNode.peers)
        try await client.join(seeds: [nodes[0].address])
        let found = try await client.lookup(.value, target: record.name.key)
        guard case .service(let listed) = try NameRecord.decode(try #require(found.value)).value else {
            Issue.record("not a service record"); return
        }
        await nodes[2].close()
        var health = ServiceResolver.HealthRule()
        health.interval = 150_000_000  // faster rounds than the 1 s default; timeout 100 ms, 3 failures
        let (selection, probes) = try await ServiceResolver(health: health, rounds: 4).resolve(listed, peers: clientNode.peers)
        print("resolve: \(probes.map { "\($0.node.shortHex) \($0.health) \($0.rttMilliseconds ?? -1)" }) -> \(selection.candidate.endpoint.nodeID.shortHex) \(selection.basis)")
        #expect(probes.first { $0.node == nodes[2].record.id }?.health == .down)
        #expect(selection.candidate.endpoint.nodeID != nodes[2].record.id)
        guard case .latency = selection.basis else { Issue.record("chosen without a latency: \(selection.basis)"); return }
        await client.stop()
        await clientNode.close()
        await cluster.close()
    }

    @Test func aNodeRequiringCTRefusesUnloggedPeers() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let log = try TransparencyLog.open(directory: network.directory + "/ct", create: true)
        let serverConfig = try network.configuration("server")
        let goodConfig = try network.configuration("good")
        let badConfig = try network.configuration("bad")
        for config in [serverConfig, goodConfig] {
            _ = try log.append(try PEMFile.certificateDERs(in: PEMFile.read(config.certificate))[0], now: 1)
        }
        let server = try await NexusNode.start(serverConfig, admission: CTAdmission(log: log))
        let serving = Task { await server.run() }
        try await server.join([])
        let good = try await Node.start(goodConfig)
        let bad = try await Node.start(badConfig)

        // The logged peer is served: its PING is answered (how fast is measured in benchmarks).
        _ = try await good.peers.client(for: server.address).ping()
        // The refused peer must not be served. It normally learns why at once (the server closes
        // the connection with the reason); the deadline keeps a lost CONNECTION_CLOSE (seen once
        // under heavy load: the client then waited for its idle timeout) from hanging the suite.
        let outcome = await withTaskGroup(of: String?.self) { group -> String? in
            group.addTask {
                do {
                    _ = try await bad.peers.client(for: server.address).ping()
                    return "served"
                } catch {
                    return "\(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))
                guard !Task.isCancelled else { return nil }
                await bad.close()  // ends the waiting PING (the group waits for every child)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        print("CT refusal seen by the peer: \(outcome ?? "no answer within 20 s")")
        #expect(outcome != "served", "a peer whose certificate is not logged was served")
        if let outcome { #expect(outcome.contains("CT log"), "the refusal does not say why: \(outcome)") }

        // The check itself: an inclusion proof for the logged one, a clear error for the other.
        guard case .admitted(let bundle) = server.admission!.check([try PEMFile.certificateDERs(in: PEMFile.read(goodConfig.certificate))[0]]) else {
            Issue.record("a logged certificate was refused"); return
        }
        try bundle.verify(publicKey: log.publicKey)
        guard case .refused(let why) = server.admission!.check([try PEMFile.certificateDERs(in: PEMFile.read(badConfig.certificate))[0]]) else {
            Issue.record("an unlogged certificate was admitted"); return
        }
        #expect(why.code == .notLogged)
        await good.close()
        await bad.close()
        await server.close()
        await serving.value
    }
}

// Real QUIC in real time: `.serialized` puts it in `make test`'s one-at-a-time group (scripts/swift-tests.sh).
@Suite(.serialized) struct RelayOverQUICTests {
    /// A → R → B over real QUIC, chosen by A's live router (its own PING/PONG probes and R's gossip) because A's direct path to B is
    /// slowed (100 ms each way) by a user-space UDP delay forwarder; the relayed chunk verifies.
    @Test func theRouterPicksTheRelayAndTheFetchFollowsIt() async throws {
        let run = try await RelayBenchmark.run(delay: .milliseconds(100), chunkBytes: 64 * 1024, fetches: 2)
        print(run)
        #expect(run.rttDirect >= 200, "the delay forwarder did not slow the direct path: \(run)")
        // The router decides on measured RTTs. On an overloaded machine even loopback RTTs can
        // approach the added delay, and then the direct path may honestly win; the decision must
        // follow the measurements either way.
        if run.rttToRelay + run.rttRelayToTarget + 50 < run.rttDirect {
            #expect(run.viaRelay, "route \(run.route) does not go through R: \(run)")
            #expect(run.route == "A → R → B")
        } else {
            print("relay test: loopback RTTs (\(run.rttToRelay) + \(run.rttRelayToTarget) ms) too close to the slowed path (\(run.rttDirect) ms) to require the relay")
        }
        #expect(run.relayed.count == 2 && run.direct.count == 2)
    }
}
