import Foundation
import NIOCore
import STOQContent
import STOQNode
import STOQTestSupport
import STOQWire
import Testing
import TestVectorSupport

/// Statements of `docs/PROTOCOL.md` about what a node does, checked against the node: the HAVE
/// bit order of the test-vector tree, and the answers to malformed and unknown requests.
@Suite(.serialized) struct ProtocolVectorTests {
    struct Tree: Codable {
        struct Manifest: Codable { var id: String; var bytes: String }
        var contentIdHex: String
        var manifests: [Manifest]
        var haveOrder: [String]
    }

    /// The order in which a node numbers the data chunks (``ContentPlan``) is the one the
    /// document states and the vectors list (`have_order`).
    @Test func haveBitOrderIsTheDocumentedWalk() async throws {
        let tree = try TestVectors.read(Tree.self, from: "content-tree.json")
        var manifests = [ChunkID: [UInt8]]()
        for m in tree.manifests { manifests[try #require(ChunkID(hex: m.id))] = try TestVectors.bytes(m.bytes) }
        let root = ContentID(try #require(ChunkID(hex: tree.contentIdHex)))
        let plan = try await ContentPlan.resolve(root) { id in
            guard let bytes = manifests[id] else { throw ContentError(.notFound, "no manifest \(id.short) in the vectors") }
            return bytes
        }
        #expect(plan.dataChunks.map(\.id.hex) == tree.haveOrder)
        #expect(plan.dataChunks.count == 9)
    }

    /// A malformed NAME_RESOLVE (subscribe = 2) is a bad request: ERROR 1, not "internal error".
    /// A request whose first frame is an extension type is reset with 0x1, not skipped.
    @Test func malformedAndExtensionRequestsAreBadRequests() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let reader = try await network.node("reader", roles: ["client"])
        try await withServing(origin) {
            let client = try await reader.peers.client(for: origin.address)

            // NAME_RESOLVE "example" with subscribe = 2.
            var request = ByteBuffer()
            Frame(type: STOQMessage.Types.nameResolve, payload: ByteBuffer(bytes: [7] + Array("example".utf8) + [2])).encode(into: &request)
            let stream = try await client.openRequestStream(priority: .control)
            try await stream.write(request)
            try await stream.finish()
            var decoder = FrameDecoder(maximumPayloadLength: 2048)
            decoder.handle(bytes: try await stream.readAll(limit: 4096))
            let frame = try #require(try decoder.pollFrame())
            guard case .error(let code, let message)? = try STOQMessage.decode(frame) else {
                Issue.record("expected ERROR, got \(frame.type)")
                return
            }
            #expect(code == ChunkErrorCode.badRequest, "\(message)")
            #expect(message.contains("malformed"))

            // An extension frame type (0x1003) as a request: the stream is reset, no answer.
            var extensionRequest = ByteBuffer()
            Frame(type: FrameType(rawValue: 0x1003), payload: ByteBuffer(bytes: [1, 2, 3])).encode(into: &extensionRequest)
            let second = try await client.openRequestStream(priority: .control)
            try await second.write(extensionRequest)
            try await second.finish()
            await #expect(throws: (any Error).self) { _ = try await second.readAll(limit: 4096) }

            // The connection still serves: a PING is answered.
            try await client.ping()
        }
        await reader.close()
    }
}
