import Foundation
import NIOCore
import STOQIdentity
import Testing
import TestVectorSupport
@testable import STOQWire

/// The message examples of `docs/PROTOCOL.md` (`docs/test-vectors/wire.json`): each is encoded
/// here and compared with the committed bytes, and the committed bytes must decode to the same
/// message. The ids are those of the content-tree vectors, read from `content-tree.json`.
/// `STOQ_WRITE_VECTORS=1` rewrites the file instead of comparing.
@Suite struct WireVectorTests {
    struct Example: Codable, Equatable {
        var name: String
        var description: String
        var hex: String
        /// Raw bytes that follow the frame on the stream (a chunk body), if any.
        var followedBy: String?
    }

    struct File: Codable, Equatable {
        var comment: String
        var messages: [Example]
    }

    /// The part of content-tree.json these examples use.
    struct Tree: Codable {
        struct Chunk: Codable { var id: String; var path: String; var stored: String }
        var contentIdHex: String
        var chunks: [Chunk]
    }

    static func examples() throws -> [(Example, STOQMessage)] {
        let tree = try TestVectors.read(Tree.self, from: "content-tree.json")
        let root = try #require(WireID(try TestVectors.bytes(tree.contentIdHex)))
        let hello = try #require(tree.chunks.first { $0.path == "hello.txt" })
        let helloID = try #require(WireID(try TestVectors.bytes(hello.id)))
        let stored = try TestVectors.bytes(hello.stored)
        let bits = try ChunkBitfield(count: 9, bytes: [0x81, 0x80])
        let target = try #require(WireID(Array(0..<32) as [UInt8]))
        let nonce: UInt64 = 0x0123_4567_89AB_CDEF
        let list: [(String, String, STOQMessage, [UInt8]?)] = [
            ("get_chunk", "GET_CHUNK for the chunk of hello.txt, whole (offset 0, length 0)",
             .getChunk(chunkID: helloID, offset: 0, length: 0), nil),
            ("chunk_header", "its answer: CHUNK_HEADER ok, 30 bytes of 30 from offset 0, then the 30 stored bytes until FIN",
             .chunkHeader(status: .ok, totalLength: UInt64(stored.count), offset: 0, length: UInt64(stored.count)), stored),
            ("chunk_pending", "CHUNK_PENDING: an edge has waited 12 ms for its upstream",
             .chunkPending(waitedMillis: 12), nil),
            ("chunk_header_not_found", "CHUNK_HEADER not found",
             .chunkHeader(status: .notFound, totalLength: 0, offset: 0, length: 0), nil),
            ("ping", "PING with nonce 0x0123456789abcdef, sentAtMicros 0",
             .ping(nonce: nonce, sentAtMicros: 0), nil),
            ("pong", "its PONG: the nonce echoed, load 125 permille, bandwidth unknown (0), 8 active transfers",
             .pong(.init(nonce: nonce, echoSentAtMicros: 0, loadPermille: 125, bandwidthBytesPerSecond: 0, activeTransfers: 8)), nil),
            ("want", "WANT for the test tree's content id (chunkCount 0, empty bitfield)",
             .want(contentID: root, chunks: ChunkBitfield(count: 0)), nil),
            ("have", "HAVE: 9 data chunks, bits 0, 7 and 8 set (hello.txt and the first two chunks of data.bin)",
             .have(contentID: root, chunks: bits, flags: []), nil),
            ("have_all", "HAVE with an empty bitfield and no flags: every chunk",
             .have(contentID: root, chunks: ChunkBitfield(count: 0), flags: []), nil),
            ("have_fills_none_cached", "HAVE with an empty bitfield and flags 1: an edge that fills from upstream and caches none",
             .have(contentID: root, chunks: ChunkBitfield(count: 0), flags: .fillsFromUpstream), nil),
            ("error_not_found", "ERROR 3 with a message",
             .error(code: 3, message: "no manifests here"), nil),
            ("status_request", "STATUS_REQUEST (empty payload)",
             .statusRequest, nil),
            ("name_resolve", "NAME_RESOLVE of \"example\", subscribing",
             .nameResolve(name: "example", subscribe: true), nil),
            ("invalidate", "INVALIDATE of \"example\" at version 3",
             .invalidate(name: "example", version: 3), nil),
            ("name_published", "NAME_PUBLISHED: version 3, 2 edges told",
             .namePublished(version: 3, notified: 2), nil),
            ("relay_open", "RELAY_OPEN to [fd00::2]:4433, node id 00 01 02 … 1f",
             .relayOpen(target: target, host: "fd00::2", port: 4433), nil),
        ]
        return list.map { name, description, message, body in
            (Example(name: name, description: description, hex: Hex.encode(message.encoded().readableBytesView), followedBy: body.map { Hex.encode($0) }), message)
        }
    }

    @Test func wireVectorsMatchTheCode() throws {
        let computed = try Self.examples()
        let file = File(comment: "STOQ message examples: see docs/PROTOCOL.md, section Test vectors. Recomputed by Tests/STOQWireTests/WireVectorTests.swift.",
                        messages: computed.map(\.0))
        if TestVectors.rewriting {
            try TestVectors.write(file, to: "wire.json")
            return
        }
        let committed = try TestVectors.read(File.self, from: "wire.json")
        #expect(committed.messages.count == computed.count)
        for (example, (expected, message)) in zip(committed.messages, computed) {
            #expect(example == expected, "the bytes of \(expected.name) changed")
            // The committed bytes decode to the message.
            var decoder = FrameDecoder(maximumPayloadLength: 4096)
            decoder.handle(bytes: ByteBuffer(bytes: try TestVectors.bytes(example.hex)))
            let frame = try #require(try decoder.pollFrame())
            #expect(try STOQMessage.decode(frame) == message, "\(example.name) does not decode to its message")
            #expect(!decoder.hasPartialFrame)
        }
    }
}
