import Crypto
import Foundation
import STOQContent
import STOQEdge
import STOQNode
import STOQTestSupport
import STOQWire
import Testing

/// Values a peer chooses, over real QUIC: out-of-range ones are refused with ERROR before anything
/// is stored, and the node keeps serving (issue 11: "no peer input can trap a node").
@Suite struct PeerInputTests {
    /// A record for `name` signed by `owner` whose 8-byte version field holds `version`, whatever its
    /// value: what a hostile publisher can send (``NameRecord/sign`` refuses such versions).
    static func selfSigned(name: String, content: ContentID, version: UInt64, owner: P256.Signing.PrivateKey) throws -> [UInt8] {
        let honest = try NameRecord.sign(name: name, content: content, version: 1, ttlSeconds: 60, owner: owner).encode()
        var body = Array(honest.dropLast(64))
        let at = 4 + 1 + 1 + name.utf8.count + 32
        body.replaceSubrange(at ..< at + 8, with: (0 ..< 8).map { UInt8(truncatingIfNeeded: version >> (56 - 8 * UInt64($0))) })
        let signature = try owner.signature(for: Array("STOQ name record v1".utf8) + body)
        return body + Array(signature.rawRepresentation)
    }

    /// The known crash: NAME_PUBLISH of a correctly self-signed record for a new name with a version
    /// of 2^62 or more was stored, then the origin trapped encoding NAME_PUBLISHED (a varint).
    @Test func aPublishedVersionBeyondTheVarintRangeIsRefusedAndNotStored() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let publisher = try await network.node("publisher", roles: ["client"])
        let content = try network.publish(on: origin, bytes: 20_000, seed: 11).id
        let owner = P256.Signing.PrivateKey()
        try await withServing(origin) {
            let client = try await publisher.peers.client(for: origin.address)
            for (i, version) in [UInt64(1) << 62, (1 << 62) + 1, 1 << 63, .max].enumerated() {
                let name = "huge-\(i)"
                let bytes = try Self.selfSigned(name: name, content: content, version: version, owner: owner)
                do {
                    _ = try await client.publishName(bytes)
                    Issue.record("v\(version) was accepted")
                } catch let error as NodeError {
                    #expect(error.code == .refused, "\(error)")
                    #expect("\(error)".contains("highest version"), "the refusal says why: \(error)")
                }
                // Nothing stored, and the origin still answers.
                #expect(try await client.resolveName(name) == nil)
                #expect(await origin.names.heldVersion(of: name) == nil)
                _ = try await client.ping()
            }
            // The bound itself is accepted and announced.
            let top = try NameRecord.sign(name: "top", content: content, version: NameRecord.maxVersion, ttlSeconds: 60, owner: owner)
            let published = try await client.publishName(top.encode())
            #expect(published.version == VarInt.max)
            #expect(try NameRecord.decode(try #require(try await client.resolveName("top"))) == top)
        }
        // A restarted origin does not load such a record from disk either (it was never written).
        let records = (try? FileManager.default.contentsOfDirectory(atPath: origin.configuration.store + "/names")) ?? []
        #expect(records.filter { $0.hasSuffix(".record") }.count == 1)
        await publisher.close()
    }
}
