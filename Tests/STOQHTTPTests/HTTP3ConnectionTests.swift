import NIOCore
import Testing

@testable import STOQHTTP

/// The nghttp3 wrapper alone: a client and a server ``HTTP3Connection`` exchange bytes in
/// memory, stream by stream, with no QUIC underneath (deterministic, no clock).
@Suite struct HTTP3ConnectionTests {
    /// Two connections wired back to back. Client uni streams 2, 6, 10; server uni 3, 7, 11.
    final class Pair {
        let client: HTTP3Connection
        let server: HTTP3Connection
        var clientEvents: [HTTP3Connection.Event] = []
        var serverEvents: [HTTP3Connection.Event] = []

        init(limits: HTTP3Limits = HTTP3Limits()) throws {
            client = try HTTP3Connection(role: .client)
            server = try HTTP3Connection(role: .server, limits: limits)
            try client.bind(control: 2, qpackEncoder: 6, qpackDecoder: 10)
            try server.bind(control: 3, qpackEncoder: 7, qpackDecoder: 11)
        }

        /// Moves bytes both ways until neither side has anything to write (bounded).
        func pump() throws {
            for _ in 0..<10_000 {
                var moved = false
                while let w = try client.pollWrite() {
                    moved = true
                    try server.handle(streamID: w.streamID, buffer: w.bytes, fin: w.fin)
                }
                while let w = try server.pollWrite() {
                    moved = true
                    try client.handle(streamID: w.streamID, buffer: w.bytes, fin: w.fin)
                }
                while let e = client.pollEvent() { clientEvents.append(e) }
                while let e = server.pollEvent() { serverEvents.append(e) }
                if !moved { return }
            }
            Issue.record("the pair never went quiet")
        }

        func request(_ streamID: Int64, method: String = "GET", path: String, extra: [(name: String, value: String)] = []) throws {
            try client.submitRequest(
                streamID,
                headers: [(":method", method), (":scheme", "https"), (":authority", "stoq.test"), (":path", path)] + extra)
        }

        func responseBody(_ streamID: Int64) -> [UInt8] {
            clientEvents.reduce(into: [UInt8]()) { acc, e in
                if case .data(let id, let bytes) = e, id == streamID { acc += bytes }
            }
        }

        func ended(_ streamID: Int64) -> Bool { clientEvents.contains(.endStream(streamID)) }

        func needBodyCount(_ streamID: Int64) -> Int { serverEvents.filter { $0 == .needBody(streamID) }.count }
    }

    @Test func aRequestArrivesWithItsHeadersAndTheResponseBodyIsPulledPieceByPiece() throws {
        let pair = try Pair()
        try pair.request(0, path: "/stoq/abc?x=1", extra: [("range", "bytes=0-9")])
        try pair.pump()
        guard case .headers(0, let fields, let endStream)? = pair.serverEvents.first(where: { if case .headers = $0 { true } else { false } }) else {
            Issue.record("no request headers on the server: \(pair.serverEvents)")
            return
        }
        #expect(endStream)
        #expect(fields.contains(.init(name: ":path", value: "/stoq/abc?x=1")))
        #expect(fields.contains(.init(name: "range", value: "bytes=0-9")))

        try pair.server.submitResponse(0, status: 200, headers: [("content-type", "text/plain")], hasBody: true)
        try pair.pump()
        // Nothing was provided yet: the server asked once, the client has headers but no body or end.
        #expect(pair.needBodyCount(0) == 1)
        #expect(!(pair.ended(0)))
        let pieces: [[UInt8]] = [Array(repeating: 1, count: 70_000), Array(repeating: 2, count: 5), Array(0...255)]
        for (i, piece) in pieces.enumerated() {
            pair.server.provideBody(0, piece)
            try pair.pump()
            #expect(pair.needBodyCount(0) == i + 2, "one more piece is asked for only after the last one was taken")
        }
        pair.server.provideBody(0, nil)
        try pair.pump()
        #expect(pair.responseBody(0) == pieces.flatMap { $0 })
        #expect(pair.ended(0))
        guard case .headers(0, let response, _)? = pair.clientEvents.first(where: { if case .headers = $0 { true } else { false } }) else {
            Issue.record("no response headers")
            return
        }
        #expect(response.first == .init(name: ":status", value: "200"))
    }

    @Test func aResponseWithoutBodyEndsTheStreamAtItsHeaders() throws {
        let pair = try Pair()
        try pair.request(0, method: "HEAD", path: "/x")
        try pair.pump()
        try pair.server.submitResponse(0, status: 200, headers: [("content-length", "123")], hasBody: false)
        try pair.pump()
        #expect(pair.ended(0))
        #expect(pair.responseBody(0) == [])
        #expect(pair.needBodyCount(0) == 0, "a body-less response never asks for its body")
    }

    @Test func anOversizedHeaderSectionIsFlaggedNotDelivered() throws {
        var limits = HTTP3Limits()
        limits.maxFieldSectionSize = 4096
        let pair = try Pair(limits: limits)
        try pair.request(0, path: "/x", extra: [("x-big", String(repeating: "a", count: 5000))])
        try pair.request(4, path: "/y", extra: (0..<200).map { ("x-h\($0)", "v") })
        try pair.pump()
        #expect(pair.serverEvents.contains(.headersTooLarge(0)))
        #expect(pair.serverEvents.contains(.headersTooLarge(4)), "more fields than maxHeaderFields")
        #expect(!(pair.serverEvents.contains { if case .headers = $0 { true } else { false } }))
    }

    @Test func garbageOnTheControlStreamIsAConnectionError() throws {
        let server = try HTTP3Connection(role: .server)
        try server.bind(control: 3, qpackEncoder: 7, qpackDecoder: 11)
        // Stream type 0x00 (control) followed by a DATA frame, which a control stream may not carry.
        let bytes: [UInt8] = [0x00, 0x00, 0x01, 0xFF]
        do {
            try bytes.withUnsafeBytes { try server.handle(streamID: 2, bytes: $0, fin: false) }
            Issue.record("a DATA frame on the control stream was accepted")
        } catch let error as HTTP3Error {
            #expect(error.code == .protocolViolation)
            #expect(error.wireCode != nil)
            #expect(!error.reason.isEmpty)
        }
    }

    @Test func randomBytesOnARequestStreamNeverTrap() throws {
        // Seeded: a failing seed prints and can be replayed.
        var rng = SplitMix(seed: 20_261_207)
        for round in 0..<200 {
            let server = try HTTP3Connection(role: .server)
            try server.bind(control: 3, qpackEncoder: 7, qpackDecoder: 11)
            let count = Int(rng.next() % 64)
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            do {
                try bytes.withUnsafeBytes { try server.handle(streamID: 0, bytes: $0, fin: rng.next() % 2 == 0) }
                _ = try server.pollWrite()
            } catch let error as HTTP3Error {
                #expect(!error.reason.isEmpty, "round \(round)")
            }
            while server.pollEvent() != nil {}
        }
    }

    @Test func theDateHeaderIsIMFFixdate() {
        #expect(HTTPDate.format(secondsSince1970: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(secondsSince1970: 1_796_614_743) == "Mon, 07 Dec 2026 03:39:03 GMT")
        #expect(HTTPDate.format(secondsSince1970: 951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
    }

    @Test func connectionSpecificFieldsAreDroppedAndADateAdded() {
        let out = HTTP3Session.responseHeaders([("connection", "close"), ("transfer-encoding", "chunked"), ("etag", "\"e\"")])
        #expect(out.map(\.name) == ["etag", "date"])
    }
}

/// A small seeded generator (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
