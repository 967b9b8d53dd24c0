import Foundation
import NIOCore
import STOQContent
import STOQNode
import STOQTransport
import STOQWire
import Testing
import STOQTestSupport

/// Sends RELAY_OPEN for `host`/`port` (then `then`, then FIN) on a new stream of `connection` and
/// returns the relay's ERROR message, or nil when it carried the stream.
private func relayError(_ connection: Connection, host: String, port: Int, targetID: WireID? = nil, then request: ByteBuffer? = nil) async throws -> String? {
    let stream = try await connection.openBidirectionalStream()
    var out = STOQMessage.relayOpen(target: targetID, host: host, port: UInt16(clamping: port)).encoded()
    if var request { out.writeBuffer(&request) }
    try await stream.write(out)
    try await stream.finish()
    var decoder = FrameDecoder(maximumPayloadLength: 64 * 1024)
    decoder.handle(bytes: try await stream.readAll(limit: 1 << 20))
    guard let frame = try decoder.pollFrame() else { return nil }
    if case .error(_, let message) = try STOQMessage.decode(frame) { return message }
    return nil
}

/// A relay carries STOQ traffic to STOQ nodes only, and its slots come back whichever side goes
/// away (issue 11, "What was found" 3–5), over real QUIC on [::1].
@Suite(.serialized) struct RelayLimitsTests {
    @Test func theTargetRulesFollowTheRelaysOwnScope() throws {
        let loopback = try SocketAddress(ipAddress: "::1", port: 4433)
        let ula = try SocketAddress(ipAddress: "fd00::9", port: 4433)
        let any = try SocketAddress(ipAddress: "::", port: 4433)
        func refused(_ host: String, _ port: Int, own: SocketAddress, locals: [SocketAddress] = []) throws -> Bool {
            RelayService.refusal(target: try SocketAddress(ipAddress: host, port: port), own: own, localAddresses: locals) != nil
        }
        // Never: unspecified, multicast, IPv4 in disguise, documentation, discard, port 0, itself.
        for own in [loopback, ula, any] {
            for (host, port) in [("::", 4434), ("ff02::1", 4434), ("ff05::2", 4434), ("::ffff:127.0.0.1", 4434), ("64:ff9b::a00:1", 4434),
                                 ("2001:db8::1", 4434), ("100::1", 4434), ("::1", 0), ("fd00::1", 0)] {
                #expect(try refused(host, port, own: own), "\(host) \(port) from \(own)")
            }
        }
        #expect(try refused("::1", 4433, own: loopback))
        #expect(try refused("fd00::9", 4433, own: ula))
        #expect(try refused("fd00::9", 4433, own: any, locals: [ula]))
        #expect(try refused("::1", 4433, own: any))
        // Scope: loopback only from loopback; never loopback or link-local from ULA or global.
        #expect(try !refused("::1", 4434, own: loopback))
        #expect(try refused("fd00::1", 4434, own: loopback))
        #expect(try refused("2a00:1450::1", 4434, own: loopback))
        #expect(try !refused("fd00::1", 4434, own: ula))
        #expect(try !refused("2a00:1450::1", 4434, own: ula))
        #expect(try refused("::1", 4434, own: ula))
        #expect(try refused("fe80::1", 4434, own: ula))
        #expect(try refused("::1", 4434, own: any))
        #expect(try !refused("fd00::9", 4434, own: any, locals: [ula]))
    }

    @Test func refusedTargetsFailAloneAndTheRelayKeepsServing() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        var relayConfig = try network.configuration("relay", roles: ["relay"])
        relayConfig.admin = PeerAddress(host: "::1", port: 0)
        let relay = try await Node.start(relayConfig)
        let client = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 300_000, seed: 93)
        try await withServing(origin) {
            try await withServing(relay) {
                let toRelay = try await client.peers.client(for: relay.address).connection
                let adminPort = try #require(relay.admin?.address.port)
                for (host, port, words) in [
                    ("::1", 0, "port 0"), ("::", origin.address.port, "unspecified"), ("ff02::1", origin.address.port, "multicast"),
                    ("2001:db8::1", origin.address.port, "documentation"), ("fe80::1", origin.address.port, "loopback nodes only"),
                    ("::1", relay.address.port, "this relay itself"), ("example.org", 443, "not a numeric IPv6 address"),
                ] {
                    let message = try await relayError(toRelay, host: host, port: port)
                    #expect(message?.contains(words) == true, "[\(host)]:\(port): \(message ?? "carried")")
                    // The relay's socket and its connections are untouched, and it says it is healthy.
                    _ = try await PeerClient(connection: toRelay, name: "relay").ping()
                    let health = try await httpGet(port: adminPort, path: "/healthz")
                    #expect(health.status.contains("200"), "\(health)")
                }
                // A nested RELAY_OPEN is refused; a plain request is carried.
                let nested = STOQMessage.relayOpen(target: nil, host: "::1", port: UInt16(origin.address.port)).encoded()
                let message = try await relayError(toRelay, host: "::1", port: origin.address.port, then: nested)
                #expect(message?.contains("cannot be relayed again") == true, "\(message ?? "carried")")
                let viaRelay = PeerClient(relay: toRelay, to: origin.address)
                let report = try await ContentFetcher(store: client.store, sources: [viaRelay]).fetch(content.id)
                #expect(report.sources.first?.bytes ?? 0 >= content.bytes.count)
                #expect(await relay.healthProblem() == nil)
            }
        }
        // Once its socket is closed, the node says so.
        #expect(await relay.healthProblem() != nil)
        await client.close()
    }

    @Test func aTargetOfAnotherNetworkOrWithAnotherIDIsRefused() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let relay = try await network.node("relay", roles: ["relay"])
        let client = try await network.node("client", roles: ["client"])
        var foreignConfig = try network.foreignConfiguration("stranger")
        foreignConfig.roles = ["origin"]
        let stranger = try await Node.start(foreignConfig)
        try await withServing(origin) {
            try await withServing(relay) {
                try await withServing(stranger) {
                    let toRelay = try await client.peers.client(for: relay.address).connection
                    let ping = STOQMessage.ping(nonce: 1, sentAtMicros: 0).encoded()
                    // A node whose certificate another CA issued: the relay's handshake fails.
                    let foreign = try await relayError(toRelay, host: "::1", port: stranger.address.port, then: ping)
                    #expect(foreign?.contains("cannot reach") == true, "\(foreign ?? "carried")")
                    // A node of the network, but not the one the requester named.
                    let wrong = try #require(WireID(relay.nodeID.bytes))
                    let impostor = try await relayError(toRelay, host: "::1", port: origin.address.port, targetID: wrong, then: ping)
                    #expect(impostor?.contains("not the node the requester named") == true, "\(impostor ?? "carried")")
                    // The right id is carried.
                    let right = try #require(WireID(origin.nodeID.bytes))
                    #expect(try await relayError(toRelay, host: "::1", port: origin.address.port, targetID: right, then: ping) == nil)
                }
            }
        }
        await client.close()
    }

    @Test func slotsComeBackWhenTheRequesterGoesAwayOrItsRequestIsLate() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        // Long request timeouts: the slots must come back because the hog went away.
        var originConfig = try network.configuration("origin")
        var patient = PeerLimits()
        patient.requestTimeoutMilliseconds = 600_000
        originConfig.limits = patient
        let origin = try await Node.start(originConfig)
        var relayConfig = try network.configuration("relay", roles: ["relay"])
        relayConfig.maxRelayStreamsPerConnection = 4
        relayConfig.maxRelayStreams = 6
        var limits = PeerLimits()
        limits.requestTimeoutMilliseconds = 600_000
        relayConfig.limits = limits
        let relay = try await Node.start(relayConfig)
        let hog = try await network.node("hog", roles: ["client"])
        let client = try await network.node("client", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 200_000, seed: 94)
        @Sendable func active() async throws -> Int {
            let status = try await PeerClient(connection: try await client.peers.client(for: relay.address).connection, name: "r").status()
            let doc = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
            return ((doc?["relay"] as? [String: Any])?["active"] as? Int) ?? -1
        }
        try await withServing(origin) {
            try await withServing(relay) {
                let hogConnection = try await hog.peers.client(for: relay.address).connection
                // Streams whose relayed request never completes (a partial PING, no FIN).
                var partial = STOQMessage.ping(nonce: 3, sentAtMicros: 0).encoded()
                let head = partial.readSlice(length: 2)!
                var open: [QUICStream] = []
                for _ in 0..<4 {
                    let s = try await hogConnection.openBidirectionalStream()
                    var out = STOQMessage.relayOpen(target: nil, host: "::1", port: UInt16(origin.address.port)).encoded()
                    var h = head
                    out.writeBuffer(&h)
                    try await s.write(out)
                    open.append(s)
                }
                try await eventually(within: 30) { try await active() == 4 }
                // Its fifth is refused: one connection holds at most four slots; others still get theirs.
                let fifth = try await relayError(hogConnection, host: "::1", port: origin.address.port, then: STOQMessage.ping(nonce: 4, sentAtMicros: 0).encoded())
                #expect(fifth?.contains("maximum") == true, "\(fifth ?? "carried")")
                let toRelay = try await client.peers.client(for: relay.address).connection
                _ = try await PeerClient(relay: toRelay, to: origin.address).ping()
                // The hog goes away: every slot it held is free again.
                await hog.close()
                try await eventually(within: 30) { try await active() == 0 }
                let report = try await ContentFetcher(store: client.store, sources: [PeerClient(relay: toRelay, to: origin.address)]).fetch(content.id)
                #expect(report.sources.first?.bytes ?? 0 >= content.bytes.count)
                _ = open
            }
        }
        await client.close()

        // A relayed request that is not complete within the request timeout frees its slot too.
        var quick = try network.configuration("relay2", roles: ["relay"])
        var short = PeerLimits()
        short.requestTimeoutMilliseconds = 300
        quick.limits = short
        let other = try await network.node("other", roles: ["client"])
        quick.operators = [network.operatorID, other.nodeID.hex]  // other reads relay2's STATUS below
        let relay2 = try await Node.start(quick)
        let origin2 = try await network.node("origin2")
        try await withServing(origin2) {
            try await withServing(relay2) {
                let c = try await other.peers.client(for: relay2.address).connection
                let s = try await c.openBidirectionalStream()
                var out = STOQMessage.relayOpen(target: nil, host: "::1", port: UInt16(origin2.address.port)).encoded()
                var h = STOQMessage.ping(nonce: 5, sentAtMicros: 0).encoded()
                out.writeBuffer(&h)
                try await s.write(out.getSlice(at: out.readerIndex, length: out.readableBytes - 3)!)
                do {
                    _ = try await s.readAll()
                    Issue.record("a late relayed request was answered")
                } catch let error as STOQError {
                    #expect(error.code == .streamReset, "\(error)")
                }
                try await eventually(within: 30) {
                    let status = try await PeerClient(connection: c, name: "r2").status()
                    return status.contains("\"active\" : 0") || status.contains("\"active\":0")
                }
            }
        }
        await other.close()
    }
}
