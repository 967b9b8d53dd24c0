import Crypto
import NIOCore
import NIOPosix
import STOQIdentity
import Testing

@testable import STOQTransport

/// Certificates for the integration tests (STOQIdentity's CA).
enum Certs {
    static let ca = try! CertificateAuthority.create(commonName: "STOQ Transport Test CA")
    static let foreignCA = try! CertificateAuthority.create(commonName: "Foreign CA")

    static func tls(
        _ name: String, ca: CertificateAuthority = ca, trust: String? = ca.certificatePEM, alpn: [String] = ["stoq/1"],
        validity: Duration = .seconds(3600), now: Date = Date()
    ) throws -> TLSConfiguration {
        let node = try ca.issue(name: name, validity: validity, dnsNames: ["localhost"], ipAddresses: ["::1"], now: now)
        return TLSConfiguration(
            certificateChainPEM: node.certificateChainPEM, privateKeyPEM: node.privateKeyPEM, trustRootsPEM: trust, alpn: alpn)
    }
}

import Foundation

/// A server and a client endpoint on [::1].
struct Pair {
    let server: Endpoint
    let client: Endpoint

    /// Event loops (sockets) of the server and client endpoints `make` binds; MultiLoopTests
    /// runs these tests again with 2.
    @TaskLocal static var serverLoops = 1
    @TaskLocal static var clientLoops = 1

    static func make(
        server s: TLSConfiguration? = nil, client c: TLSConfiguration? = nil, config: EndpointConfiguration = .init()
    ) async throws -> Pair {
        var serverConfig = config
        serverConfig.eventLoops = serverLoops
        var clientConfig = config
        clientConfig.eventLoops = clientLoops
        let server = try await Endpoint.bind(host: "::1", port: 0, tls: s ?? Certs.tls("server"), configuration: serverConfig)
        let client = try await Endpoint.bind(host: "::1", port: 0, tls: c ?? Certs.tls("client"), configuration: clientConfig)
        return Pair(server: server, client: client)
    }

    func connect(alpn: [String]? = nil) async throws -> (Connection, Connection) {
        async let accepted = firstIncoming()
        let c = try await client.connect(host: "::1", port: server.localAddress.port!, alpn: alpn)
        guard let s = await accepted else { throw STOQError(.internalError, "no incoming connection") }
        return (c, s)
    }

    func firstIncoming() async -> Connection? {
        for await c in server.incomingConnections { return c }
        return nil
    }

    func close() async {
        await client.close()
        await server.close()
    }
}

func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<n).map { _ in
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}

@Suite(.serialized) struct EndpointTests {
    @Test func connectAcceptAndStreamsBothDirections() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        #expect(c.negotiatedALPN == "stoq/1")
        #expect(s.negotiatedALPN == "stoq/1")
        #expect(c.peerNodeID != nil)
        #expect(s.peerNodeID != nil)
        #expect(c.peerCertificateChain.count == 1)

        // Client-opened bidirectional stream: request, then response.
        let bidi = try await c.openBidirectionalStream()
        try await bidi.write(Array("hello".utf8))
        try await bidi.finish()
        var serverStreams = s.incomingStreams.makeAsyncIterator()
        let sb = try #require(await serverStreams.next())
        let req = try await sb.readAll()
        #expect(String(buffer: req) == "hello")
        try await sb.write(Array("world".utf8))
        try await sb.finish()
        #expect(String(buffer: try await bidi.readAll()) == "world")

        // Server-opened unidirectional stream.
        let uni = try await s.openUnidirectionalStream()
        try await uni.write(Array("push".utf8))
        try await uni.finish()
        var clientStreams = c.incomingStreams.makeAsyncIterator()
        let cu = try #require(await clientStreams.next())
        #expect(!cu.isBidirectional)
        #expect(String(buffer: try await cu.readAll()) == "push")

        // Client-opened unidirectional stream.
        let cuni = try await c.openUnidirectionalStream()
        try await cuni.write(Array("up".utf8))
        try await cuni.finish()
        let su = try #require(await serverStreams.next())
        #expect(String(buffer: try await su.readAll()) == "up")

        // Server-opened bidirectional stream.
        let sbidi = try await s.openBidirectionalStream()
        try await sbidi.write(Array("ping".utf8))
        try await sbidi.finish()
        let cb = try #require(await clientStreams.next())
        #expect(String(buffer: try await cb.readAll()) == "ping")
        try await cb.write(Array("pong".utf8))
        try await cb.finish()
        #expect(String(buffer: try await sbidi.readAll()) == "pong")
        await pair.close()
    }

    @Test func tenMegabytesBitExact() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let payload = bytes(10 << 20, seed: 42)
        let expected = SHA256.hash(data: payload)
        let stream = try await c.openUnidirectionalStream(priority: .bulk)
        let writer = Task {
            var offset = 0
            while offset < payload.count {
                let n = min(256 * 1024, payload.count - offset)
                try await stream.write(ByteBuffer(bytes: payload[offset..<offset + n]))
                offset += n
            }
            try await stream.finish()
        }
        var it = s.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await it.next())
        var hasher = SHA256()
        var total = 0
        for try await chunk in incoming {
            chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            total += chunk.readableBytes
        }
        try await writer.value
        #expect(total == payload.count)
        #expect(hasher.finalize() == expected)
        let stats = await c.stats()
        #expect(stats.streamBytesSent >= UInt64(payload.count))
        await pair.close()
    }

    @Test func hundredParallelStreams() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let server = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                var n = 0
                for await stream in s.incomingStreams {
                    group.addTask {
                        let data = try await stream.readAll()
                        try await stream.write(data)
                        try await stream.finish()
                    }
                    n += 1
                    if n == 100 { break }
                }
                try await group.waitForAll()
            }
        }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let stream = try await c.openBidirectionalStream()
                    let data = bytes(10_000 + i * 100, seed: UInt64(i))
                    try await stream.write(data)
                    try await stream.finish()
                    let echo = try await stream.readAll()
                    return Array(buffer: echo) == data
                }
            }
            var ok = 0
            for try await r in group where r { ok += 1 }
            #expect(ok == 100)
        }
        try await server.value
        await pair.close()
    }

    @Test func mutualTLSAccepted() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let clientID = try #require(s.peerNodeID)
        let serverID = try #require(c.peerNodeID)
        #expect(clientID != serverID)
        await pair.close()
    }

    @Test func clientFromForeignCARefusedOnBothSides() async throws {
        let foreign = try Certs.tls("intruder", ca: Certs.foreignCA, trust: Certs.ca.certificatePEM)
        let pair = try await Pair.make(client: foreign)
        var failures = pair.server.handshakeFailures.makeAsyncIterator()
        await #expect(throws: STOQError(.handshakeFailed, "")) {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
        }
        let serverSide = try #require(await failures.next())
        #expect(serverSide.code == .handshakeFailed)
        #expect(serverSide.reason.contains("not trusted"), "\(serverSide.reason)")
        await pair.close()
    }

    @Test func serverFromForeignCARefusedByClient() async throws {
        let foreign = try Certs.tls("impostor", ca: Certs.foreignCA, trust: Certs.ca.certificatePEM)
        let pair = try await Pair.make(server: foreign)
        var failures = pair.server.handshakeFailures.makeAsyncIterator()
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("connection to an untrusted server succeeded")
        } catch let e as STOQError {
            #expect(e.code == .handshakeFailed)
            #expect(e.reason.contains("not trusted"), "\(e.reason)")
        }
        let serverSide = try #require(await failures.next())
        #expect(serverSide.code == .handshakeFailed)
        await pair.close()
    }

    @Test func clientWithoutCertificateRefusedWhenRequired() async throws {
        let anonymous = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil, trustRootsPEM: Certs.ca.certificatePEM)
        let pair = try await Pair.make(client: anonymous)
        await #expect(throws: STOQError(.handshakeFailed, "")) {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
        }
        await pair.close()
    }

    @Test func insecureClientAcceptsAnyServer() async throws {
        var insecure = try Certs.tls("client")
        insecure.trustRootsPEM = nil
        insecure.verifyPeer = false
        let pair = try await Pair.make(server: try Certs.tls("impostor", ca: Certs.foreignCA, trust: Certs.ca.certificatePEM), client: insecure)
        let (c, _) = try await pair.connect()
        #expect(c.negotiatedALPN == "stoq/1")
        await pair.close()
    }

    @Test func cipherRestriction() async throws {
        var chacha = try Certs.tls("server")
        chacha.cipherSuites = [.chacha20Poly1305]
        var chachaClient = try Certs.tls("client")
        chachaClient.cipherSuites = [.chacha20Poly1305]
        let ok = try await Pair.make(server: chacha, client: chachaClient)
        let (c, _) = try await ok.connect()
        let s = try await c.openUnidirectionalStream()
        try await s.write(Array(repeating: 1, count: 100_000))
        try await s.finish()
        await ok.close()

        var aesClient = try Certs.tls("client")
        aesClient.cipherSuites = [.aes256GCM]
        let mismatch = try await Pair.make(server: chacha, client: aesClient)
        await #expect(throws: STOQError(.handshakeFailed, "")) {
            _ = try await mismatch.client.connect(host: "::1", port: mismatch.server.localAddress.port!)
        }
        await mismatch.close()
    }

    @Test func expiredCertificateRefused() async throws {
        let expired = try Certs.tls("old", validity: .seconds(3600), now: Date().addingTimeInterval(-86_400 * 3))
        let pair = try await Pair.make(client: expired)
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("expired certificate accepted")
        } catch let e as STOQError {
            #expect(e.code == .handshakeFailed)
        }
        var failures = pair.server.handshakeFailures.makeAsyncIterator()
        let serverSide = try #require(await failures.next())
        #expect(serverSide.reason.contains("expired"), "\(serverSide.reason)")
        await pair.close()
    }

    @Test func wrongALPNRefused() async throws {
        let pair = try await Pair.make()
        do {
            _ = try await pair.client.connect(host: "::1", port: pair.server.localAddress.port!, alpn: ["h3"])
            Issue.record("ALPN mismatch accepted")
        } catch let e as STOQError {
            #expect(e.code == .alpnMismatch, "\(e)")
        }
        await pair.close()
    }

    @Test func ipv4Refused() async throws {
        let tls = try Certs.tls("v4")
        for host in ["127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"] {
            do {
                _ = try await Endpoint.bind(host: host, port: 0, tls: tls)
                Issue.record("bound to \(host)")
            } catch let e as STOQError {
                #expect(e.code == .ipv6Only)
                #expect(e.reason.contains("IPv6-only"))
            }
        }
        let endpoint = try await Endpoint.bind(host: "::1", port: 0, tls: tls)
        for host in ["127.0.0.1", "::ffff:10.0.0.1"] {
            await #expect(throws: STOQError(.ipv6Only, "")) {
                _ = try await endpoint.connect(host: host, port: 4433)
            }
        }
        await endpoint.close()
    }

    @Test func idleTimeoutFires() async throws {
        var config = EndpointConfiguration()
        config.idleTimeout = .milliseconds(300)
        let pair = try await Pair.make(config: config)
        let (c, s) = try await pair.connect()
        let clientReason = await c.closed()
        let serverReason = await s.closed()
        #expect(clientReason.code == .idleTimeout)
        #expect(serverReason.code == .idleTimeout)
        await pair.close()
    }

    @Test func closeWithCodeAndReasonSeenByPeer() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        await c.close(code: 7, reason: "shutting down")
        let seen = await s.closed()
        #expect(seen.code == .connectionClosed)
        #expect(seen.applicationCode == 7)
        #expect(seen.reason == "shutting down")
        #expect(seen.initiator == .peer)
        await pair.close()
    }

    @Test func streamResetSeenByReader() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let stream = try await c.openUnidirectionalStream()
        try await stream.write(Array("partial".utf8))
        var it = s.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await it.next())
        await stream.reset(code: 99)
        do {
            _ = try await incoming.readAll()
            Issue.record("read after reset succeeded")
        } catch let e as STOQError {
            #expect(e.code == .streamReset)
            #expect(e.applicationCode == 99)
        }
        await pair.close()
    }

    @Test func migrationMidTransfer() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let oldPort = pair.client.localAddress.port
        let payload = bytes(4 << 20, seed: 9)
        let stream = try await c.openUnidirectionalStream(priority: .bulk)
        let writer = Task {
            var offset = 0
            var rebound = false
            while offset < payload.count {
                let n = min(128 * 1024, payload.count - offset)
                try await stream.write(ByteBuffer(bytes: payload[offset..<offset + n]))
                offset += n
                if !rebound && offset >= payload.count / 2 {
                    rebound = true
                    try await pair.client.rebind(host: "::1", port: 0)
                }
            }
            try await stream.finish()
        }
        var it = s.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await it.next())
        let received = try await incoming.readAll(limit: 8 << 20)
        try await writer.value
        #expect(Array(buffer: received) == payload)
        #expect(pair.client.localAddress.port != oldPort)
        await pair.close()
    }

    @Test func identityRotationKeepsConnections() async throws {
        let pair = try await Pair.make()
        let (c1, _) = try await pair.connect()
        let before = try #require(c1.peerNodeID)
        try await pair.server.updateIdentity(tls: try Certs.tls("server-renewed"))
        let (c2, _) = try await pair.connect()
        let after = try #require(c2.peerNodeID)
        #expect(before != after)
        // The old connection still carries data.
        let stream = try await c1.openBidirectionalStream()
        try await stream.write(Array("still here".utf8))
        try await stream.finish()
        await pair.close()
        _ = stream
    }

    @Test func garbageDatagramsDoNotHurt() async throws {
        let pair = try await Pair.make()
        let target = pair.server.localAddress
        let raw = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "::1", port: 0).get()
        var rng = SystemRandomNumberGenerator()
        for i in 0..<500 {
            let n = Int.random(in: 1...1500, using: &rng)
            var b = raw.allocator.buffer(capacity: n)
            for _ in 0..<n { b.writeInteger(UInt8.random(in: 0...255, using: &rng)) }
            if i % 3 == 0 { b.setInteger(UInt8(0xc0), at: 0) }  // long header bit
            if i % 5 == 0 { b.setInteger(UInt32(1), at: 1 % n) }  // version 1
            try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: b))
        }
        try await raw.close()
        let (c, s) = try await pair.connect()
        let stream = try await c.openBidirectionalStream()
        try await stream.write(Array("ok".utf8))
        try await stream.finish()
        var it = s.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await it.next())
        #expect(String(buffer: try await incoming.readAll()) == "ok")
        await pair.close()
    }

    @Test func unknownVersionGetsVersionNegotiation() async throws {
        let pair = try await Pair.make()
        let target = pair.server.localAddress
        let raw = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Collect()) }
            }
            .bind(host: "::1", port: 0).get()
        // Long header, version 0x1a2a3a4a, DCID 8 bytes, SCID 8 bytes, padded to 1200.
        var b = raw.allocator.buffer(capacity: 1200)
        b.writeBytes([0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8] + bytes(8, seed: 5) + [8] + bytes(8, seed: 6))
        b.writeRepeatingByte(0, count: 1200 - b.readableBytes)
        try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: b))
        let reply = try await raw.pipeline.handler(type: Collect.self).get().first.futureResult.get()
        // Version Negotiation: long header with version 0, then our SCID as its DCID.
        #expect(reply.getInteger(at: 1, as: UInt32.self) == 0)
        #expect(reply.getInteger(at: 5, as: UInt8.self) == 8)
        #expect(reply.getBytes(at: 6, length: 8) == bytes(8, seed: 6))
        try await raw.close()
        await pair.close()
    }

    @Test func connectionLimitRefusesWithClearError() async throws {
        var config = EndpointConfiguration()
        config.maxConnections = 1
        let pair = try await Pair.make(config: config)
        _ = try await pair.connect()
        let other = try await Endpoint.bind(host: "::1", port: 0, tls: try Certs.tls("client2"))
        do {
            _ = try await other.connect(host: "::1", port: pair.server.localAddress.port!)
            Issue.record("second connection accepted beyond maxConnections = 1")
        } catch let e as STOQError {
            #expect(e.code == .tooManyConnections, "\(e)")
            #expect(e.initiator == .peer)
        }
        await other.close()
        #expect(await pair.server.connectionCount == 1)
        await pair.close()
    }

    @Test func fuzzEntryTakesGarbage() {
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        for i in 0..<2000 {
            let data = bytes(Int((seed &+ UInt64(i)) % 1400) + 1, seed: seed &+ UInt64(i))
            Endpoint.fuzzDatagram(data)
        }
        // Truncations of a well-formed-looking Initial header.
        var initial: [UInt8] = [0xc0, 0, 0, 0, 1, 8] + bytes(8, seed: 1) + [8] + bytes(8, seed: 2) + [0, 0x44, 0xd0]
        initial += bytes(1200, seed: 3)
        for n in 0..<initial.count where n % 7 == 0 { Endpoint.fuzzDatagram(Array(initial.prefix(n))) }
    }
}

/// Completes `first` with the first datagram a raw test socket receives.
final class Collect: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    // @unchecked Sendable: used only on its channel's event loop.
    var first: EventLoopPromise<ByteBuffer>!
    var done = false
    func handlerAdded(context: ChannelHandlerContext) { first = context.eventLoop.makePromise() }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        done = true
        first.succeed(unwrapInboundIn(data).data)
    }
    func handlerRemoved(context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        first.fail(ChannelError.ioOnClosedChannel)
    }
}
