import NIOCore
import STOQNode
import STOQTestSupport
import STOQTransport
import STOQWire
import Testing

/// Echoes a request's payload back, prefixed by the peer's node id, to show that services get
/// their frames, the rest of the stream and the authenticated peer.
struct EchoService: NodeService {
    var name: String { "echo" }
    var frameTypes: ClosedRange<UInt64> { 0x40...0x4f }
    var maximumRequestLength: Int { 256 }
    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        do {
            var rest = remaining
            while let more = try await stream.read() { rest.writeImmutableBuffer(more) }
            var out = ByteBuffer()
            out.writeString(connection.peerNodeID.map { "\($0)" } ?? "anonymous")
            out.writeString("|")
            out.writeImmutableBuffer(request.payload)
            out.writeString("|")
            out.writeImmutableBuffer(rest)
            try await stream.write(out)
            try await stream.finish()
        } catch {
            await stream.reset(code: 1)
        }
    }
    func status() async -> [String: any Sendable]? { ["answered": true] }
}

// Real QUIC in real time: `.serialized` puts it in `make test`'s one-at-a-time group (scripts/swift-tests.sh).
@Suite(.serialized) struct NodeServiceTests {
    @Test func servicesAnswerTheirFrameTypesOverRealQUIC() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let server = try await network.node("server", services: [EchoService()])
        let client = try await network.node("client", roles: ["client"])
        try await withServing(server) {
            let peer = try await client.peers.client(for: server.address)
            let stream = try await peer.connection.openBidirectionalStream()
            var request = ByteBuffer()
            Frame(type: FrameType(rawValue: 0x41), payload: ByteBuffer(string: "hello")).encode(into: &request)
            request.writeString("tail")
            try await stream.write(request)
            try await stream.finish()
            let answer = String(buffer: try await stream.readAll(limit: 4096))
            #expect(answer.hasSuffix("|hello|tail"))
            #expect(!answer.hasPrefix("anonymous"))

            // STOQ's own requests still work beside it, and status carries the service's summary.
            let status = try await peer.status()
            #expect(status.contains("\"echo\""))
            _ = try await peer.ping()

            // A request over the service's length limit is refused (stream reset), not delivered.
            let big = try await peer.connection.openBidirectionalStream()
            var oversized = ByteBuffer()
            Frame(type: FrameType(rawValue: 0x42), payload: ByteBuffer(repeating: 7, count: 1000)).encode(into: &oversized)
            try await big.write(oversized)
            try await big.finish()
            await #expect(throws: (any Error).self) { _ = try await big.readAll(limit: 4096) }
        }
        await client.close()
    }
}
