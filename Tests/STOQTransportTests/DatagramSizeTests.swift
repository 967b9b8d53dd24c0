import NIOCore
import Testing

@testable import STOQTransport

/// The datagram size follows the kernel's path MTU (issue 16 item 1), and short-header packets
/// are routed by the connection ID read in place.
@Suite(.serialized) struct DatagramSizeTests {
    @Test func automaticSizeIsThePathMTUMinusHeadersAboveEthernet() {
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: 65536) == 65488)
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: 9000) == 8952)
        // At or below Ethernet ngtcp2's own path-MTU discovery keeps the size.
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: 1500) == nil)
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: 1280) == nil)
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: nil) == nil)
    }

    @Test func kernelReportsTheLoopbackPathMTU() throws {
        let lo = try SocketAddress(ipAddress: "::1", port: 4433)
        let mtu = NGTCP2Connection.pathMTU(QUICPath(local: lo, remote: lo))
        #expect((mtu ?? 0) > 1500, "loopback's MTU is 65536 on Linux")
        // Beyond a router (or with no route at all) nothing above Ethernet is trusted: the
        // connection keeps ngtcp2's own discovery.
        let routed = try SocketAddress(ipAddress: "2001:db8::1", port: 4433)
        let unspecified = try SocketAddress(ipAddress: "::", port: 0)
        let mtu2 = NGTCP2Connection.pathMTU(QUICPath(local: unspecified, remote: routed))
        #expect(mtu2 == nil || (1280...1500).contains(mtu2!))
        #expect(NGTCP2Connection.automaticPayloadSize(pathMTU: mtu2) == nil)
    }

    @Test func loopbackConnectionsSendLargeDatagramsAndMoveData() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let stream = try await c.openBidirectionalStream()
        let payload = bytes(3 << 20, seed: 16)
        try await stream.write(payload)
        try await stream.finish()
        var incoming = s.incomingStreams.makeAsyncIterator()
        let got = try #require(await incoming.next())
        let received = try await got.readAll()
        #expect(Array(received.readableBytesView) == payload)
        #expect(await c.stats().maxDatagramSize == 65488)
        #expect(await s.stats().maxDatagramSize == 65488)
        await pair.close()
    }

    @Test func configuredSizeWins() async throws {
        var config = EndpointConfiguration()
        config.maxUDPPayloadSize = 1452
        let pair = try await Pair.make(config: config)
        let (c, s) = try await pair.connect()
        #expect(await c.stats().maxDatagramSize == 1452)
        #expect(await s.stats().maxDatagramSize == 1452)
        await pair.close()
    }

    @Test func shortHeaderConnectionIDIsReadInPlace() {
        let cid: [UInt8] = Array(1...16)
        let short = ByteBuffer(bytes: [0x40] + cid + [9, 9, 9])
        #expect(NGTCP2Packet.shortHeaderDCID(short) == ConnectionID(bytes: cid))
        #expect(NGTCP2Packet.shortHeaderDCID(ByteBuffer(bytes: [0xc0] + cid + [0, 0])) == nil, "long header")
        #expect(NGTCP2Packet.shortHeaderDCID(ByteBuffer(bytes: [0x40] + cid.prefix(15))) == nil, "shorter than an ID")
        #expect(NGTCP2Packet.shortHeaderDCID(ByteBuffer()) == nil)
    }
}
