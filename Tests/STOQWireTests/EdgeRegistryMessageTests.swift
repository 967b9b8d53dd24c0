import NIOCore
import Testing
@testable import STOQWire

@Suite struct EdgeRegistryMessageTests {
    static let location = EdgeRegistryMessage.WireLocation(latitude: 48.85, longitude: 2.35)

    static func roundTrip(_ message: EdgeRegistryMessage) throws -> EdgeRegistryMessage {
        var decoder = FrameDecoder(maximumPayloadLength: EdgeRegistryMessage.maximumPayloadLength)
        decoder.handle(bytes: message.encoded())
        let frame = try #require(try decoder.pollFrame())
        #expect(EdgeRegistryMessage.handles(frame.type))
        return try EdgeRegistryMessage.decode(frame)
    }

    @Test func everyMessageRoundTrips() throws {
        let announcement = EdgeRegistryMessage.EdgeAnnouncement(host: "::1", port: 4434, region: "eu-west", location: Self.location)
        let messages: [EdgeRegistryMessage] = [
            .register(announcement),
            .register(.init(host: "::", port: 1, region: "", location: nil)),
            .registered(ttlSeconds: 90),
            .edgesRequest(region: "eu-west", location: Self.location, limit: 10),
            .edgesRequest(region: "", location: nil, limit: 256),
            .edges([]),
            .edges((0 ..< 256).map { i in
                .init(nodeID: WireID([UInt8](repeating: UInt8(i), count: 32))!,
                      announcement: .init(host: String(repeating: "f", count: 64), port: UInt16(i), region: String(repeating: "r", count: 64), location: Self.location),
                      expiresIn: 86_400)
            }),
        ]
        for message in messages { #expect(try Self.roundTrip(message) == message) }
        // The largest EDGES answer fits the payload bound.
        #expect(messages.last!.frame().payload.readableBytes <= EdgeRegistryMessage.maximumPayloadLength)
    }

    @Test func typesAreTheAssignedOnes() {
        #expect(EdgeRegistryMessage.Types.register.rawValue == 0x1C)
        #expect(EdgeRegistryMessage.Types.registered.rawValue == 0x1D)
        #expect(EdgeRegistryMessage.Types.edgesRequest.rawValue == 0x1E)
        #expect(EdgeRegistryMessage.Types.edges.rawValue == 0x1F)
        #expect(!EdgeRegistryMessage.handles(FrameType(rawValue: 0x1B)))
        #expect(!EdgeRegistryMessage.handles(FrameType(rawValue: 0x20)))
    }

    static func decode(_ type: FrameType, _ bytes: [UInt8]) throws(WireError) -> EdgeRegistryMessage {
        try EdgeRegistryMessage.decode(Frame(type: type, payload: ByteBuffer(bytes: bytes)))
    }

    @Test func outOfBoundsValuesAreRefused() throws {
        func payload(_ build: (inout WireWriter) -> Void) -> [UInt8] {
            var w = WireWriter()
            build(&w)
            return Array(w.buffer.readableBytesView)
        }
        // A host longer than 64 bytes.
        #expect(throws: WireError.self) {
            try Self.decode(EdgeRegistryMessage.Types.register, payload { w in w.string(String(repeating: "a", count: 65)); w.varint(1); w.string(""); w.integer(UInt8(0)) })
        }
        // A port above 65535.
        #expect(throws: WireError.self) {
            try Self.decode(EdgeRegistryMessage.Types.register, payload { w in w.string("::1"); w.varint(65536); w.string(""); w.integer(UInt8(0)) })
        }
        // A location flag other than 0 or 1, and a latitude out of range.
        #expect(throws: WireError.self) {
            try Self.decode(EdgeRegistryMessage.Types.register, payload { w in w.string("::1"); w.varint(1); w.string(""); w.integer(UInt8(2)) })
        }
        #expect(throws: WireError.self) {
            try Self.decode(EdgeRegistryMessage.Types.edgesRequest, payload { w in w.string(""); w.integer(UInt8(1)); w.double(91); w.double(0); w.varint(1) })
        }
        // A NaN longitude.
        #expect(throws: WireError.self) {
            try Self.decode(EdgeRegistryMessage.Types.edgesRequest, payload { w in w.string(""); w.integer(UInt8(1)); w.double(0); w.double(.nan); w.varint(1) })
        }
        // A limit of 0 or above 256, a TTL of 0 or above a day, a count above 256.
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.edgesRequest, payload { w in w.string(""); w.integer(UInt8(0)); w.varint(0) }) }
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.edgesRequest, payload { w in w.string(""); w.integer(UInt8(0)); w.varint(257) }) }
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.registered, payload { w in w.varint(0) }) }
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.registered, payload { w in w.varint(86_401) }) }
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.edges, payload { w in w.varint(257) }) }
        // A count that promises more edges than follow, and trailing bytes.
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.edges, payload { w in w.varint(2) }) }
        #expect(throws: WireError.self) { try Self.decode(EdgeRegistryMessage.Types.registered, payload { w in w.varint(5); w.integer(UInt8(0)) }) }
        // Another family's frame.
        #expect(throws: WireError.self) { try Self.decode(FrameType(rawValue: 0x08), []) }
    }

    @Test func fuzzEntryPointSurvivesJunk() {
        var state: UInt64 = 7
        for _ in 0 ..< 2000 {
            var bytes: [UInt8] = [0x1C + UInt8(state % 4)]
            let length = Int(state % 40)
            bytes.append(UInt8(length))
            for _ in 0 ..< length {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                bytes.append(UInt8(truncatingIfNeeded: state >> 56))
            }
            EdgeRegistryMessage.fuzz(bytes)
            state = state &* 6364136223846793005 &+ 1442695040888963407
        }
    }
}
