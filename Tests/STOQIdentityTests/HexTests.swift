import STOQIdentity
import Testing

/// `Hex`, the one hex codec every module uses (ids, keys, digests, logs).
@Suite struct HexTests {
    @Test func encodesLowercaseTwoDigitsPerByte() {
        #expect(Hex.encode([UInt8]()) == "")
        #expect(Hex.encode([0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0xab, 0xff]) == "00010f107f80abff")
        #expect(Hex.encode([0xde, 0xad, 0xbe, 0xef][1...]) == "adbeef")
        #expect(Hex.encode(AnySequence([UInt8(0xc0), 0xfe])) == "c0fe")
    }

    @Test func decodesEitherCase() {
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("00010f107f80abff") == [0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0xab, 0xff])
        #expect(Hex.decode("ABFF") == [0xab, 0xff])
        #expect(Hex.decode("aBfF") == [0xab, 0xff])
    }

    @Test func refusesWhatIsNotHex() {
        for bad in ["0", "abc", "0g", "g0", "zz", " 00", "00 ", "0x00", "-1", "é0", "00\n", "٠٠"] {
            #expect(Hex.decode(bad) == nil, "decoded '\(bad)'")
        }
    }

    /// Every byte value round-trips, and so do seeded random strings of every length up to 64.
    @Test func roundTrips() {
        let all = (0...255).map { UInt8($0) }
        #expect(Hex.decode(Hex.encode(all)) == all)
        #expect(Hex.decode(Hex.encode(all).uppercased()) == all)
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        for length in 0...64 {
            var bytes = [UInt8]()
            for _ in 0..<length {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                bytes.append(UInt8(truncatingIfNeeded: state >> 56))
            }
            let text = Hex.encode(bytes)
            #expect(text.utf8.count == 2 * length)
            #expect(Hex.decode(text) == bytes, "seeded length \(length)")
        }
    }

    /// `NodeID` uses the codec and checks the length on top of it.
    @Test func nodeIDParsesOnlyItsOwnLength() throws {
        let hex = String(repeating: "5a", count: NodeID.byteCount)
        let id = try #require(NodeID(hex: hex))
        #expect(id.hex == hex)
        #expect(NodeID(hex: hex.uppercased()) == id)
        #expect(NodeID(hex: String(hex.dropLast(2))) == nil)
        #expect(NodeID(hex: hex + "00") == nil)
    }
}
