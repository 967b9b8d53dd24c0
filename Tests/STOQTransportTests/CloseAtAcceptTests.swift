import NIOCore
import Testing

@testable import STOQTransport

/// A server that refuses connections the moment it accepts them (as Nexus does for a peer whose
/// certificate is not logged) must leave every client with a prompt, clear error: never a hang,
/// never a crash.
@Suite(.serialized) struct CloseAtAcceptTests {
    @Test(arguments: [0, 1, 2])
    func clientsOfARefusingServerFailPromptly(mode: Int) async throws {
        var config = EndpointConfiguration()
        config.idleTimeout = .seconds(30)
        let pair = try await Pair.make(config: config)
        let refuser = Task {
            for await conn in pair.server.incomingConnections {
                switch mode {
                case 0: await conn.close(code: 9, reason: "refused")
                case 1: Task { await conn.close(code: 9, reason: "refused") }
                default:
                    // Read the first request, then refuse.
                    Task {
                        var it = conn.incomingStreams.makeAsyncIterator()
                        _ = await it.next()
                        await conn.close(code: 9, reason: "refused")
                    }
                }
            }
        }
        let port = pair.server.localAddress.port!
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<25 {
                        do {
                            let c = try await pair.client.connect(host: "::1", port: port)
                            if mode == 1 {
                                // Wait for the close without sending anything.
                                let reason = await c.closed()
                                #expect(reason.applicationCode == 9 || reason.code != .internalError, "\(reason)")
                                // Prompt: closed by the server, not left to the 30 s idle timeout.
                                #expect(reason.code != .idleTimeout, "\(reason)")
                                continue
                            }
                            let s = try await c.openBidirectionalStream()
                            try await s.write(Array("request".utf8))
                            try await s.finish()
                            _ = try await s.readAll()
                            Issue.record("a refused connection answered a request")
                        } catch let e as STOQError {
                            #expect(e.code != .internalError, "\(e)")
                            #expect(e.code != .idleTimeout, "a refused connection was left to its idle timeout: \(e)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        // Promptness is checked above (no connection waited for its idle timeout); the time is
        // printed, not asserted, since a loaded machine stretches it.
        print("200 refused connections (mode \(mode)) took \(ContinuousClock.now - start)")
        refuser.cancel()
        await pair.close()
    }
}

extension CloseAtAcceptTests {
    /// Endpoints closed while their connections are being refused tear down cleanly.
    @Test func endpointsClosedMidRefusalTearDownCleanly() async throws {
        for round in 0..<20 {
            let pair = try await Pair.make()
            let refuser = Task {
                for await conn in pair.server.incomingConnections { await conn.close(code: 9, reason: "refused") }
            }
            let port = pair.server.localAddress.port!
            let clients = Task {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<4 {
                        group.addTask {
                            for _ in 0..<10 {
                                guard let c = try? await pair.client.connect(host: "::1", port: port) else { continue }
                                if let s = try? await c.openBidirectionalStream() {
                                    try? await s.write(Array("x".utf8))
                                    _ = try? await s.readAll()
                                }
                            }
                        }
                    }
                }
            }
            // Close both endpoints part-way through, alternating which goes first.
            for _ in 0..<(round % 5) { await Task.yield() }
            if round % 2 == 0 { await pair.server.close(); await pair.client.close() }
            else { await pair.client.close(); await pair.server.close() }
            await clients.value
            refuser.cancel()
        }
    }
}
