import Foundation
import STOQContent
import STOQEdge
import STOQNode
import STOQSimulation
import STOQTestSupport
import STOQTransport
import Testing

/// The value of a Prometheus sample line `name{labels} value` (labels as written, or none).
func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1).trimmingCharacters(in: .whitespaces))
    }
    return nil
}

@Suite(.serialized) struct NodeDaemonTests {
    @Test func settingsAreValidatedWithClearErrors() async throws {
        #expect(try HealthSettings().monitorConfiguration() == .init())
        #expect(throws: NodeError.self) { try HealthSettings(intervalMilliseconds: 100, timeoutMilliseconds: 100).monitorConfiguration() }
        #expect(throws: NodeError.self) { try HealthSettings(failureThreshold: 0).monitorConfiguration() }
        #expect(!ServeThrottleSettings().isActive && ServeThrottleSettings(connectionBytesPerSecond: 1).isActive)
        await #expect {
            _ = try await AdminServer.bind(PeerAddress(host: "localhost", port: 0), routes: [:])
        } throws: { error in
            (error as? NodeError)?.code == .invalidArgument && "\(error)".contains("IPv6")
        }
        // A configuration file round-trips with the new fields.
        let network = try TestNetwork()
        defer { network.close() }
        var c = try network.configuration("x")
        c.admin = PeerAddress("[::1]:9464")
        c.health = HealthSettings(intervalMilliseconds: 500)
        c.throttle = ServeThrottleSettings(totalBytesPerSecond: 1_000_000)
        c.logLevel = "debug"
        let decoded = try JSONDecoder().decode(NodeConfiguration.self, from: JSONEncoder().encode(c))
        #expect(decoded.admin == c.admin && decoded.health == c.health && decoded.throttle == c.throttle && decoded.logLevel == "debug")
    }

    @Test func metricsEndpointShowsRealValuesAfterAFetch() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var originConfig = try network.configuration("origin")
        originConfig.admin = PeerAddress("[::1]:0")
        let origin = try await Node.start(originConfig)
        let content = try network.publish(on: origin, bytes: 1 << 20, seed: 11)
        var edgeConfig = try network.configuration("edge", roles: ["edge"], upstream: [origin.address])
        edgeConfig.admin = PeerAddress("[::1]:0")
        let edge = try await Node.start(edgeConfig)
        let client = try await network.node("client", roles: ["client"])
        let originAdmin = try #require(origin.admin).address
        let edgeAdmin = try #require(edge.admin).address
        #expect(originAdmin.host == "::1" && originAdmin.port != 0)

        try await withServing(origin) {
            try await withServing(edge) {
                let peer = try await client.peers.client(for: edge.address)
                _ = try await ContentFetcher(store: client.store, sources: [peer]).fetch(content.id)
                // A second client fetch through the edge: answered from its cache.
                let second = try await network.node("client-2", roles: ["client"])
                let peer2 = try await second.peers.client(for: edge.address)
                let again = try await ContentFetcher(store: second.store, sources: [peer2]).fetch(content.id)
                await second.close()

                let (status, text) = try await httpGet(port: originAdmin.port, path: "/metrics")
                #expect(status.contains("200"))
                let served = origin.server.served
                #expect(served.bytes > 0)
                #expect(sample(text, "stoq_served_bytes_total") == Double(served.bytes))
                #expect(sample(text, "stoq_requests_total{type=\"get_chunk\"}") == Double(served.requests))
                #expect(sample(text, "stoq_serve_duration_seconds_count") == Double(served.requests))
                #expect(sample(text, "stoq_connections") == 1)  // the edge
                #expect(sample(text, "stoq_store_chunks").map { $0 > 0 } == true)

                let (_, edgeText) = try await httpGet(port: edgeAdmin.port, path: "/metrics")
                let hits = try #require(sample(edgeText, "stoq_cache_hits_total"))
                let misses = try #require(sample(edgeText, "stoq_cache_misses_total"))
                #expect(hits >= Double(again.chunks), "the second fetch's chunks were cache hits")
                #expect(misses >= 1)
                #expect(sample(edgeText, "stoq_received_bytes_total").map { $0 > 0 } == true)
                #expect(sample(edgeText, "stoq_connections").map { $0 >= 1 } == true)
                // The edge probes its upstream: health state and RTT per peer.
                let health = try #require(edge.health)
                try await eventually(within: 5) { await health.snapshot().first?.answered ?? 0 > 0 }
                let (_, probed) = try await httpGet(port: edgeAdmin.port, path: "/metrics")
                #expect(sample(probed, "stoq_peer_up{peer=\"\(origin.address)\"}") == 1)
                #expect(sample(probed, "stoq_peer_rtt_seconds{peer=\"\(origin.address)\"}").map { $0 > 0 && $0.isFinite } == true, "a measured RTT is exported (its size is a benchmark's business)")

                let (statusLine, json) = try await httpGet(port: edgeAdmin.port, path: "/status")
                #expect(statusLine.contains("200") && json.contains("\"cache\""))
                let (missing, _) = try await httpGet(port: edgeAdmin.port, path: "/nope")
                #expect(missing.contains("404"))
            }
        }
        await client.close()
    }

    @Test func healthProbesReportAStoppedPeerDownAtOnceAndUpWhenItReturns() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let peerConfig = try network.configuration("peer")
        let peer = try await Node.start(peerConfig)
        let port = peer.address.port
        var watcherConfig = try network.configuration("watcher")
        watcherConfig.peers = [peer.address]
        // A generous probe timeout: the test is about the mechanism, and a loaded debug run must not
        // flap a live peer down (the 100 ms default is for release nodes).
        watcherConfig.health = HealthSettings(intervalMilliseconds: 300, timeoutMilliseconds: 250, failureThreshold: 3)
        let watcher = try await Node.start(watcherConfig)
        let health = try #require(watcher.health)
        let changes = await health.changes()
        let watching = Task { await watcher.run() }
        let serving = Task { await peer.run() }

        // Up, with an RTT, in status.
        try await eventually(within: 5) { await health.snapshot().first?.answered ?? 0 >= 2 }
        let status = await watcher.statusJSON()
        #expect(status.contains("\"state\" : \"up\"") && status.contains("rtt_ms"))
        #expect(try await watcher.peers.client(for: peer.address).ping() > .zero)

        // The peer stops: three unanswered probes later a down change arrives, and the peer set
        // knows at once (an edge tries its healthy upstreams first).
        await peer.close()
        await serving.value
        // Wait for a down change that holds (an earlier flap under load may have queued a stale one).
        let down = try await first(changes, within: 10) { !$0.isUp && $0.peer == peer.address }
        #expect(down.peer == peer.address)
        try await eventually(within: 10) { watcher.peers.isDown(peer.address) }
        let other = PeerAddress(host: "::1", port: 9)
        #expect(watcher.peers.healthyFirst([peer.address, other]) == [other, peer.address])
        let report = try #require(await health.snapshot().first)
        #expect(!report.isUp && report.consecutiveFailures >= 3)
        #expect(watcher.metrics.render().contains("stoq_peer_up{peer=\"\(peer.address)\"} 0"))

        // It comes back on the same address: the next probe dials it and it is up again.
        var again = peerConfig
        again.listen = PeerAddress(host: "::1", port: port)
        again.store += "-2"
        let revived = try await Node.start(again)
        let revivedServing = Task { await revived.run() }
        let up = try await first(changes, within: 15) { $0.isUp && $0.peer == peer.address }
        #expect(up.peer == peer.address)
        try await eventually(within: 15) { !watcher.peers.isDown(peer.address) }
        await revived.close()
        await revivedServing.value
        await watcher.close()
        await watching.value
    }

    @Test func throttledServerServesAnInteractiveClientBeforeABulkOne() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var config = try network.configuration("server")
        // A 2 MB/s uplink: the bulk client alone keeps it busy for two seconds.
        config.throttle = ServeThrottleSettings(totalBytesPerSecond: 2_000_000)
        let server = try await Node.start(config)
        var rng = SimRandom(seed: 0x7407)
        func chunk(_ size: Int) throws -> ChunkID {
            try server.store.put((0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        let bulkChunks = try (0..<16).map { _ in try chunk(256 << 10) }
        let smallChunks = try (0..<4).map { _ in try chunk(16 << 10) }
        let bulk = try await network.node("bulk", roles: ["client"])
        let interactive = try await network.node("interactive", roles: ["client"])
        let log = NoteLog()
        try await withServing(server) {
            let b = try await bulk.peers.client(for: server.address)
            let i = try await interactive.peers.client(for: server.address)
            let (started, startedNow) = AsyncStream<Int>.makeStream()
            let bulkDone = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in bulkChunks {
                        group.addTask {
                            _ = try await b.fetchChunk(id) { _ in startedNow.yield(1) }
                            log.add("bulk")
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Once bulk bytes flow, the interactive client asks for its small objects one by one.
            _ = try await first(started, within: 10) { _ in true }
            // Status shows the bulk responses in progress.
            let status = await server.statusJSON()
            #expect(status.contains("\"class\" : \"bulk\""), "\(status)")
            for id in smallChunks {
                _ = try await i.fetchChunk(id)
                log.add("interactive")
            }
            try await bulkDone.value
            let order = log.all
            let lastInteractive = try #require(order.lastIndex(of: "interactive"))
            let bulkDoneFirst = order[..<lastInteractive].filter { $0 == "bulk" }.count
            // First in, first out it would wait for all 16; with priority it waits for none, but
            // between its requests (round trips) bulk bytes flow, so allow up to half.
            #expect(bulkDoneFirst <= 8, "the interactive client waited for \(bulkDoneFirst) of 16 bulk chunks (order \(order))")
            // The throttle classed them so: the small requests interactive, the bulk ones bulk.
            let granted = await server.server.throttledBytes()
            #expect(granted[.interactive] == 4 * (16 << 10))
            #expect(granted[.bulk] == 16 * (256 << 10))
        }
        await bulk.close()
        await interactive.close()
    }

    @Test func aPerConnectionRateHoldsAClientBelowIt() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var config = try network.configuration("server")
        config.throttle = ServeThrottleSettings(connectionBytesPerSecond: 2_000_000, connectionBurstBytes: 256 << 10)
        let server = try await Node.start(config)
        var rng = SimRandom(seed: 0xc0)
        let chunks = try (0..<4).map { _ in try server.store.put((0..<(256 << 10)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        let client = try await network.node("client", roles: ["client"])
        try await withServing(server) {
            let peer = try await client.peers.client(for: server.address)
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in chunks { group.addTask { _ = try await peer.fetchChunk(id) } }
                try await group.waitForAll()
            }
            // 1 MiB through a 2 MB/s bucket holding 256 KiB cannot take less than (1 MiB - 256 KiB) / 2 MB/s.
            let floor = Double((1 << 20) - (256 << 10)) / 2_000_000
            #expect((ContinuousClock.now - start).seconds >= floor * 0.95)
            #expect(await server.server.throttledBytes()[.bulk] == 1 << 20)
        }
        await client.close()
    }

    @Test func twoBulkClientsShareAThrottledServerEqually() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var config = try network.configuration("server")
        config.throttle = ServeThrottleSettings(totalBytesPerSecond: 6_000_000)
        let server = try await Node.start(config)
        var rng = SimRandom(seed: 0x5ea7)
        let chunks = try (0..<24).map { _ in try server.store.put((0..<(256 << 10)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        let a = try await network.node("a", roles: ["client"])
        let b = try await network.node("b", roles: ["client"])
        let received = ByteTally()
        try await withServing(server) {
            let ca = try await a.peers.client(for: server.address)
            let cb = try await b.peers.client(for: server.address)
            // Each asks for 12 chunks at once; when the first finishes, the other must be close behind.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (client, name, ids) in [(ca, "a", Array(chunks[..<12])), (cb, "b", Array(chunks[12...]))] {
                    group.addTask {
                        try await withThrowingTaskGroup(of: Void.self) { inner in
                            for id in ids { inner.addTask { _ = try await client.fetchChunk(id) { n in received.add(name, n) } } }
                            try await inner.waitForAll()
                        }
                        received.finish(name)
                    }
                }
                try await group.waitForAll()
            }
        }
        let atFirstFinish = try #require(received.snapshotAtFirstFinish)
        let total = Double(12 * (256 << 10))
        let share = Double(min(atFirstFinish["a"] ?? 0, atFirstFinish["b"] ?? 0)) / total
        #expect(share >= 0.75, "when one client had all its bytes the other had \(Int(share * 100)) % of its own (\(atFirstFinish))")
        await a.close()
        await b.close()
    }
}

/// Bytes received per client, and a snapshot when the first client finished.
///
/// `@unchecked Sendable`: state behind `lock`.
final class ByteTally: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [String: Int] = [:]
    private var snapshot: [String: Int]?
    func add(_ name: String, _ n: Int) { lock.withLock { bytes[name, default: 0] += n } }
    func finish(_ name: String) { lock.withLock { if snapshot == nil { snapshot = bytes } } }
    var snapshotAtFirstFinish: [String: Int]? { lock.withLock { snapshot } }
}
