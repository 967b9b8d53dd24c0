import Foundation
import STOQContent
import STOQNode
import STOQTestSupport
import STOQWire
import Testing

/// Uploads into a running origin over real QUIC on [::1] (issue 13 §1).
@Suite(.serialized) struct UploadServiceTests {
    func file(_ network: TestNetwork, _ name: String, _ bytes: [UInt8]) throws -> String {
        let path = network.directory + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func upload(_ path: String, via peer: PeerClient, isPublic: Bool = false) async throws -> UploadReport {
        let scan = try UploadTree.scan(path: path)
        let sources = scan.sources
        return try await Uploader(client: peer).upload(scan.tree, name: path, isPublic: isPublic) { i in
            try FileSource(path: sources[i].path).read(at: sources[i].offset, count: sources[i].length)
        }
    }

    @Test func aPublisherUploadsAndTheOriginServesTheContentAtOnce() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let publisher = try await network.node("publisher", roles: ["client"])
        let intruder = try await network.node("intruder", roles: ["client"])
        var configuration = try network.configuration("origin")
        configuration.publishers = [publisher.nodeID.hex.uppercased()]
        let origin = try await Node.start(configuration)
        var rng = SystemRandomNumberGenerator()
        var bytes = (0..<3_000_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let path = try file(network, "big.bin", bytes)
        try await withServing(origin) {
            let peer = try await publisher.peers.client(for: origin.address)
            let first = try await upload(path, via: peer)
            #expect(first.sentChunks == first.chunks && first.chunks > 50)
            // Readable at once on the origin with its publisher key, like a local put.
            let keys = try PublisherKeyFile.load(path: PublisherKeyFile.path(in: origin.configuration.store))
            #expect(try ContentReader(store: origin.store, keys: keys).readFile(first.content) == bytes)
            let local = try ContentPublisher(store: MemoryChunkStore(), keys: keys).put(path: path)
            #expect(local.id == first.content)
            // Again: nothing to send. Edited: only the changed chunks.
            #expect(try await upload(path, via: peer).sentChunks == 0)
            for i in 1_500_000..<1_520_000 { bytes[i] ^= 0x5A }
            _ = try file(network, "big.bin", bytes)
            let edited = try await upload(path, via: peer)
            #expect(edited.sentChunks > 0 && edited.sentChunks < 10 && edited.saved > 0.9)
            // Public content: the origin hands out its own key.
            let open = try await upload(try file(network, "open.txt", Array("hello, world\n".utf8)), via: peer, isPublic: true)
            let key = try #require(await origin.publicKeys.readKey(for: open.content))
            #expect(try ContentReader(store: origin.store, readKey: key).readFile(open.content) == Array("hello, world\n".utf8))
            // Bytes that are not the chunk offered are refused and not stored.
            let tree = try UploadTree.scan(path: path).tree
            let (id, needed) = try await peer.uploadOffer(tree, name: "x", isPublic: false)
            #expect(needed.isEmpty)
            await #expect { _ = try await peer.uploadChunk(id: id, index: 0, bytes: [UInt8](repeating: 1, count: tree.chunks[0].length)) } throws: {
                ($0 as? UploadRefused)?.code == UploadProtocol.badRequest
            }
            // Anyone else is forbidden, with what to do.
            let other = try await intruder.peers.client(for: origin.address)
            await #expect { _ = try await upload(path, via: other) } throws: { error in
                guard let refused = error as? UploadRefused else { return false }
                return refused.code == UploadProtocol.forbidden && refused.message.contains("--publisher \(intruder.nodeID.hex)")
            }
            #expect(await origin.server.services.contains { $0.name == "upload" })
        }
        await publisher.close()
        await intruder.close()
    }
}
