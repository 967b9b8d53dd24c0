import Crypto
import Foundation
import STOQAccess
import STOQContent
import STOQIdentity
import SwiftASN1
import Testing

@testable import STOQExchange

/// ``ReadAllowances`` bounds and ``ReadGate`` decisions (`--private-reads`, issue 15).
@Suite struct ReadGateTests {
    private func id(_ n: Int) -> ChunkID { ChunkID.of(Array("chunk \(n)".utf8)) }
    private func ids(_ range: Range<Int>) -> [ChunkID] { range.map(id) }
    // The objects stay alive for the whole test, so the connection identifiers stay distinct.
    private let connections = [NSObject(), NSObject(), NSObject()]
    private var a: ObjectIdentifier { ObjectIdentifier(connections[0]) }
    private var b: ObjectIdentifier { ObjectIdentifier(connections[1]) }
    private let grant1: [UInt8] = Array(repeating: 1, count: 16)
    private let grant2: [UInt8] = Array(repeating: 2, count: 16)

    @Test func allowedIdsAreFoundUnderTheirSourceAndPerConnection() {
        let allowances = ReadAllowances(perConnection: 100, total: 1000)
        allowances.allow(ids(0..<10), source: grant1, connection: a)
        allowances.allow(ids(10..<20), source: [], connection: a)
        #expect(allowances.source(of: id(3), connection: a) == grant1)
        #expect(allowances.source(of: id(15), connection: a) == [])
        #expect(allowances.source(of: id(3), connection: b) == nil, "an allowance is for one connection")
        #expect(allowances.source(of: id(99), connection: a) == nil)
        #expect(allowances.count(for: a) == 20)
        allowances.allow(ids(0..<10), source: grant1, connection: a)
        #expect(allowances.count(for: a) == 20, "an id allowed twice counts once")
    }

    @Test func oneConnectionHoldsAtMostItsBoundAndKeepsWhatItUsed() {
        let allowances = ReadAllowances(perConnection: 100, total: 10_000)
        allowances.allow(ids(0..<40), source: grant1, connection: a)
        // A hit moves an id to the newer generation, so it survives the next rotation.
        #expect(allowances.source(of: id(0), connection: a) == grant1)
        allowances.allow(ids(40..<1000), source: grant1, connection: a)
        #expect(allowances.count(for: a) <= 100)
        #expect(allowances.source(of: id(999), connection: a) == grant1, "the newest ids are kept")
        #expect(allowances.source(of: id(1), connection: a) == nil, "the least recently used ids are dropped")
        #expect(allowances.stats.ids == allowances.count(for: a))
    }

    @Test func severalSourcesShareTheConnectionBoundOldestSourceFirst() {
        let allowances = ReadAllowances(perConnection: 100, total: 10_000)
        allowances.allow(ids(0..<45), source: grant1, connection: a)
        allowances.allow(ids(100..<145), source: grant2, connection: a)
        allowances.allow(ids(200..<245), source: [], connection: a)
        #expect(allowances.count(for: a) <= 100)
        #expect(allowances.source(of: id(0), connection: a) == nil, "the source used least recently went")
        #expect(allowances.source(of: id(244), connection: a) == [])
        #expect(allowances.stats.ids == allowances.count(for: a))
    }

    @Test func theNodeBoundDropsTheLeastRecentlyUsedConnection() {
        let allowances = ReadAllowances(perConnection: 100, total: 120)
        allowances.allow(ids(0..<45), source: grant1, connection: a)
        allowances.allow(ids(100..<145), source: grant1, connection: b)
        let c = ObjectIdentifier(connections[2])
        allowances.allow(ids(200..<245), source: grant1, connection: c)
        #expect(allowances.stats.ids <= 120)
        #expect(allowances.count(for: a) == 0, "the connection used least recently lost its allowance")
        #expect(allowances.count(for: b) == 45 && allowances.count(for: c) == 45)
        #expect(allowances.stats.connections == 2)
    }

    @Test func dropAndCloseForget() {
        let allowances = ReadAllowances(perConnection: 100, total: 1000)
        allowances.allow(ids(0..<10), source: grant1, connection: a)
        allowances.allow(ids(10..<20), source: grant2, connection: a)
        allowances.drop(source: grant1, connection: a)
        #expect(allowances.source(of: id(0), connection: a) == nil)
        #expect(allowances.source(of: id(10), connection: a) == grant2)
        allowances.closed(a)
        #expect(allowances.stats.connections == 0 && allowances.stats.ids == 0)
    }

    @Test func manifestsListTheirChildrenAndDataChunksNothing() throws {
        let file = FileManifest(kind: .leaf, contentType: "text/plain", totalSize: 3,
                                entries: [.init(id: id(1), offset: 0, size: 1), .init(id: id(2), offset: 1, size: 2)], sealedKeys: Array(repeating: 0, count: 28 + 64))
        #expect(ReadGate.children(of: file.encode()) == [id(1), id(2)])
        let index = SealedIndex(entries: [.init(kind: .chunk, id: id(3), size: 10), .init(kind: .index, id: id(4), size: 90)], sealedRoot: Array(repeating: 0, count: 60))
        #expect(ReadGate.children(of: index.encode()) == [id(3), id(4)])
        #expect(ReadGate.children(of: Array("not a manifest".utf8)) == nil)
        #expect(ReadGate.children(of: Array("STQM and garbage".utf8)) == nil)
    }

    @Test func roleAllowsPublicIsOpenAndTheRestIsRefusedWithTheGrantToPresent() async throws {
        let reader = try NodeID(bytes: Array(SHA256.hash(data: Array("edge".utf8))))
        let stranger = try NodeID(bytes: Array(SHA256.hash(data: Array("stranger".utf8))))
        let policy = AccessPolicy(roles: .init(readers: [reader]), trust: nil)
        let publicRoot = id(7)
        let gate = ReadGate(access: policy, isPublic: { $0.manifest == publicRoot })
        #expect(await gate.decide(id(1), peer: reader, connection: a) == .role)
        #expect(await gate.decide(publicRoot, peer: stranger, connection: a) == .allowed(source: []))
        guard case .denied(let why) = await gate.decide(id(1), peer: stranger, connection: a) else {
            Issue.record("a stranger read private content")
            return
        }
        #expect(why.contains("--private-reads") && why.contains("read grant") && why.contains("stoq grant create --rights read"), "\(why)")
        // What a public manifest lists is open on that connection only.
        let leaf = FileManifest(kind: .leaf, contentType: "", totalSize: 1, entries: [.init(id: id(8), offset: 0, size: 1)], sealedKeys: Array(repeating: 0, count: 28 + 32))
        gate.learn(leaf.encode(), decision: .allowed(source: []), connection: a)
        #expect(await gate.decide(id(8), peer: stranger, connection: a) == .allowed(source: []))
        #expect(await gate.decide(id(8), peer: stranger, connection: b) != .allowed(source: []))
    }
}

/// ``ReadGate`` with real grants: what a grant allows follows the manifests it reads, and stops at
/// once when the grant is revoked or expires on the connection that presented it.
@Suite struct ReadGateGrantTests {
    final class Clock: @unchecked Sendable {
        private let lock = NSLock()
        private var value = Date(timeIntervalSince1970: 1_900_000_000)
        var now: Date { lock.withLock { value } }
        func advance(_ seconds: TimeInterval) { lock.withLock { value += seconds } }
    }

    let connection = NSObject()
    private func id(_ n: Int) -> ChunkID { ChunkID.of(Array("grant chunk \(n)".utf8)) }

    private func setUp() throws -> (ReadGate, Clock, certificate: [UInt8], key: P256.Signing.PrivateKey, reader: NodeID) {
        let clock = Clock()
        let ca = try CertificateAuthority.create(now: clock.now.addingTimeInterval(-3600))
        let issued = try ca.issue(name: "publisher", now: clock.now.addingTimeInterval(-60))
        let reader = try ca.issue(name: "reader", now: clock.now.addingTimeInterval(-60)).nodeID
        var der = DER.Serializer()
        try der.serialize(issued.certificate)
        let certificate = der.serializedBytes
        let key = try P256.Signing.PrivateKey(pemRepresentation: issued.privateKeyPEM)
        let policy = AccessPolicy(roles: .init(publishers: [issued.nodeID]), trust: try TrustRoots(pem: ca.certificatePEM), clock: { clock.now })
        return (ReadGate(access: policy, isPublic: { _ in false }), clock, certificate, key, reader)
    }

    @Test func aGrantCoversItsContentAndWhatItsManifestsListUntilRevokedOrExpired() async throws {
        let (gate, clock, certificate, key, reader) = try setUp()
        let conn = ObjectIdentifier(connection)
        let leaf = FileManifest(kind: .leaf, contentType: "", totalSize: 2, entries: [.init(id: id(1), offset: 0, size: 1), .init(id: id(2), offset: 1, size: 1)],
                                sealedKeys: Array(repeating: 0, count: 28 + 64))
        let root = ChunkID.of(leaf.encode())
        let notAfter = UInt64(clock.now.timeIntervalSince1970) + 60
        let grant = try AccessGrant.issue(certificate: certificate, key: key, caveats: GrantCaveats(rights: .read, notAfter: notAfter, scope: [.content(root.bytes)]))
        let other = try AccessGrant.issue(certificate: certificate, key: key, caveats: GrantCaveats(rights: .read, notAfter: notAfter, scope: [.content(id(9).bytes)]))
        // Before any grant: refused, the root and what it lists alike.
        guard case .denied = await gate.decide(root, peer: reader, connection: conn) else { Issue.record("read without a grant"); return }
        _ = try await gate.access.present(other.sealed, peer: reader, connection: conn)
        guard case .denied(let why) = await gate.decide(root, peer: reader, connection: conn) else { Issue.record("a grant for another content read it"); return }
        #expect(why.contains("does not cover"), "\(why)")
        _ = try await gate.access.present(grant.sealed, peer: reader, connection: conn)
        let decision = await gate.decide(root, peer: reader, connection: conn)
        #expect(decision == .allowed(source: grant.grantID))
        #expect(await gate.decide(id(1), peer: reader, connection: conn) != .allowed(source: grant.grantID), "nothing is listed before the manifest is read")
        gate.learn(leaf.encode(), decision: decision, connection: conn)
        #expect(await gate.decide(id(1), peer: reader, connection: conn) == .allowed(source: grant.grantID))
        #expect(await gate.decide(id(2), peer: reader, connection: conn) == .allowed(source: grant.grantID))
        // Expired: refused at the next request, and the allowance is gone.
        clock.advance(120)
        guard case .denied(let late) = await gate.decide(id(1), peer: reader, connection: conn) else { Issue.record("an expired grant still reads"); return }
        #expect(late.contains("expired"), "\(late)")
        #expect(gate.allowances.count(for: conn) == 0)
    }

    @Test func aRevokedGrantStopsOnTheConnectionThatPresentedIt() async throws {
        let (gate, clock, certificate, key, reader) = try setUp()
        let conn = ObjectIdentifier(connection)
        let index = SealedIndex(entries: [.init(kind: .chunk, id: id(5), size: 10)], sealedRoot: Array(repeating: 0, count: 60))
        let root = ChunkID.of(index.encode())
        let grant = try AccessGrant.issue(certificate: certificate, key: key,
                                          caveats: GrantCaveats(rights: .read, notAfter: UInt64(clock.now.timeIntervalSince1970) + 600, scope: [.content(root.bytes)]))
        _ = try await gate.access.present(grant.sealed, peer: reader, connection: conn)
        let decision = await gate.decide(root, peer: reader, connection: conn)
        gate.learn(index.encode(), decision: decision, connection: conn)
        #expect(await gate.decide(id(5), peer: reader, connection: conn) == .allowed(source: grant.grantID), "a sealed index's chunks follow it")
        let list = try RevocationList.sign(version: 1, grantIDs: [grant.grantID], certificate: certificate, key: key)
        _ = try await gate.access.accept(list)
        guard case .denied(let why) = await gate.decide(id(5), peer: reader, connection: conn) else { Issue.record("a revoked grant still reads"); return }
        #expect(why.contains("revoked"), "\(why)")
    }
}
