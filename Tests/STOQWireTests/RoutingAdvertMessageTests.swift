import NIOCore
import STOQWire
import Testing

/// ROUTING_ADVERTS (0x26): round trips and every bound.
@Suite struct RoutingAdvertMessageTests {
    static func body(links: Int = 2) -> RoutingAdvertMessage.Body {
        RoutingAdvertMessage.Body(
            nodeID: Array(repeating: 0xAB, count: 32), sequence: 1_700_000_000_000_000_000, expiresAtMillis: 1_700_000_120_000, region: 7,
            latitude: 48.8, longitude: 2.3, coordinate: SIMD4(1, 2, 3, 4), height: 5, error: 0.5, load: 0.25, bandwidthBitsPerSecond: 8e6,
            links: (0 ..< links).map { .init(to: UInt64($0 + 1), rttMilliseconds: Float($0 + 10), bandwidthBitsPerSecond: 1e6) })
    }

    @Test func bodyAndMessageRoundTrip() throws {
        let body = Self.body()
        #expect(try RoutingAdvertMessage.Body.decode(body.encoded()) == body)
        #expect(body.routingID == 0xABAB_ABAB_ABAB_ABAB)
        let advert = RoutingAdvertMessage.Advert(
            hops: 3, ageMilliseconds: 1234, certificateDigest: Array(repeating: 1, count: 32), body: body.encoded(), signature: Array(repeating: 2, count: 71))
        let message = RoutingAdvertMessage(certificates: [Array(repeating: 9, count: 600)], adverts: [advert])
        #expect(try RoutingAdvertMessage.decode(message.frame()) == message)
        // Only hops and age change on the way; the body bytes are kept as they are.
        var forwarded = advert
        forwarded.hops = 4
        #expect(forwarded.body == advert.body)
    }

    @Test func everyBoundIsChecked() throws {
        func decode(_ payload: [UInt8]) throws -> RoutingAdvertMessage {
            try RoutingAdvertMessage.decode(Frame(type: RoutingAdvertMessage.type, payload: ByteBuffer(bytes: payload)))
        }
        // Over-size payload, certificate, body, signature; too many certificates and adverts.
        #expect(throws: WireError.self) { try decode([UInt8](repeating: 0, count: RoutingAdvertMessage.maxPayloadLength + 1)) }
        var w = WireWriter()
        w.varint(1)
        w.lengthPrefixedBytes([UInt8](repeating: 1, count: 8193))
        #expect(throws: WireError.self) { try decode(Array(w.buffer.readableBytesView)) }
        w = WireWriter()
        w.varint(257)
        #expect(throws: WireError.self) { try decode(Array(w.buffer.readableBytesView)) }
        w = WireWriter()
        w.varint(0)
        w.varint(257)
        #expect(throws: WireError.self) { try decode(Array(w.buffer.readableBytesView) + [UInt8](repeating: 0, count: 257 * 40)) }
        for (bodyLength, signatureLength) in [(1025, 70), (100, 81), (100, 0)] {
            w = WireWriter()
            w.varint(0)
            w.varint(1)
            w.integer(UInt8(0))
            w.varint(0)
            w.bytes([UInt8](repeating: 0, count: 32))
            w.lengthPrefixedBytes([UInt8](repeating: 0, count: bodyLength))
            w.lengthPrefixedBytes([UInt8](repeating: 0, count: signatureLength))
            #expect(throws: WireError.self) { try decode(Array(w.buffer.readableBytesView)) }
        }
        // A body: too many links, a link to itself, a NaN load, trailing bytes, sequence 0.
        var tooMany = Self.body(links: 32).encoded()
        #expect(tooMany[90] == 32)
        tooMany[90] = 33
        #expect(throws: WireError.self) { try RoutingAdvertMessage.Body.decode(tooMany + [UInt8](repeating: 1, count: 16)) }
        var selfLink = Self.body()
        selfLink.links[0].to = selfLink.routingID
        #expect(throws: WireError.self) { try RoutingAdvertMessage.Body.decode(selfLink.encoded()) }
        var nan = Self.body()
        nan.load = .nan
        #expect(throws: WireError.self) { try RoutingAdvertMessage.Body.decode(nan.encoded()) }
        #expect(throws: WireError.self) { try RoutingAdvertMessage.Body.decode(Self.body().encoded() + [0]) }
        var zero = Self.body().encoded()
        zero[32] = 0
        #expect(throws: WireError.self) { try RoutingAdvertMessage.Body.decode(zero) }
        // The encoder cuts to the bounds, so whatever it writes decodes.
        let many = RoutingAdvertMessage(certificates: (0 ..< 300).map { _ in [UInt8](repeating: 7, count: 8192) }, adverts: [])
        let cut = try RoutingAdvertMessage.decode(many.frame())
        #expect(cut.certificates.count < 300 && many.frame().payload.readableBytes <= RoutingAdvertMessage.maxPayloadLength)
        RoutingAdvertMessage.fuzz(Array(many.frame().payload.readableBytesView))
    }
}
