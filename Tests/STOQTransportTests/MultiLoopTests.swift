import NIOCore
import NIOPosix
import Testing

@testable import STOQTransport

/// Endpoints with two sockets and event loops (`EndpointConfiguration.eventLoops = 2`).
@Suite(.serialized) struct MultiLoopTests {
    /// Every EndpointTests scenario over real QUIC, against a server with two loops (and for
    /// some, a client with two as well, whose replies then often reach the other socket).
    @Test(arguments: [(2, 1), (2, 2)]) func endpointTestsWithTwoLoops(server: Int, client: Int) async throws {
        try await Pair.$serverLoops.withValue(server) {
            try await Pair.$clientLoops.withValue(client) {
                let t = EndpointTests()
                try await t.connectAcceptAndStreamsBothDirections()
                try await t.tenMegabytesBitExact()
                try await t.hundredParallelStreams()
                try await t.mutualTLSAccepted()
                try await t.clientFromForeignCARefusedOnBothSides()
                try await t.serverFromForeignCARefusedByClient()
                try await t.clientWithoutCertificateRefusedWhenRequired()
                try await t.insecureClientAcceptsAnyServer()
                try await t.cipherRestriction()
                try await t.expiredCertificateRefused()
                try await t.wrongALPNRefused()
                try await t.idleTimeoutFires()
                try await t.closeWithCodeAndReasonSeenByPeer()
                try await t.streamResetSeenByReader()
                try await t.migrationMidTransfer()
                try await t.identityRotationKeepsConnections()
                try await t.garbageDatagramsDoNotHurt()
                try await t.unknownVersionGetsVersionNegotiation()
                try await t.connectionLimitRefusesWithClearError()
            }
        }
    }

    @Test func socketsShareOneAddressAndTheTableSharesItsSecrets() async throws {
        var config = EndpointConfiguration()
        config.eventLoops = 2
        let server = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("server"), configuration: config)
        #expect(server.eventLoopCount == 2)
        let a = server.cores[0], b = server.cores[1]
        #expect(a.eventLoop !== b.eventLoop)
        // Retry tokens one socket issues verify at the other; reset tokens agree.
        #expect(a.retrySecret == b.retrySecret)
        #expect(a.resetSecret == b.resetSecret)
        let addresses = try await [a, b].asyncMap { core in try await core.eventLoop.submit { core.channel?.localAddress }.get() }
        #expect(addresses[0] == addresses[1])
        #expect(addresses[0]?.port == server.localAddress.port)
        // A taken port is refused, as with one socket, not shared.
        do {
            let other = try await Endpoint.bind(host: "::1", port: server.localAddress.port!, tls: try Certs.tls("other"), configuration: config)
            await other.close()
            Issue.record("a second endpoint joined a port in use")
        } catch {}
        config.eventLoops = 0
        await #expect(throws: STOQError.self) {
            _ = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("zero"), configuration: config)
        }
        await server.close()
    }

    /// Eight clients from eight sockets: the connections are spread four and four (each goes to
    /// the loop holding fewest) whatever the kernel's hash did, and all of them carry data.
    @Test func connectionsSpreadOverTheLoops() async throws {
        var config = EndpointConfiguration()
        config.eventLoops = 2
        let server = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("server"), configuration: config)
        let echo = Task {
            await withDiscardingTaskGroup { group in
                for await c in server.incomingConnections {
                    group.addTask {
                        for await s in c.incomingStreams {
                            guard let data = try? await s.readAll() else { continue }
                            try? await s.write(data)
                            try? await s.finish()
                        }
                    }
                }
            }
        }
        var clients: [Endpoint] = []
        var connections: [Connection] = []
        for i in 0..<8 {
            let client = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("client\(i)"))
            clients.append(client)
            connections.append(try await client.connect(host: "::1", port: server.localAddress.port!))
        }
        for (i, c) in connections.enumerated() {
            let s = try await c.openBidirectionalStream()
            let payload = bytes(200_000, seed: UInt64(i))
            try await s.write(payload)
            try await s.finish()
            #expect(Array(buffer: try await s.readAll()) == payload)
        }
        let stats = await server.loopStatistics
        #expect(stats.map(\.connections) == [4, 4], "\(stats)")
        #expect(await server.connectionCount == 8)
        for c in clients { await c.close() }
        await server.close()
        echo.cancel()
    }

    /// The client moves to a new port six times during a 3 MiB upload, each time once everything
    /// written so far was acknowledged, with one and two loops on each side. Each new address
    /// hashes to either socket; datagrams reaching the socket that does not own the connection are
    /// handed over. The data arrives bit-exact every time, and over the twelve moves against a
    /// two-loop server (and the twelve of a two-loop client) some datagrams were handed over
    /// (each move lands on the other socket with probability 1/2).
    @Test func migrationAcrossLoops() async throws {
        var serverHandOvers = 0
        var clientHandOvers = 0
        for (serverLoops, clientLoops) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
            let (server, client) = try await migrate(serverLoops: serverLoops, clientLoops: clientLoops, moves: 6)
            if serverLoops > 1 { serverHandOvers += server }
            if clientLoops > 1 { clientHandOvers += client }
        }
        #expect(serverHandOvers > 0)
        #expect(clientHandOvers > 0)
    }

    /// Eleven moves of one connection (one per 256 KiB written), faster than the server replaces the connection IDs each
    /// move retires: once none is unused, the client moves keeping its current one (the server
    /// sees a NAT rebinding). Before, the ninth move left the connection on the closed socket.
    @Test func manyMovesInQuickSuccession() async throws {
        _ = try await migrate(serverLoops: 1, clientLoops: 1, moves: 11)
    }

    /// Returns the datagrams the server's and the client's sockets handed to another loop.
    private func migrate(serverLoops: Int, clientLoops: Int, moves: Int) async throws -> (Int, Int) {
        var serverConfig = EndpointConfiguration()
        serverConfig.eventLoops = serverLoops
        serverConfig.idleTimeout = .seconds(8)
        var clientConfig = serverConfig
        clientConfig.eventLoops = clientLoops
        let server = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("server"), configuration: serverConfig)
        let client = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("client"), configuration: clientConfig)
        async let accepted: Connection? = { for await c in server.incomingConnections { return c }; return nil }()
        let c = try await client.connect(host: "::1", port: server.localAddress.port!)
        let s = try #require(await accepted)
        let payload = bytes(3 << 20, seed: 21)
        let stream = try await c.openUnidirectionalStream(priority: .bulk)
        let writer = Task {
            var offset = 0
            var ports: Set<Int> = []
            let step = 256 * 1024
            while offset < payload.count {
                try await stream.write(ByteBuffer(bytes: payload[offset..<offset + step]))
                offset += step
                do {
                    let deadline = ContinuousClock.now + .seconds(5)
                    while let p = await stream.sendProgress(), p.acknowledged < UInt64(offset) {
                        guard ContinuousClock.now < deadline else {
                            throw STOQError(.internalError, "\(p.acknowledged) of \(offset) bytes acknowledged after 5 s, \(ports.count) moves")
                        }
                        try await Task.sleep(for: .milliseconds(2))
                    }
                }
                if ports.count < moves {
                    try await client.rebind(host: "::1", port: 0)
                    ports.insert(client.localAddress.port ?? 0)
                }
            }
            try await stream.finish()
            return ports.count
        }
        var it = s.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await it.next())
        let received = try await incoming.readAll(limit: 8 << 20)
        let moved = try await writer.value
        #expect(Array(buffer: received) == payload, "server \(serverLoops) loops, client \(clientLoops)")
        #expect(moved == moves)
        let serverStats = await server.loopStatistics
        let clientStats = await client.loopStatistics
        await client.close()
        await server.close()
        return (serverStats.map(\.handedOver).reduce(0, +), clientStats.map(\.handedOver).reduce(0, +))
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
