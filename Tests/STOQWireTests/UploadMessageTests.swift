import NIOCore
import Testing
@testable import STOQWire
import STOQSimulation

@Suite struct UploadMessageTests {
    func roundTrip(_ m: UploadMessage) throws -> UploadMessage {
        var buffer = m.encoded()
        var decoder = FrameDecoder(maximumPayloadLength: UploadMessage.maximumPayloadLength)
        decoder.handle(bytes: buffer)
        buffer.clear()
        return try UploadMessage.decode(try #require(try decoder.pollFrame()))
    }

    @Test func everyMessageSurvivesARoundTrip() throws {
        let id = try #require(WireID([UInt8](repeating: 9, count: 32)))
        let messages: [UploadMessage] = [
            .offer(flags: .public, name: "site/", tree: [0, 0, 0, 0, 0, 0, 0]),
            .offer(flags: [], name: "", tree: []),
            .need(uploadID: 42, remaining: 3, indices: [0, 7, 131_071]),
            .need(uploadID: .max, remaining: 0, indices: []),
            .chunk(uploadID: 1, index: 5, length: 1 << 20),
            .commit(uploadID: 77),
            .committed(uploadID: 77, content: id, totals: .init(files: 2, bytes: 40 << 20, chunks: 2600, storedBytes: 9000)),
        ]
        for m in messages { #expect(try roundTrip(m) == m) }
    }

    @Test func valuesOutOfBoundsAreRefused() throws {
        #expect(throws: WireError.self) { try roundTrip(.chunk(uploadID: 1, index: 0, length: (16 << 20) + 1)) }
        #expect(throws: WireError.self) { try roundTrip(.chunk(uploadID: 1, index: 0, length: 0)) }
        #expect(throws: WireError.self) { try roundTrip(.chunk(uploadID: 1, index: 131_072, length: 10)) }
        #expect(throws: WireError.self) { try roundTrip(.need(uploadID: 1, remaining: 0, indices: [131_072])) }
        // A NEED that claims more indices than it carries.
        var w = WireWriter()
        w.integer(UInt64(1)); w.varint(5); w.varint(100_000); w.varint(1)
        #expect(throws: WireError.self) { try UploadMessage.decode(Frame(type: UploadMessage.Types.need, payload: w.buffer)) }
        // Trailing bytes after a commit's answer.
        var c = UploadMessage.committed(uploadID: 1, content: WireID([UInt8](repeating: 1, count: 32))!, totals: .init(files: 0, bytes: 0, chunks: 0, storedBytes: 0)).frame()
        c.payload.writeInteger(UInt8(1))
        #expect(throws: WireError.self) { try UploadMessage.decode(c) }
        var rng = SplitMix64(seed: 13)
        for n in 0..<3000 {
            var bytes: [UInt8] = [UInt8(0x18 + n % 4)]
            for _ in 0..<(n % 90) { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
            UploadMessage.fuzz(bytes)
        }
    }
}
