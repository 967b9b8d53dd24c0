import NIOCore
import Testing
@testable import STOQWire
import STOQSimulation

@Suite struct VarIntTests {
    @Test(arguments: [UInt64(0), 63, 64, 16383, 16384, 1_073_741_823, 1_073_741_824, 4_611_686_018_427_387_903] as [UInt64])
    func roundTripsAtBoundaries(value: UInt64) {
        var buffer = ByteBuffer()
        VarInt.write(value, to: &buffer)
        #expect(buffer.readableBytes == VarInt.length(of: value))
        #expect(VarInt.read(from: &buffer) == value)
        #expect(buffer.readableBytes == 0)
    }

    @Test func rfc9000Examples() {
        // RFC 9000 Appendix A.1 sample encodings.
        var b = ByteBuffer(bytes: [0xC2, 0x19, 0x7C, 0x5E, 0xFF, 0x14, 0xE8, 0x8C])
        #expect(VarInt.read(from: &b) == 151_288_809_941_952_652)
        b = ByteBuffer(bytes: [0x9D, 0x7F, 0x3E, 0x7D])
        #expect(VarInt.read(from: &b) == 494_878_333)
        b = ByteBuffer(bytes: [0x7B, 0xBD])
        #expect(VarInt.read(from: &b) == 15293)
        b = ByteBuffer(bytes: [0x25])
        #expect(VarInt.read(from: &b) == 37)
    }

    @Test func truncatedVarIntConsumesNothing() {
        var b = ByteBuffer(bytes: [0x9D, 0x7F])
        #expect(VarInt.read(from: &b) == nil)
        #expect(b.readableBytes == 2)
    }
}

@Suite struct MessageTests {
    static func randomMessage(_ rng: inout SplitMix64) -> STOQMessage {
        func id() -> WireID { WireID((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })! }
        func bits() -> ChunkBitfield {
            var b = ChunkBitfield(count: Int.random(in: 0...300, using: &rng))
            for i in 0..<b.count where Bool.random(using: &rng) { b[i] = true }
            return b
        }
        func record() -> [UInt8] { (0..<Int.random(in: 0...434, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        switch Int.random(in: 0..<17, using: &rng) {
        case 17: return .routingGossip(RoutingGossipMessageTests.randomGossip(&rng, maxNodes: 6, maxLinks: 8))
        case 11: return .chunkPending(waitedMillis: rng.next() >> 2)
        case 12: return .nameResolve(name: "site/\(rng.next() % 1000)", subscribe: Bool.random(using: &rng))
        case 13: return .nameRecord(record: record())
        case 14: return .namePublish(record: record())
        case 15: return .namePublished(version: rng.next() >> 2, notified: rng.next() % 100)
        case 16: return .relayOpen(target: Bool.random(using: &rng) ? id() : nil, host: "fd00::\(rng.next() % 0xffff)", port: UInt16(rng.next() % 65536))
        case 9: return .statusRequest
        case 10: return .status(json: "{\"n\":\(rng.next() % 1000)}")
        case 0: return .hello(.init(nodeID: id(), region: "eu-\(rng.next() % 100)", latitude: Double.random(in: -90...90, using: &rng), longitude: Double.random(in: -180...180, using: &rng), roles: [.edge, .client], capabilities: rng.next() % 1000))
        case 1: return .ping(nonce: rng.next(), sentAtMicros: rng.next() >> 2)
        case 2: return .pong(.init(nonce: rng.next(), echoSentAtMicros: rng.next() >> 2, loadPermille: rng.next() % 1001, bandwidthBytesPerSecond: rng.next() >> 2, activeTransfers: rng.next() % 100))
        case 3: return .have(contentID: id(), chunks: bits(), flags: HaveFlags(rawValue: rng.next() % 3 == 0 ? 0 : rng.next() >> 2))
        case 4: return .want(contentID: id(), chunks: bits())
        case 5: return .getChunk(chunkID: id(), offset: rng.next() >> 2, length: rng.next() >> 2)
        case 6: return .chunkHeader(status: ChunkStatus(rawValue: rng.next() % 5)!, totalLength: rng.next() >> 2, offset: rng.next() >> 2, length: rng.next() >> 2)
        case 7: return .invalidate(name: "site/\(rng.next())", version: rng.next() >> 2)
        default: return .error(code: rng.next() >> 2, message: "failure \(rng.next())")
        }
    }

    @Test func seededRoundTripsThroughAStreamOfFrames() throws {
        let seed = UInt64.random(in: 0 ... .max)
        var rng = SplitMix64(seed: seed)
        let messages = (0..<500).map { _ in Self.randomMessage(&rng) }
        var wire = ByteBuffer()
        for m in messages { m.frame().encode(into: &wire) }
        // Deliver in random-sized pieces, as a QUIC stream would.
        var decoder = FrameDecoder()
        var decoded = [STOQMessage]()
        while wire.readableBytes > 0 {
            let piece = wire.readSlice(length: min(wire.readableBytes, Int.random(in: 1...700, using: &rng)))!
            decoder.handle(bytes: piece)
            while let frame = try decoder.pollFrame() {
                decoded.append(try #require(try STOQMessage.decode(frame)))
            }
        }
        #expect(decoded == messages, "seed \(seed)")
        #expect(!decoder.hasPartialFrame)
    }

    @Test func everyTruncationIsAnErrorNotATrap() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<200 {
            let message = Self.randomMessage(&rng)
            let frame = message.frame()
            let full = Array(frame.payload.readableBytesView)
            // HAVE's flags are an optional last field: cut just before them, it is a HAVE without flags.
            var withoutFlags: (cut: Int, message: STOQMessage)?
            if case .have(let id, let bits, let flags) = message, !flags.isEmpty {
                withoutFlags = (full.count - VarInt.length(of: flags.rawValue), .have(contentID: id, chunks: bits))
            }
            for cut in 0..<full.count {
                let truncated = Frame(type: frame.type, payload: ByteBuffer(bytes: full[..<cut]))
                if let withoutFlags, cut == withoutFlags.cut {
                    #expect(try STOQMessage.decode(truncated) == withoutFlags.message)
                    continue
                }
                #expect(throws: WireError.self) { try STOQMessage.decode(truncated) }
            }
            var extra = frame
            extra.payload.writeInteger(UInt8(0))
            #expect(throws: WireError(.trailingBytes, "")) { try STOQMessage.decode(extra) }
        }
    }

    @Test func boundsAndUnknownTypes() throws {
        var decoder = FrameDecoder(maximumPayloadLength: 1024)
        var b = ByteBuffer()
        VarInt.write(0x06, to: &b)
        VarInt.write(1 << 40, to: &b)   // declares a terabyte
        decoder.handle(bytes: b)
        #expect(throws: WireError(.tooLong, "")) { try decoder.pollFrame() }

        #expect(throws: WireError(.unknownType, "")) {
            try STOQMessage.decode(Frame(type: FrameType(rawValue: 0x3e), payload: ByteBuffer()))
        }
        #expect(try STOQMessage.decode(Frame(type: FrameType(rawValue: 0x1003), payload: ByteBuffer(bytes: [1, 2]))) == nil)

        var hello = STOQMessage.hello(.init(nodeID: WireID([UInt8](repeating: 1, count: 32))!, region: "x", latitude: 0, longitude: 0, roles: .edge)).frame()
        var payload = Array(hello.payload.readableBytesView)
        payload[0] = 9  // version 9
        hello.payload = ByteBuffer(bytes: payload)
        #expect(throws: WireError(.unsupportedVersion, "")) { try STOQMessage.decode(hello) }

        // Bitfield padding must be zero.
        #expect(throws: WireError(.malformed, "")) { try ChunkBitfield(count: 3, bytes: [0xFF]) }
        #expect(throws: WireError(.malformed, "")) { try ChunkBitfield(count: 9, bytes: [0xFF]) }
    }

    @Test func bitfieldCounts() {
        var b = ChunkBitfield(count: 13, allSet: true)
        #expect(b.setCount == 13)
        b[12] = false
        b[0] = false
        #expect(b.setCount == 11)
        #expect(!b[12] && b[11])
    }

    @Test func garbageNeverTraps() {
        let seed = UInt64.random(in: 0 ... .max)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...96, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            STOQMessage.fuzz(bytes)
        }
        // Valid frames with one byte flipped.
        for _ in 0..<5_000 {
            var bytes = Array(Self.randomMessage(&rng).encoded().readableBytesView)
            bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            STOQMessage.fuzz(bytes)
        }
    }
}

@Suite struct HaveFlagsTests {
    @Test func aHaveWithoutFlagsIsTheOriginalEncodingAndUnknownBitsAreKept() throws {
        let id = WireID([UInt8](repeating: 7, count: 32))!
        var bits = ChunkBitfield(count: 10)
        bits[3] = true
        // The original HAVE (no flags field) still decodes, with no flags.
        let plain = STOQMessage.have(contentID: id, chunks: bits)
        var payload = ByteBuffer()
        payload.writeBytes(id.bytes)
        VarInt.write(10, to: &payload)
        payload.writeBytes(bits.bytes)
        #expect(plain.frame().payload == payload)
        #expect(try STOQMessage.decode(Frame(type: STOQMessage.Types.have, payload: payload)) == plain)
        // The fill flag, and a flag from a newer sender, survive; a receiver tests only what it knows.
        let future = HaveFlags(rawValue: HaveFlags.fillsFromUpstream.rawValue | 1 << 9)
        let flagged = try #require(try STOQMessage.decode(STOQMessage.have(contentID: id, chunks: bits, flags: future).frame()))
        guard case .have(_, let decodedBits, let flags) = flagged else { Issue.record("not a HAVE"); return }
        #expect(decodedBits == bits && flags.contains(.fillsFromUpstream) && flags == future)
        #expect(!HaveFlags.known.contains(HaveFlags(rawValue: 1 << 9)))
        // Bytes after the flags are refused (a HAVE is bounded); WANT takes no flags.
        var trailing = STOQMessage.have(contentID: id, chunks: bits, flags: .fillsFromUpstream).frame().payload
        trailing.writeInteger(UInt8(0))
        #expect(throws: WireError.self) { try STOQMessage.decode(Frame(type: STOQMessage.Types.have, payload: trailing)) }
        var want = STOQMessage.want(contentID: id, chunks: bits).frame().payload
        want.writeInteger(UInt8(1))
        #expect(throws: WireError.self) { try STOQMessage.decode(Frame(type: STOQMessage.Types.want, payload: want)) }
    }
}

@Suite struct ContentAccessMessageTests {
    @Test func roundTripsAndBounds() throws {
        let id = WireID([UInt8](repeating: 7, count: 32))!
        let totals = ContentAccessMessage.PurgeTotals(localChunks: 3, localBytes: 4096, belowChunks: 5, belowBytes: 1 << 40, edges: 2, unanswered: 1)
        for message: ContentAccessMessage in [
            .contentKeyRequest(content: id), .contentKey(content: id, key: [UInt8](repeating: 9, count: 32)),
            .purge(content: id, purgeID: .max, depth: ContentAccessMessage.maximumDepth), .purged(totals), .purgeSubscribe,
        ] {
            var buffer = message.encoded()
            var decoder = FrameDecoder()
            decoder.handle(bytes: buffer)
            let frame = try #require(try decoder.pollFrame())
            #expect(ContentAccessMessage.handles(frame.type))
            #expect(try ContentAccessMessage.decode(frame) == message)
            #expect(frame.payload.readableBytes <= ContentAccessMessage.maximumPayloadLength)
            buffer.clear()
        }
        // A purge deeper than the bound, a short key and trailing bytes are malformed.
        var w = WireWriter()
        w.bytes(id.bytes); w.integer(UInt64(1)); w.varint(ContentAccessMessage.maximumDepth + 1)
        #expect(throws: WireError.self) { try ContentAccessMessage.decode(Frame(type: ContentAccessMessage.Types.purge, payload: w.buffer)) }
        var short = WireWriter()
        short.bytes(id.bytes); short.bytes([1, 2, 3])
        #expect(throws: WireError.self) { try ContentAccessMessage.decode(Frame(type: ContentAccessMessage.Types.contentKey, payload: short.buffer)) }
        var trailing = WireWriter()
        trailing.bytes(id.bytes); trailing.bytes([0])
        #expect(throws: WireError.self) { try ContentAccessMessage.decode(Frame(type: ContentAccessMessage.Types.contentKeyRequest, payload: trailing.buffer)) }
        #expect(throws: WireError.self) { try ContentAccessMessage.decode(STOQMessage.ping(nonce: 1, sentAtMicros: 0).frame()) }
    }

    @Test func totalsSaturateInsteadOfOverflowing() {
        var totals = ContentAccessMessage.PurgeTotals()
        let hostile = ContentAccessMessage.PurgeTotals(localChunks: VarInt.max, localBytes: VarInt.max, belowChunks: VarInt.max, belowBytes: VarInt.max, edges: VarInt.max, unanswered: VarInt.max)
        totals.add(below: hostile)
        totals.add(below: hostile)
        totals.addUnanswered()
        #expect(totals.belowChunks == VarInt.max && totals.edges == VarInt.max && totals.unanswered == VarInt.max)
        _ = ContentAccessMessage.purged(totals).encoded()  // writable: no varint precondition trips
    }
}
