import Foundation
import STOQExchange
import STOQNode
import STOQTestSupport
import STOQTransport
import Testing

/// `PeerSet.onConnect` (issue 15 item 7): the hook runs on every connection the set makes — the
/// first dial and a re-dial after the connection dropped — before the client is handed out, so
/// `stoq get --grant` presents its grant on a re-dialled connection too.
@Suite(.serialized) struct PeerSetConnectHookTests {
    final class Calls: @unchecked Sendable {
        private let lock = NSLock()
        private var clients: [ObjectIdentifier] = []
        func add(_ client: PeerClient) { lock.withLock { clients.append(ObjectIdentifier(client)) } }
        var all: [ObjectIdentifier] { lock.withLock { clients } }
    }

    @Test func theHookRunsOnTheFirstDialAndOnEveryRedialBeforeTheClientIsHandedOut() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let reader = try await network.node("client", roles: ["client"])
        let calls = Calls()
        await reader.peers.onConnect { _, client in
            // Slow on purpose: a caller must not get the client before the hook is done.
            try? await Task.sleep(for: .milliseconds(50))
            calls.add(client)
        }
        try await withServing(origin) {
            let first = try await reader.peers.client(for: origin.address)
            #expect(calls.all == [ObjectIdentifier(first)])
            _ = try await first.ping()
            // The connection drops; the next use dials again, and the hook runs on that one too.
            await first.connection.close()
            try await eventually(within: 10) { await reader.peers.connected.isEmpty }
            let second = try await reader.peers.client(for: origin.address)
            #expect(second !== first)
            #expect(calls.all == [ObjectIdentifier(first), ObjectIdentifier(second)])
            _ = try await second.ping()
            // An open connection is reused: no new hook call.
            _ = try await reader.peers.client(for: origin.address)
            #expect(calls.all.count == 2)
        }
    }
}
