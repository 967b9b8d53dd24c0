import Foundation
import NIOCore
import STOQContent
import STOQNode
import STOQTransport
import STOQWire
import Testing
import STOQTestSupport

/// Reads `stream` to its end and returns how it ended: nil for FIN, the error for a reset. If
/// nothing ends it within `seconds` (a guard against a hang, not a timing assertion), the stream
/// is aborted and the test fails.
private func ending(of stream: QUICStream, within seconds: Double) async throws -> (bytes: Int, error: STOQError?) {
    let reader = Task { () -> (Int, STOQError?) in
        var n = 0
        do {
            while let piece = try await stream.read() { n += piece.readableBytes }
            return (n, nil)
        } catch let error as STOQError {
            return (n, error)
        }
    }
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    let watchdog = Task {
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        await stream.abort(code: 0x99)
    }
    let result = try await reader.value
    watchdog.cancel()
    if let e = result.1, e.initiator == .local, e.applicationCode == 0x99 {
        throw NodeError(.unavailable, "stream \(stream.id) did not end within \(seconds) s")
    }
    return result
}

/// Whether `task` finished within `seconds` (used only to show that something did NOT happen:
/// a loaded machine can only make the answer "no" more likely, never a false "yes").
private func finishes<T: Sendable>(_ task: Task<T, any Error>, within seconds: Double) async -> Bool {
    let flag = DoneFlag()
    Task {
        _ = try? await task.value
        flag.set()
    }
    try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
    return flag.isSet
}

/// `@unchecked Sendable`: state behind `lock`.
private final class DoneFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func set() { lock.withLock { done = true } }
    var isSet: Bool { lock.withLock { done } }
}

private func node(_ network: TestNetwork, _ name: String, roles: [String] = ["origin"], _ edit: (inout PeerLimits) -> Void) async throws -> Node {
    var config = try network.configuration(name, roles: roles)
    var limits = PeerLimits()
    edit(&limits)
    config.limits = limits
    return try await Node.start(config)
}

/// The bounds each peer connection is held to (docs/PROTOCOL.md, "Limits a node enforces on
/// each peer"), over real QUIC on [::1].
@Suite(.serialized) struct PeerLimitsTests {
    @Test func aRequestIncompleteAfterTheTimeoutIsResetAndTheConnectionServesOn() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await node(network, "origin") { $0.requestTimeoutMilliseconds = 300 }
        let client = try await network.node("client", roles: ["client"])
        try await withServing(origin) {
            let peer = try await client.peers.client(for: origin.address)
            let stream = try await peer.connection.openBidirectionalStream()
            var ping = STOQMessage.ping(nonce: 7, sentAtMicros: 0).encoded()
            try await stream.write(ping.readSlice(length: 3)!)  // a partial PING and no FIN
            let end = try await ending(of: stream, within: 30)
            #expect(end.error?.code == .streamReset && end.error?.applicationCode == ChunkErrorCode.limitExceeded, "\(String(describing: end.error))")
            _ = try await peer.ping()  // the connection serves on
            #expect(await origin.scrape().contains("type=\"request_timeout\""))
        }
        await client.close()
    }

    @Test func anOverSizeRequestIsRefusedAsSoonAsItsLengthIsRead() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        // A long request timeout: a reset before it can only come from the length.
        let origin = try await node(network, "origin", roles: ["origin", "relay"]) { $0.requestTimeoutMilliseconds = 600_000 }
        let client = try await network.node("client", roles: ["client"])
        try await withServing(origin) {
            let peer = try await client.peers.client(for: origin.address)
            // GET_CHUNK (limit 4 KiB), NAME_RESOLVE (2 KiB), RELAY_OPEN (512 bytes): just the
            // type and a length one over the limit, no payload.
            let limits: [(FrameType, Int)] = [(STOQMessage.Types.getChunk, 4096), (STOQMessage.Types.nameResolve, 2048), (STOQMessage.Types.relayOpen, 512)]
            for (type, limit) in limits {
                let stream = try await peer.connection.openBidirectionalStream()
                var header = ByteBuffer()
                VarInt.write(type.rawValue, to: &header)
                VarInt.write(UInt64(limit + 1), to: &header)
                try await stream.write(header)
                let end = try await ending(of: stream, within: 30)
                #expect(end.error?.code == .streamReset && end.error?.applicationCode == ChunkErrorCode.badRequest, "\(type): \(String(describing: end.error))")
            }
            // A frame of the largest length a service on this node accepts, but of a type whose
            // limit is 4 KiB, is refused the same way (the bound is the type's, not the largest).
            let stream = try await peer.connection.openBidirectionalStream()
            var header = ByteBuffer()
            VarInt.write(STOQMessage.Types.ping.rawValue, to: &header)
            VarInt.write(60_000, to: &header)
            try await stream.write(header)
            #expect(try await ending(of: stream, within: 30).error?.applicationCode == ChunkErrorCode.badRequest)
            _ = try await peer.ping()
        }
        await client.close()
    }

    @Test func streamsWaitingForTheirRequestAreBoundedPerConnection() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await node(network, "origin") {
            $0.maxPendingRequests = 2
            $0.requestTimeoutMilliseconds = 600_000
        }
        let client = try await network.node("client", roles: ["client"])
        try await withServing(origin) {
            let peer = try await client.peers.client(for: origin.address)
            let full = STOQMessage.ping(nonce: 9, sentAtMicros: 0).encoded()
            var slow: [QUICStream] = []
            for _ in 0..<2 {
                let stream = try await peer.connection.openBidirectionalStream()
                var part = full
                try await stream.write(part.readSlice(length: 2)!)
                slow.append(stream)
            }
            // Both admissions are taken by requests that do not complete: a third stream waits unread.
            let waiting = Task { try await peer.ping(nonce: 10) }
            #expect(!(await finishes(waiting, within: 0.5)), "a third request was read while two were pending")
            // One slow request completes: the waiting one is read and answered.
            var rest = full
            rest.moveReaderIndex(forwardBy: 2)
            try await slow[0].write(rest)
            try await slow[0].finish()
            #expect(try await ending(of: slow[0], within: 30).error == nil)
            _ = try await waiting.value
            await slow[1].abort(code: 0)
        }
        await client.close()
    }

    @Test func aPeerThatDoesNotReadIsBackPressuredThenReset() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await node(network, "origin") {
            $0.maxResponses = 2
            $0.maxResponseBytes = 64 << 10
            $0.responseStallTimeoutMilliseconds = 500
        }
        let content = try network.publish(on: origin, bytes: 3_000_000, seed: 91)
        let plan = try await ContentPlan.resolve(content.id) { try origin.store.read($0) }
        let chunks = Array(plan.dataChunks.prefix(6).map(\.id))
        #expect(chunks.count == 6)
        // A client whose receive windows stay small and that reads nothing.
        var config = EndpointConfiguration()
        config.streamReceiveWindow = 16 << 10
        config.maxStreamReceiveWindow = 16 << 10
        config.connectionReceiveWindow = 32 << 10
        config.maxConnectionReceiveWindow = 32 << 10
        let endpoint = try await Endpoint.bind(host: "::1", port: 0, tls: try network.configuration("reader").tlsConfiguration(), configuration: config)
        try await withServing(origin) {
            let connection = try await endpoint.connect(host: "::1", port: origin.address.port)
            var streams: [QUICStream] = []
            for id in chunks {
                let s = try await connection.openBidirectionalStream()
                try await s.write(STOQMessage.getChunk(chunkID: WireID(id.bytes)!, offset: 0, length: 0).encoded())
                try await s.finish()
                streams.append(s)
            }
            // Never more than two responses in progress for this connection.
            var most = 0
            for _ in 0..<20 {
                most = max(most, origin.server.transfers.count)
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(most <= 2, "\(most) responses in progress")
            // The stalled responses are reset (0x3); the ones that waited are then served.
            try await eventually(within: 60) { await origin.scrape().contains("type=\"response_stalled\"") }
            var reset = 0
            for s in streams {
                let end = try await ending(of: s, within: 60)
                if let e = end.error {
                    #expect(e.applicationCode == ChunkErrorCode.limitExceeded, "\(e)")
                    reset += 1
                }
            }
            #expect(reset >= 1)
            await connection.close()
        }
        await endpoint.close()
    }

    @Test func connectionsAreBoundedInAllAndPerAddressAndRefusedWithAReason() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var config = try network.configuration("origin")
        config.maxConnectionsPerAddress = 2
        let origin = try await Node.start(config)
        let tls = try network.configuration("client").tlsConfiguration()
        let endpoint = try await Endpoint.bind(host: "::1", port: 0, tls: tls)
        try await withServing(origin) {
            let a = try await endpoint.connect(host: "::1", port: origin.address.port)
            let b = try await endpoint.connect(host: "::1", port: origin.address.port)
            do {
                _ = try await endpoint.connect(host: "::1", port: origin.address.port)
                Issue.record("a third connection from [::1] was accepted")
            } catch let error as STOQError {
                #expect(error.code == .tooManyConnections, "\(error)")
                #expect(error.reason.contains("from your address"), "\(error.reason)")
            }
            _ = try await PeerClient(connection: a, name: "a").ping()
            _ = try await PeerClient(connection: b, name: "b").ping()
        }
        await endpoint.close()

        var total = try network.configuration("origin2")
        total.maxConnections = 1
        let small = try await Node.start(total)
        let other = try await Endpoint.bind(host: "::1", port: 0, tls: tls)
        try await withServing(small) {
            _ = try await other.connect(host: "::1", port: small.address.port)
            do {
                _ = try await other.connect(host: "::1", port: small.address.port)
                Issue.record("a connection over the total was accepted")
            } catch let error as STOQError {
                #expect(error.code == .tooManyConnections && error.reason.contains("maximum of 1"), "\(error)")
            }
        }
        await other.close()
    }

    @Test func limitsReadFromAConfigurationFileWithDefaultsForWhatIsMissing() throws {
        let json = #"{"requestTimeoutMilliseconds": 2500, "maxResponses": 8}"#
        let limits = try JSONDecoder().decode(PeerLimits.self, from: Data(json.utf8))
        #expect(limits.requestTimeoutMilliseconds == 2500 && limits.maxResponses == 8)
        #expect(limits.maxPendingRequests == PeerLimits().maxPendingRequests)
        var bad = PeerLimits()
        bad.maxResponseBytes = 10
        #expect(throws: NodeError.self) { try bad.validate() }
    }
}
