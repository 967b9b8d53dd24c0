import NIOCore
import Testing
@testable import STOQWire

@Suite struct RenewalMessageTests {
    @Test func roundTrips() throws {
        let messages: [RenewalMessage] = [
            .renewRequest(.init(lifetimeSeconds: 0)),
            .renewRequest(.init(lifetimeSeconds: 90, publicKey: Array(repeating: 7, count: 91), signature: Array(repeating: 9, count: 71))),
            .renewed(certificates: [Array(repeating: 1, count: 500)]),
            .renewed(certificates: [[1], [2, 3], [4], Array(repeating: 5, count: RenewalMessage.maximumCertificateLength)]),
        ]
        for message in messages {
            var buffer = message.encoded()
            var decoder = FrameDecoder(maximumPayloadLength: RenewalMessage.maximumAnswerLength)
            decoder.handle(bytes: buffer.readSlice(length: buffer.readableBytes)!)
            let frame = try #require(try decoder.pollFrame())
            #expect(RenewalMessage.handles(frame.type))
            #expect(try RenewalMessage.decode(frame) == message)
        }
        #expect(RenewalMessage.Types.renewRequest.rawValue == 0x20)
        #expect(RenewalMessage.Types.renewed.rawValue == 0x21)
        #expect(RenewalMessage.refusedCode == 6)
    }

    private func payload(_ build: (inout WireWriter) -> Void) -> ByteBuffer {
        var w = WireWriter()
        build(&w)
        return w.buffer
    }

    @Test func boundsAreChecked() {
        let request = RenewalMessage.Types.renewRequest, renewed = RenewalMessage.Types.renewed
        let bad: [(FrameType, ByteBuffer)] = [
            // A key without its signature, and a signature without a key.
            (request, payload { $0.varint(60); $0.lengthPrefixedBytes([1, 2, 3]); $0.lengthPrefixedBytes([]) }),
            (request, payload { $0.varint(60); $0.lengthPrefixedBytes([]); $0.lengthPrefixedBytes([1]) }),
            // A key longer than 256 bytes; a lifetime over 100 years.
            (request, payload { $0.varint(60); $0.lengthPrefixedBytes([UInt8](repeating: 0, count: 257)); $0.lengthPrefixedBytes([1]) }),
            (request, payload { $0.varint(RenewalMessage.maximumLifetimeSeconds + 1); $0.lengthPrefixedBytes([]); $0.lengthPrefixedBytes([]) }),
            // Trailing bytes; a truncated request.
            (request, payload { $0.varint(60); $0.lengthPrefixedBytes([]); $0.lengthPrefixedBytes([]); $0.bytes([0]) }),
            (request, payload { $0.varint(60) }),
            // No certificate, too many, an empty one, one too long.
            (renewed, payload { $0.varint(0) }),
            (renewed, payload { $0.varint(5); for _ in 0..<5 { $0.lengthPrefixedBytes([1]) } }),
            (renewed, payload { $0.varint(1); $0.lengthPrefixedBytes([]) }),
            (renewed, payload { $0.varint(1); $0.lengthPrefixedBytes([UInt8](repeating: 0, count: RenewalMessage.maximumCertificateLength + 1)) }),
            // Another type.
            (FrameType(rawValue: 0x22), payload { $0.varint(0) }),
        ]
        for (type, bytes) in bad {
            #expect(throws: WireError.self) { try RenewalMessage.decode(Frame(type: type, payload: bytes)) }
        }
    }

    @Test func fuzzEntryPointSurvivesGarbage() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for length in 0..<300 {
            let bytes = (0..<length).map { _ -> UInt8 in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: state >> 33)
            }
            RenewalMessage.fuzz(bytes)
        }
    }
}
