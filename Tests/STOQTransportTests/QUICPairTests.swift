import NIOCore
import Testing

@testable import STOQTransport

/// Two sans-IO connections joined by an in-memory link with virtual time (like quinn's
/// test pair): latency, optional drops and reordering, `drive` until a condition or quiet.
final class QUICPair {
    var now: UInt64 = 1_000_000_000
    let latency: UInt64
    let clientPath: QUICPath
    let serverPath: QUICPath
    let client: QUICConnection
    var server: QUICConnection?
    let serverSettings: QUICConnection.Settings
    var clientEvents: [QUICConnection.Event] = []
    var serverEvents: [QUICConnection.Event] = []
    /// Called for each datagram in flight (index, toServer); return false to drop it.
    var keep: (Int, Bool) -> Bool = { _, _ in true }
    /// Reverse the order of datagrams delivered at the same instant.
    var reorder = false
    private var inFlight: [(at: UInt64, toServer: Bool, data: ByteBuffer)] = []
    private var sent = 0
    /// Stream payload bytes received per side, per stream.
    var serverReceived: [Int64: Int] = [:]
    var clientReceived: [Int64: Int] = [:]
    var serverFin: Set<Int64> = []
    /// When false the server reads but does not report consumption (a stalled application).
    var serverConsumes = true
    var serverUnconsumed: [Int64: Int] = [:]
    var clientFin: Set<Int64> = []

    static func settings(_ pki: TestPKI, _ node: TestPKI.Node, _ e: EndpointConfiguration = .init()) throws -> QUICConnection.Settings {
        let tls = TLSConfiguration(certificateChainPEM: node.certificatePEM, privateKeyPEM: node.keyPEM, trustRootsPEM: pki.caPEM)
        return QUICConnection.Settings(
            endpoint: e, tls: tls,
            credentials: try TLSCredentials(certificateChainPEM: tls.certificateChainPEM, privateKeyPEM: tls.privateKeyPEM, trustRootsPEM: tls.trustRootsPEM),
            statelessResetSecret: NGTCP2Packet.randomBytes(32))
    }

    init(clientConfig: EndpointConfiguration = .init(), serverConfig: EndpointConfiguration = .init(), latency: UInt64 = 1_000_000) throws {
        let pki = try TestPKI()
        let a = try pki.issue("client")
        let b = try pki.issue("server")
        self.latency = latency
        let c = try SocketAddress(ipAddress: "::1", port: 40001)
        let s = try SocketAddress(ipAddress: "::1", port: 40002)
        clientPath = QUICPath(local: c, remote: s)
        serverPath = QUICPath(local: s, remote: c)
        serverSettings = try Self.settings(pki, b, serverConfig)
        client = try QUICConnection(clientPath: clientPath, serverName: "server", settings: try Self.settings(pki, a, clientConfig), now: now)
    }

    private func split(_ t: QUICConnection.Transmit) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        var b = t.buffer
        while b.readableBytes > 0 {
            out.append(b.readSlice(length: min(t.segmentSize, b.readableBytes))!)
        }
        return out
    }

    private func flush() {
        for (conn, toServer) in [(client as QUICConnection?, true), (server, false)] {
            guard let conn else { continue }
            while let t = conn.pollTransmit(now: now) {
                for d in split(t) {
                    sent += 1
                    if keep(sent, toServer) { inFlight.append((now + latency, toServer, d)) }
                }
            }
        }
    }

    private func collect() {
        while let e = client.pollEvent() { note(e, client: true) }
        if let server { while let e = server.pollEvent() { note(e, client: false) } }
    }

    private func note(_ e: QUICConnection.Event, client isClient: Bool) {
        if case .streamReadable(let id) = e {
            let conn = isClient ? client : server!
            let (data, fin) = conn.read(id)
            let n = data?.readableBytes ?? 0
            if isClient || serverConsumes { conn.consumed(id, count: n) } else { serverUnconsumed[id, default: 0] += n }
            if isClient {
                clientReceived[id, default: 0] += n
                if fin { clientFin.insert(id) }
            } else {
                serverReceived[id, default: 0] += n
                if fin { serverFin.insert(id) }
            }
        }
        if isClient { clientEvents.append(e) } else { serverEvents.append(e) }
    }

    private func deliver(_ d: ByteBuffer, toServer: Bool) {
        if toServer {
            if server == nil {
                guard let initial = NGTCP2Packet.accept(d) else { return }
                server = try? QUICConnection(
                    serverPath: serverPath, clientSCID: initial.scid, clientDCID: initial.dcid, originalDCID: nil,
                    retrySCID: nil, token: [], version: initial.version, settings: serverSettings, now: now)
            }
            server?.handle(datagram: d, path: serverPath, now: now)
        } else {
            client.handle(datagram: d, path: clientPath, now: now)
        }
    }

    /// Runs until `done` holds or both sides are quiet; returns whether `done` held.
    /// Runs until virtual time `deadline` (never jumping past it).
    func drive(upTo deadline: UInt64) {
        timeLimit = deadline
        drive { $0.now >= deadline }
        timeLimit = nil
    }
    private var timeLimit: UInt64?

    @discardableResult
    func drive(maxSteps: Int = 200_000, until done: (QUICPair) -> Bool = { _ in false }) -> Bool {
        for _ in 0..<maxSteps {
            flush()
            collect()
            if done(self) { return true }
            var next = inFlight.map(\.at).min()
            for t in [client.pollTimeout(), server?.pollTimeout()].compactMap({ $0 }) {
                next = min(next ?? t, t)
            }
            guard var at = next else { return done(self) }
            if let limit = timeLimit { at = min(at, limit) }
            now = max(now, at)
            var due = inFlight.filter { $0.at <= now }
            inFlight.removeAll { $0.at <= now }
            if reorder { due.reverse() }
            for d in due { deliver(d.data, toServer: d.toServer) }
            if let t = client.pollTimeout(), t <= now { client.handleTimeout(now: now) }
            if let s = server, let t = s.pollTimeout(), t <= now { s.handleTimeout(now: now) }
        }
        return done(self)
    }

    var established: Bool { client.isEstablished && (server?.isEstablished ?? false) }
}

func pattern(_ count: Int, seed: UInt8 = 7) -> ByteBuffer {
    var b = ByteBufferAllocator().buffer(capacity: count)
    for i in 0..<count { b.writeInteger(UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed))) }
    return b
}

@Suite struct QUICPairTests {
    @Test func handshakeAndBidirectionalStream() throws {
        let pair = try QUICPair()
        #expect(pair.drive { $0.established })
        #expect(pair.client.negotiatedALPN == "stoq/1")
        #expect(pair.server?.negotiatedALPN == "stoq/1")
        #expect(pair.client.peerCertificates.count >= 1)
        let id = try #require(try pair.client.openStream(bidirectional: true, priority: .interactive))
        try pair.client.send(id, pattern(100_000))
        pair.client.finish(id)
        #expect(pair.drive { $0.serverFin.contains(id) })
        #expect(pair.serverReceived[id] == 100_000)
        try pair.server!.send(id, pattern(5000))
        pair.server!.finish(id)
        #expect(pair.drive { $0.clientFin.contains(id) })
        #expect(pair.clientReceived[id] == 5000)
    }

    @Test func dropsAndReordering() throws {
        let pair = try QUICPair()
        // Drop every 7th datagram in both directions and reverse same-instant batches.
        pair.keep = { n, _ in n % 7 != 0 }
        pair.reorder = true
        #expect(pair.drive { $0.established })
        let id = try #require(try pair.client.openStream(bidirectional: true, priority: .bulk))
        try pair.client.send(id, pattern(2_000_000))
        pair.client.finish(id)
        #expect(pair.drive { $0.serverFin.contains(id) })
        #expect(pair.serverReceived[id] == 2_000_000)
    }

    @Test func rateLimitFollowsConfiguredRate() throws {
        var config = EndpointConfiguration()
        config.rateLimit = RateLimit(bytesPerSecond: 1_000_000, burst: 64 * 1024)
        let pair = try QUICPair(clientConfig: config)
        #expect(pair.drive { $0.established })
        let start = pair.now
        let id = try #require(try pair.client.openStream(bidirectional: false, priority: .bulk))
        try pair.client.send(id, pattern(2_000_000))
        pair.client.finish(id)
        #expect(pair.drive { $0.serverFin.contains(id) })
        let seconds = Double(pair.now - start) / 1e9
        // 2 MB at 1 MB/s with a 64 KiB burst: about 1.94 s of virtual time.
        #expect(seconds > 1.8 && seconds < 2.3, "took \(seconds) s")
    }

    @Test func controlStreamGoesBeforeBulk() throws {
        let pair = try QUICPair()
        #expect(pair.drive { $0.established })
        let bulk = try #require(try pair.client.openStream(bidirectional: false, priority: .bulk))
        try pair.client.send(bulk, pattern(3_000_000))
        pair.client.finish(bulk)
        let control = try #require(try pair.client.openStream(bidirectional: false, priority: .control))
        try pair.client.send(control, pattern(20_000))
        pair.client.finish(control)
        #expect(pair.drive { $0.serverFin.contains(control) })
        let bulkSoFar = pair.serverReceived[bulk] ?? 0
        #expect(bulkSoFar < 200_000, "bulk had \(bulkSoFar) bytes before control finished")
        #expect(pair.drive { $0.serverFin.contains(bulk) })
    }

    @Test func receiveWindowOpensOnlyAsApplicationConsumes() throws {
        let pair = try QUICPair()
        #expect(pair.drive { $0.established })
        pair.serverConsumes = false
        let id = try #require(try pair.client.openStream(bidirectional: false, priority: .bulk))
        try pair.client.send(id, pattern(8_000_000))
        pair.client.finish(id)
        // Run 500 ms of virtual time: the sender stalls on flow control.
        pair.drive(upTo: pair.now + 500_000_000)
        let window = Int(EndpointConfiguration().streamReceiveWindow)
        #expect(pair.serverReceived[id, default: 0] <= window)
        #expect(pair.serverReceived[id, default: 0] > 0)
        #expect(!pair.client.isWritable(id))
        // The application catches up: the window opens and the transfer completes.
        pair.serverConsumes = true
        pair.server!.consumed(id, count: pair.serverUnconsumed[id] ?? 0)
        #expect(pair.drive { $0.serverFin.contains(id) })
        #expect(pair.serverReceived[id] == 8_000_000)
    }

    @Test func closeWithCodeAndReasonReachesPeer() throws {
        let pair = try QUICPair()
        #expect(pair.drive { $0.established })
        pair.client.close(code: 42, reason: "bye now")
        #expect(pair.drive { p in p.serverEvents.contains { if case .closed = $0 { true } else { false } } })
        let closed = pair.serverEvents.compactMap { e -> STOQError? in if case .closed(let err) = e { err } else { nil } }.first
        #expect(closed?.code == .connectionClosed)
        #expect(closed?.applicationCode == 42)
        #expect(closed?.reason == "bye now")
        #expect(closed?.initiator == .peer)
    }

    @Test func keepAliveHoldsAnIdleConnection() throws {
        var config = EndpointConfiguration()
        config.idleTimeout = .milliseconds(300)
        config.keepAliveInterval = .milliseconds(100)
        let pair = try QUICPair(clientConfig: config, serverConfig: config)
        #expect(pair.drive { $0.established })
        pair.drive(upTo: pair.now + 3_000_000_000)
        #expect(pair.client.isEstablished)
        #expect(pair.server?.isEstablished == true)
    }

    @Test func idleTimeoutFires() throws {
        var config = EndpointConfiguration()
        config.idleTimeout = .milliseconds(300)
        let pair = try QUICPair(clientConfig: config, serverConfig: config)
        #expect(pair.drive { $0.established })
        let start = pair.now
        #expect(pair.drive { p in p.clientEvents.contains { if case .closed(let e) = $0 { e.code == .idleTimeout } else { false } } })
        #expect(pair.now - start >= 300_000_000)
    }
}
