import Crypto
import Foundation
import NIOCore
import Testing
import SwiftASN1
import X509
@testable import STOQAccess
import STOQIdentity
import STOQWire

/// A network CA with a publisher, an operator and two other nodes, for every test.
struct Network {
    let ca: CertificateAuthority
    let trust: TrustRoots
    let publisher: (der: [UInt8], key: P256.Signing.PrivateKey, id: NodeID)
    let stranger: (der: [UInt8], key: P256.Signing.PrivateKey, id: NodeID)
    let reader: NodeID
    let other: NodeID
    static let now = Date(timeIntervalSince1970: 1_900_000_000)

    init() throws {
        ca = try CertificateAuthority.create(now: Self.now.addingTimeInterval(-3600))
        trust = try TrustRoots(pem: ca.certificatePEM)
        publisher = try Self.node(ca, "publisher")
        stranger = try Self.node(ca, "stranger")
        reader = try Self.node(ca, "reader").id
        other = try Self.node(ca, "other").id
    }

    static func node(_ ca: CertificateAuthority, _ name: String) throws -> (der: [UInt8], key: P256.Signing.PrivateKey, id: NodeID) {
        let c = try ca.issue(name: name, now: now.addingTimeInterval(-60))
        var s = DER.Serializer()
        try s.serialize(c.certificate)
        return (s.serializedBytes, try P256.Signing.PrivateKey(pemRepresentation: c.privateKeyPEM), c.nodeID)
    }

    func grant(_ rights: AccessRights, expires: TimeInterval = 3600, peer: NodeID? = nil, scope: [ScopeEntry] = [], extensions: [GrantExtension] = []) throws -> AccessGrant {
        try AccessGrant.issue(certificate: publisher.der, key: publisher.key,
                              caveats: GrantCaveats(rights: rights, notAfter: UInt64(Self.now.timeIntervalSince1970 + expires), peer: peer, scope: scope),
                              extensions: extensions)
    }

    func policy(operators: Bool = true) -> AccessPolicy {
        AccessPolicy(roles: .init(operators: operators ? [publisher.id] : [], publishers: [publisher.id]), trust: trust, clock: { Self.now })
    }
}

@Suite struct AccessGrantTests {
    let net: Network
    init() throws { net = try Network() }
    let conn = ObjectIdentifier(NSObject())

    @Test func roundTripsInBothForms() throws {
        let g = try net.grant([.read, .publish], scope: [.namePrefix("site/"), .content(Array(repeating: 7, count: 32))],
                              extensions: [GrantExtension(type: 1, bytes: [1, 2, 3])])
        #expect(try AccessGrant(encoded: g.encoded()) == g)
        #expect(g.text.hasPrefix("stoqgrant1:"))
        #expect(try AccessGrant(text: "  " + g.text + "\n") == g)
        #expect(g.extensions(type: 1).first?.bytes == [1, 2, 3])
        #expect(g.extensions(type: 2).isEmpty)
        try g.verifySignatures()
        #expect(g.sealed.secret == nil)
        try g.sealed.verifySignatures()
    }

    @Test func everyRightIsCheckedAlone() async throws {
        for (_, right) in AccessRights.named where right != .read {
            let policy = net.policy()
            let g = try net.grant(right)
            _ = try await policy.present(g.sealed, peer: net.reader, connection: conn)
            for (_, other) in AccessRights.named where other != .read {
                let decision = await policy.check(other, peer: net.reader, connection: conn)
                #expect(decision.isAllowed == (other == right), "right \(right) checked as \(other)")
            }
        }
    }

    @Test func rolesWithoutGrants() async throws {
        let policy = net.policy()
        #expect(await policy.check(.status, peer: net.publisher.id, connection: conn) == .role)
        #expect(!(await policy.check(.status, peer: net.reader, connection: conn)).isAllowed)
        #expect(!(await policy.check(.publish, peer: net.reader, connection: conn)).isAllowed)
        if case .denied(let message) = await policy.check(.status, peer: net.reader, connection: conn) {
            #expect(message.hasPrefix("no grant: the request needs an access grant with right status for scope this node"))
        }
        // Closed by default: without operators STATUS, PURGE and RELAY_OPEN are refused to the
        // network's certificates (issue 15 item 1); relaying opens with relayOpen or relayers.
        let closed = net.policy(operators: false)
        #expect(!(await closed.check(.status, peer: net.reader, connection: conn)).isAllowed)
        #expect(!(await closed.check(.purge, item: .content(Array(repeating: 1, count: 32)), peer: net.reader, connection: conn)).isAllowed)
        #expect(!(await closed.check(.relay, peer: net.reader, connection: conn)).isAllowed)
        #expect(!(await closed.check(.status, peer: nil, connection: conn)).isAllowed)
        #expect(await policy.check(.relay, peer: net.publisher.id, connection: conn) == .role)
        let open = AccessPolicy(roles: .init(relayOpen: true), trust: net.trust, clock: { Network.now })
        #expect(await open.check(.relay, peer: net.reader, connection: conn) == .role)
        #expect(!(await open.check(.status, peer: net.reader, connection: conn)).isAllowed)
        let carrying = AccessPolicy(roles: .init(relayers: [net.reader]), trust: net.trust, clock: { Network.now })
        #expect(await carrying.check(.relay, peer: net.reader, connection: conn) == .role)
    }

    @Test func expiredGrantIsRefused() async throws {
        let g = try net.grant(.status, expires: -1)
        await #expect(throws: AccessError(.expired, "")) { try await g.verify(trust: net.trust, now: Network.now) }
        let policy = net.policy()
        await #expect(throws: AccessError(.expired, "")) { _ = try await policy.present(g, peer: net.reader, connection: conn) }
        // A grant that expires after it was presented stops working then.
        var now = Network.now
        let clock = LockedDate(now)
        let later = AccessPolicy(roles: .init(operators: [net.publisher.id]), trust: net.trust, clock: { clock.value })
        _ = try await later.present(try net.grant(.status, expires: 10), peer: net.reader, connection: conn)
        #expect(await later.check(.status, peer: net.reader, connection: conn).isAllowed)
        now.addTimeInterval(11)
        clock.value = now
        #expect(!(await later.check(.status, peer: net.reader, connection: conn)).isAllowed)
    }

    @Test func narrowingOnlyNarrows() async throws {
        let g = try net.grant([.publish, .status], scope: [.namePrefix("site/")])
        let n = try g.narrowed(GrantCaveats(rights: .publish, notAfter: 0, peer: net.reader, scope: [.namePrefix("site/blog/")]))
        #expect(n.blocks.count == 2)
        let e = try await n.verify(trust: net.trust, now: Network.now)
        #expect(e.rights == .publish)
        #expect(e.peers == [net.reader])
        #expect(e.admits(.name("site/blog/post")))
        #expect(!e.admits(.name("site/shop")))
        #expect(!e.admits(.name("other/blog/")))
        // A wider narrowing is refused by the tool...
        #expect(throws: AccessError(.invalidNarrowing, "")) { try n.narrowed(GrantCaveats(rights: [.publish, .status], notAfter: 0)) }
        #expect(throws: AccessError(.invalidNarrowing, "")) { try n.narrowed(GrantCaveats(rights: .publish, notAfter: UInt64.max)) }
        #expect(throws: AccessError(.invalidNarrowing, "")) { try n.narrowed(GrantCaveats(rights: .publish, notAfter: 0, peer: net.other)) }
        #expect(throws: AccessError(.invalidNarrowing, "")) { try n.sealed.narrowed(GrantCaveats(rights: .publish, notAfter: 0)) }
        // ...and even a hand-made wider block cannot widen: the effective grant is the intersection.
        let wide = try g.narrowed(GrantCaveats(rights: .publish, notAfter: 0, scope: [.namePrefix("site/blog/")]))
        let forged = AccessGrant(grantID: wide.grantID, publisher: wide.publisher, certificate: wide.certificate, extensions: wide.extensions,
                                 blocks: wide.blocks, secret: wide.secret)
        #expect(forged.effective.admits(.name("site/blog/x")) && !forged.effective.admits(.name("site/x")))
        // Narrowed to a peer: another peer cannot use it.
        let policy = net.policy()
        await #expect(throws: AccessError(.wrongPeer, "")) { _ = try await policy.present(n.sealed, peer: net.other, connection: conn) }
        _ = try await policy.present(n.sealed, peer: net.reader, connection: conn)
        #expect(await policy.check(.publish, item: .name("site/blog/a"), peer: net.reader, connection: conn).isAllowed)
        #expect(!(await policy.check(.publish, item: .name("site/a"), peer: net.reader, connection: conn)).isAllowed)
        #expect(!(await policy.check(.status, peer: net.reader, connection: conn)).isAllowed)
        // At most 16 blocks.
        var deep = g
        for _ in 1..<AccessGrant.maximumBlocks { deep = try deep.narrowed(GrantCaveats(rights: .publish, notAfter: 0)) }
        #expect(try AccessGrant(encoded: deep.encoded()) == deep)
        #expect(throws: AccessError(.invalidNarrowing, "")) { try deep.narrowed(GrantCaveats(rights: .publish, notAfter: 0)) }
    }

    @Test func scopeKinds() throws {
        let id = Array(repeating: UInt8(9), count: 32)
        #expect(ScopeEntry.content(id).admits(.content(id)))
        #expect(!ScopeEntry.content(id).admits(.content(Array(repeating: 8, count: 32))))
        #expect(ScopeEntry.pathPrefix("docs").admits(.path("docs/a.txt")))
        #expect(ScopeEntry.pathPrefix("docs").admits(.path("docs")))
        #expect(!ScopeEntry.pathPrefix("docs").admits(.path("docsecret")))
        #expect(!ScopeEntry.namePrefix("docs").admits(.path("docs/a")))
        #expect(try ScopeEntry(parsing: "content:" + Hex.encode(id)) == .content(id))
        #expect(try ScopeEntry(parsing: "name:site/") == .namePrefix("site/"))
        #expect(throws: AccessError(.malformed, "")) { try ScopeEntry(parsing: "content:abc") }
        #expect(throws: AccessError(.malformed, "")) { try ScopeEntry(parsing: "host:x") }
        #expect(try AccessRights(parsing: "read, status") == [.read, .status])
        #expect(throws: AccessError(.malformed, "")) { try AccessRights(parsing: "write") }
    }

    @Test func tamperingIsCaught() async throws {
        let g = try net.grant(.status, scope: [.namePrefix("a")])
        let n = try g.narrowed(GrantCaveats(rights: .status, notAfter: 0))
        let bytes = n.encoded()
        var caught = 0, decoded = 0
        for i in stride(from: 0, to: bytes.count, by: 7) {
            var t = bytes
            t[i] ^= 0x01
            guard let grant = try? AccessGrant(encoded: t) else { continue }
            decoded += 1
            if grant == n { continue }
            if (try? await grant.verify(trust: net.trust, now: Network.now)) == nil { caught += 1 } else {
                // Only the secret may change without breaking a signature; then verifySignatures objects.
                Issue.record("a flipped byte at \(i) still verifies")
            }
        }
        #expect(decoded > 0 && caught > 0)
        // Dropping the last narrowing is not a way around it either: the secret no longer matches.
        let dropped = AccessGrant(grantID: n.grantID, publisher: n.publisher, certificate: n.certificate, extensions: n.extensions, blocks: [n.blocks[0]], secret: n.secret)
        #expect(throws: AccessError(.badSignature, "")) { try dropped.verifySignatures() }
    }

    @Test func wrongPublisherIsRefused() async throws {
        // A stranger's certificate with the publisher's id: the id no longer matches.
        let g = try net.grant(.status)
        let swapped = AccessGrant(grantID: g.grantID, publisher: g.publisher, certificate: net.stranger.der, extensions: [], blocks: g.blocks, secret: nil)
        #expect(throws: AccessError(.badSignature, "")) { try swapped.verifySignatures() }
        // A grant from a stranger: valid, but the stranger is no operator here.
        let s = try AccessGrant.issue(certificate: net.stranger.der, key: net.stranger.key, caveats: GrantCaveats(rights: .status, notAfter: UInt64(Network.now.timeIntervalSince1970 + 60)))
        await #expect(throws: AccessError(.notCovered, "")) { _ = try await net.policy().present(s, peer: net.reader, connection: conn) }
        // A certificate from another CA.
        let foreign = try CertificateAuthority.create(now: Network.now.addingTimeInterval(-3600))
        let c = try foreign.issue(name: "publisher", now: Network.now.addingTimeInterval(-60))
        var ser = DER.Serializer()
        try ser.serialize(c.certificate)
        let f = try AccessGrant.issue(certificate: ser.serializedBytes, key: P256.Signing.PrivateKey(pemRepresentation: c.privateKeyPEM),
                                      caveats: GrantCaveats(rights: .status, notAfter: UInt64(Network.now.timeIntervalSince1970 + 60)))
        await #expect(throws: AccessError(.badSignature, "")) { _ = try await f.verify(trust: net.trust, now: Network.now) }
        // Signing with a key that is not the certificate's.
        #expect(throws: AccessError(.malformed, "")) {
            try AccessGrant.issue(certificate: net.publisher.der, key: net.stranger.key, caveats: GrantCaveats(rights: .status, notAfter: 1))
        }
    }

    @Test func revocationStopsAGrant() async throws {
        let saved = LockedLists()
        let policy = AccessPolicy(roles: .init(operators: [net.publisher.id], publishers: [net.publisher.id]), trust: net.trust,
                                  clock: { Network.now }, save: { saved.value = $0 })
        let g = try net.grant(.status)
        _ = try await policy.present(g.sealed, peer: net.reader, connection: conn)
        #expect(await policy.check(.status, peer: net.reader, connection: conn).isAllowed)
        let list = try RevocationList.sign(version: 2, grantIDs: [g.grantID], certificate: net.publisher.der, key: net.publisher.key)
        #expect(try RevocationList(encoded: list.encoded()) == list)
        #expect(try await policy.accept(list).changed)
        #expect(saved.value.count == 1)
        // Already held: refused at once, not only at presentation.
        #expect(!(await policy.check(.status, peer: net.reader, connection: conn)).isAllowed)
        await #expect(throws: AccessError(.revoked, "")) { _ = try await policy.present(g.sealed, peer: net.reader, connection: conn) }
        // An older version changes nothing; a forged list is refused.
        let older = try RevocationList.sign(version: 1, grantIDs: [], certificate: net.publisher.der, key: net.publisher.key)
        let (current, changed) = try await policy.accept(older)
        #expect(!changed && current.version == 2)
        // A newer list altered in transit (one grant id flipped) does not verify.
        var bytes = try RevocationList.sign(version: 3, grantIDs: [g.grantID], certificate: net.publisher.der, key: net.publisher.key).encoded()
        bytes[40] ^= 1
        if let forged = try? RevocationList(encoded: bytes) {
            await #expect(throws: AccessError.self) { _ = try await policy.accept(forged) }
        }
        let stranger = try RevocationList.sign(version: 9, grantIDs: [], certificate: net.stranger.der, key: net.stranger.key)
        await #expect(throws: AccessError(.notCovered, "")) { _ = try await policy.accept(stranger) }
        // A restarted node keeps the list it saved.
        let restarted = AccessPolicy(roles: .init(operators: [net.publisher.id]), trust: net.trust, saved: saved.value, clock: { Network.now })
        #expect(await restarted.revocations(of: net.publisher.id)?.version == 2)
    }

    @Test func boundsAreChecked() throws {
        #expect(throws: AccessError(.malformed, "")) { try AccessGrant(encoded: []) }
        #expect(throws: AccessError(.malformed, "")) { try AccessGrant(encoded: Array(repeating: 0, count: AccessGrant.maximumEncodedLength + 1)) }
        #expect(throws: AccessError(.malformed, "")) { try AccessGrant(text: "stoqgrant1:ABC") }
        #expect(throws: AccessError(.malformed, "")) { try AccessGrant(text: "stoq1abc") }
        #expect(throws: AccessError(.malformed, "")) {
            try net.grant(.read, scope: Array(repeating: .namePrefix("x"), count: AccessGrant.maximumScopeEntries + 1))
        }
        #expect(throws: AccessError(.malformed, "")) {
            try net.grant(.read, extensions: [GrantExtension(type: 1, bytes: Array(repeating: 0, count: AccessGrant.maximumExtensionLength + 1))])
        }
        // 17 blocks claimed.
        var w = WireWriter()
        w.varint(1)
        w.varint(17)
        #expect(throws: AccessError(.malformed, "")) { try AccessGrant(encoded: Array(w.buffer.readableBytesView)) }
        for seed in 0..<200 {
            var rng = SystemRandomNumberGenerator()
            let junk = (0..<(seed * 3)).map { _ in UInt8.random(in: 0 ... .max, using: &rng) }
            AccessGrant.fuzz(junk)
            GrantMessage.fuzz(junk)
        }
    }

    @Test func wireMessagesRoundTrip() throws {
        let messages: [GrantMessage] = [
            .grant([1, 2, 3]), .grantAccepted(grantID: Array(repeating: 4, count: 16), rights: 16, notAfter: 1_900_000_000),
            .revocations([]), .revocations(Array(repeating: 5, count: 100)), .revocationsRequest(publisher: WireID(Array(repeating: 6, count: 32))!),
        ]
        for m in messages {
            var buffer = m.encoded()
            var decoder = FrameDecoder(maximumPayloadLength: GrantMessage.maximumPayloadLength)
            decoder.handle(bytes: buffer.readSlice(length: buffer.readableBytes)!)
            let frame = try #require(try decoder.pollFrame())
            #expect(GrantMessage.handles(frame.type))
            #expect(try GrantMessage.decode(frame) == m)
        }
        #expect(throws: WireError.self) { try GrantMessage.decode(Frame(type: GrantMessage.Types.grant, payload: ByteBuffer(bytes: [0]))) }
    }

    /// AUDIT_HEAD_REQUEST / AUDIT_HEAD (0x2C–0x2D): round trips and bounds.
    @Test func auditHeadMessagesRoundTripAndAreBounded() throws {
        for m in [AuditHeadMessage.request, .head([1, 2, 3]), .head(Array(repeating: 7, count: AuditHeadMessage.maximumHeadLength))] {
            var buffer = m.encoded()
            var decoder = FrameDecoder(maximumPayloadLength: AuditHeadMessage.maximumPayloadLength)
            decoder.handle(bytes: buffer.readSlice(length: buffer.readableBytes)!)
            let frame = try #require(try decoder.pollFrame())
            #expect(AuditHeadMessage.handles(frame.type))
            #expect(try AuditHeadMessage.decode(frame) == m)
        }
        // A request with a payload, an empty head, a head one byte too long: malformed.
        #expect(throws: WireError.self) { try AuditHeadMessage.decode(Frame(type: AuditHeadMessage.Types.request, payload: ByteBuffer(bytes: [0]))) }
        #expect(throws: WireError.self) { try AuditHeadMessage.decode(Frame(type: AuditHeadMessage.Types.head, payload: ByteBuffer(bytes: [0]))) }
        var long = WireWriter()
        long.lengthPrefixedBytes([UInt8](repeating: 1, count: AuditHeadMessage.maximumHeadLength + 1))
        #expect(throws: WireError.self) { try AuditHeadMessage.decode(Frame(type: AuditHeadMessage.Types.head, payload: long.buffer)) }
        AuditHeadMessage.fuzz([0x05, 1, 2, 3, 4, 5])
    }
}

/// A date tests move forward.
final class LockedDate: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: Date
    init(_ value: Date) { _value = value }
    var value: Date {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

/// The lists a policy saved.
final class LockedLists: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: [RevocationList] = []
    var value: [RevocationList] {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
