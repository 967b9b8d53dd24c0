import Crypto
import STOQContent
import Testing
@testable import STOQEdge
import STOQSimulation

let second: UInt64 = 1_000_000_000

func content(_ n: Int) -> ContentID { ContentID(chunk(n)) }

@Test func nameRecordRoundTripsSeeded() throws {
    let seed: UInt64 = 0xC0FFEE
    var random = SplitMix64(seed: seed)
    let owner = P256.Signing.PrivateKey()
    for i in 0..<50 {
        let length = 1 + Int(random.next() % 255)
        let name = String((0..<length).map { _ in Character(UnicodeScalar(UInt8(0x21 + random.next() % 94))) })
        let record = try NameRecord.sign(name: name, content: content(i), version: random.next() & NameRecord.maxVersion, ttlSeconds: UInt32(truncatingIfNeeded: random.next()), owner: owner)
        let bytes = record.encode()
        #expect(bytes.count <= NameRecord.maxEncodedSize)
        let decoded = try NameRecord.decode(bytes)
        #expect(decoded == record, "seed \(seed) record \(i)")
        #expect(decoded.hasValidSignature, "seed \(seed) record \(i)")
        #expect(decoded.isSigned(by: owner.publicKey))
        let invalidation = try NameInvalidation(name: name, version: record.version)
        #expect(try NameInvalidation.decode(invalidation.encode()) == invalidation)
    }
    // Non-ASCII names are fine; control characters and empty names are not.
    _ = try NameRecord.sign(name: "vidéos/été", content: content(1), version: 1, ttlSeconds: 60, owner: owner)
    #expect(throws: NameRecordError(.invalidName, "")) { try NameRecord.sign(name: "", content: content(1), version: 1, ttlSeconds: 60, owner: owner) }
    #expect(throws: NameRecordError(.invalidName, "")) { try NameRecord.sign(name: "a\nb", content: content(1), version: 1, ttlSeconds: 60, owner: owner) }
}

@Test func decodersSurviveSeededGarbage() throws {
    let seed: UInt64 = 99
    var random = SplitMix64(seed: seed)
    let valid = try NameRecord.sign(name: "site", content: content(1), version: 3, ttlSeconds: 60, owner: P256.Signing.PrivateKey()).encode()
    for _ in 0..<5_000 {
        var bytes: [UInt8]
        switch random.next() % 3 {
        case 0:
            bytes = (0..<Int(random.next() % 500)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        case 1:
            bytes = valid
            for _ in 0..<(1 + random.next() % 4) { bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next()) }
        default:
            bytes = Array(valid.prefix(Int(random.next() % UInt64(valid.count + 1))))
            if random.next() % 2 == 0 { bytes += [0] }
        }
        NameRecord.fuzz(bytes)
        if let record = try? NameRecord.decode(bytes), bytes != valid {
            // A mutation that still decodes must not verify (unless it only touched the
            // signature into another valid one, which is infeasible).
            #expect(!record.hasValidSignature || record.encode() == valid, "seed \(seed)")
        }
    }
}

@Test func nameTableAcceptsOnlyTheOwnerAndNewerVersions() throws {
    let owner = P256.Signing.PrivateKey()
    let intruder = P256.Signing.PrivateKey()
    var table = NameTable()
    let v1 = try NameRecord.sign(name: "news", content: content(1), version: 1, ttlSeconds: 60, owner: owner)
    #expect(throws: NameRecordError(.unknownOwner, "")) { try table.handleRecord(v1, now: 0) }
    try table.registerOwner(owner.publicKey, for: "news")
    #expect(try table.handleRecord(v1, now: 0) == .inserted)
    #expect(table.lookup("news", now: 1)?.content == content(1))

    let forged = try NameRecord.sign(name: "news", content: content(666), version: 9, ttlSeconds: 60, owner: intruder)
    #expect(throws: NameRecordError(.wrongOwner, "")) { try table.handleRecord(forged, now: 1) }
    // A record carrying the owner's key but a signature over other bytes.
    var bytes = try NameRecord.sign(name: "news", content: content(2), version: 2, ttlSeconds: 60, owner: owner).encode()
    bytes[6 + 4 + 5] ^= 1  // flip a bit of the content id
    let tampered = try NameRecord.decode(bytes)
    #expect(throws: NameRecordError(.badSignature, "")) { try table.handleRecord(tampered, now: 1) }

    let v2 = try NameRecord.sign(name: "news", content: content(2), version: 2, ttlSeconds: 60, owner: owner)
    #expect(try table.handleRecord(v2, now: 2) == .replaced(previous: v1))
    #expect(throws: NameRecordError(.staleVersion, "")) { try table.handleRecord(v1, now: 3) }
    #expect(try table.handleRecord(v2, now: 4) == .refreshed)
    let v2b = try NameRecord.sign(name: "news", content: content(3), version: 2, ttlSeconds: 60, owner: owner)
    #expect(throws: NameRecordError(.conflictingVersion, "")) { try table.handleRecord(v2b, now: 5) }
    #expect(table.lookup("news", now: 6)?.content == content(2))
}

@Test func nameTableExpiresAfterTTL() throws {
    let owner = P256.Signing.PrivateKey()
    var table = NameTable()
    try table.registerOwner(owner.publicKey, for: "a")
    try table.handleRecord(try NameRecord.sign(name: "a", content: content(1), version: 1, ttlSeconds: 10, owner: owner), now: 5 * second)
    #expect(table.pollTimeout() == 15 * second)
    #expect(table.lookup("a", now: 15 * second - 1) != nil)
    #expect(table.lookup("a", now: 15 * second) == nil)
    table.handleTimeout(now: 15 * second)
    #expect(table.pollEvent() == .expired(name: "a", version: 1))
    #expect(table.pollEvent() == nil)
    #expect(table.pollTimeout() == nil)
    // Refetching the same version after expiry is fine; an older one is not.
    #expect(try table.handleRecord(try NameRecord.sign(name: "a", content: content(1), version: 1, ttlSeconds: 10, owner: owner), now: 16 * second) == .inserted)
}

@Test func originPublishInvalidatesSubscribedEdges() throws {
    let owner = P256.Signing.PrivateKey()
    var origin = Subscriptions<Int>(grace: 0)
    var edges = [NameTable(), NameTable(), NameTable()]
    for i in edges.indices { try edges[i].registerOwner(owner.publicKey, for: "site") }
    let v1 = try origin.publish(name: "site", content: content(1), ttlSeconds: 30, owner: owner, now: 0)
    #expect(v1.version == 1)
    // Edges 0 and 1 resolve the name through the origin; edge 2 does not.
    for i in 0..<2 {
        let subscribed = origin.handleSubscribe(peer: i, name: "site", now: second)
        let record = try #require(subscribed)
        try edges[i].handleRecord(try NameRecord.decode(record.encode()), now: second)
    }
    #expect(origin.pollTransmit() == nil)
    #expect(Set(origin.holders(of: "site", now: 2 * second)) == [0, 1])

    // `stoq publish site <v2>`: both holders get an invalidation.
    let v2 = try origin.publish(name: "site", content: content(2), ttlSeconds: 30, owner: owner, now: 10 * second)
    #expect(v2.version == 2)
    var told: [Int] = []
    while let (peer, invalidation) = origin.pollTransmit() {
        told.append(peer)
        let wire = try NameInvalidation.decode(invalidation.encode())
        let dropped = edges[peer].handleInvalidation(wire, now: 10 * second)
        #expect(dropped)
        #expect(edges[peer].pollEvent() == .invalidated(name: "site", version: 1))
        #expect(edges[peer].lookup("site", now: 10 * second) == nil)
        // A replay of v1 is refused now; v2 is accepted.
        #expect(throws: NameRecordError(.staleVersion, "")) { try edges[peer].handleRecord(v1, now: 10 * second) }
        #expect(try edges[peer].handleRecord(v2, now: 10 * second) == .inserted)
    }
    #expect(told.sorted() == [0, 1])
    #expect(origin.invalidationsQueued == 2)

    // Republishing an old version or with another key is refused at the origin.
    #expect(throws: NameRecordError(.staleVersion, "")) { try origin.publish(v1, now: 11 * second) }
    #expect(throws: NameRecordError(.wrongOwner, "")) {
        try origin.publish(try NameRecord.sign(name: "site", content: content(9), version: 7, ttlSeconds: 30, owner: P256.Signing.PrivateKey()), now: 11 * second)
    }

    // Subscriptions lapse after the TTL; a gone peer is forgotten.
    origin.handlePeerGone(0)
    #expect(origin.holders(of: "site", now: 12 * second) == [1])
    #expect(origin.holders(of: "site", now: 100 * second) == [])
    _ = try origin.publish(name: "site", content: content(3), ttlSeconds: 30, owner: owner, now: 100 * second)
    #expect(origin.pollTransmit() == nil)
}

@Test func aRelayForwardsOnlyNewerInvalidationsToItsHolders() throws {
    // origin → edge1 → {edge2, edge3}: edge1 relays what its upstream tells it.
    let owner = P256.Signing.PrivateKey()
    var relay = Subscriptions<Int>(grace: 0)
    let v1 = try NameRecord.sign(name: "site", content: content(1), version: 1, ttlSeconds: 30, owner: owner)
    let v3 = try NameRecord.sign(name: "site", content: content(3), version: 3, ttlSeconds: 30, owner: owner)
    relay.handleRelaySubscribe(peer: 2, record: v1, now: second)
    relay.handleRelaySubscribe(peer: 3, record: v1, now: second)
    #expect(relay.record(for: "site") == nil)  // a relay owns no records
    #expect(Set(relay.holders(of: "site", now: 2 * second)) == [2, 3])

    // v2 announced: both holders are told, once.
    #expect(relay.handleInvalidation(try NameInvalidation(name: "site", version: 2), now: 5 * second) == 2)
    var told: [Int] = []
    while let (peer, invalidation) = relay.pollTransmit() {
        told.append(peer)
        #expect(invalidation.version == 2)
    }
    #expect(told.sorted() == [2, 3])
    // The same invalidation again (a duplicate, or one that came round a loop) and an older one: nothing.
    #expect(relay.handleInvalidation(try NameInvalidation(name: "site", version: 2), now: 6 * second) == 0)
    #expect(relay.handleInvalidation(try NameInvalidation(name: "site", version: 1), now: 6 * second) == 0)
    #expect(relay.pollTransmit() == nil)

    // Edge 3 fetched v3 meanwhile: a late v3 announcement goes to edge 2 only.
    relay.handleRelaySubscribe(peer: 3, record: v3, now: 7 * second)
    #expect(relay.handleInvalidation(try NameInvalidation(name: "site", version: 3), now: 8 * second) == 1)
    #expect(relay.pollTransmit()?.peer == 2)
    #expect(relay.pollTransmit() == nil)
    // Subscriptions lapse with the TTL: nobody left to tell.
    #expect(relay.handleInvalidation(try NameInvalidation(name: "site", version: 4), now: 100 * second) == 0)
    #expect(relay.holders(of: "site", now: 100 * second).isEmpty)
}

@Test func twoRelaysSubscribedToEachOtherDoNotCirculateAnInvalidation() throws {
    // A misconfigured loop: a is b's upstream and b is a's. One announcement crosses each link
    // once and stops, because each side remembers the version it told the other.
    let owner = P256.Signing.PrivateKey()
    let v1 = try NameRecord.sign(name: "site", content: content(1), version: 1, ttlSeconds: 30, owner: owner)
    var relays = [Subscriptions<Int>(grace: 0), Subscriptions<Int>(grace: 0)]
    relays[0].handleRelaySubscribe(peer: 1, record: v1, now: 0)
    relays[1].handleRelaySubscribe(peer: 0, record: v1, now: 0)
    var inbox: [(to: Int, invalidation: NameInvalidation)] = [(0, try NameInvalidation(name: "site", version: 2))]
    var deliveries = 0
    while let (to, invalidation) = inbox.first, deliveries < 100 {
        inbox.removeFirst()
        deliveries += 1
        relays[to].handleInvalidation(invalidation, now: second)
        while let (peer, next) = relays[to].pollTransmit() { inbox.append((peer, next)) }
    }
    #expect(deliveries == 3)  // the announcement, a → b, b → a; then quiet
}

/// A signed record whose version field holds `version`, whatever its value: the bytes a hostile
/// publisher can make (``NameRecord/sign`` refuses versions above ``NameRecord/maxVersion``).
func selfSignedRecordBytes(name: String, content: ContentID, version: UInt64, owner: P256.Signing.PrivateKey) throws -> [UInt8] {
    let body = NameRecord.encodeBody(name: name, content: content, version: version, ttlSeconds: 60, ownerKey: Array(owner.publicKey.x963Representation))
    return body + Array(try owner.signature(for: NameRecord.domain + body).rawRepresentation)
}

// Peer input: versions travel as QUIC varints (INVALIDATE, NAME_PUBLISHED), so a record above
// 2^62 − 1 is refused where it enters, before anything stores it or tries to announce it.
@Test func versionsAboveTheVarintRangeAreRefusedWhereTheyEnter() throws {
    let owner = P256.Signing.PrivateKey()
    #expect(NameRecord.maxVersion == (1 << 62) - 1)
    for version: UInt64 in [1 << 62, (1 << 62) + 1, 1 << 63, .max] {
        let bytes = try selfSignedRecordBytes(name: "big", content: content(1), version: version, owner: owner)
        #expect(throws: NameRecordError(.malformed, "")) { try NameRecord.decode(bytes) }
        #expect(throws: NameRecordError(.malformed, "")) { try NameRecord.sign(name: "big", content: content(1), version: version, ttlSeconds: 60, owner: owner) }
        #expect(throws: NameRecordError(.malformed, "")) { try NameInvalidation(name: "big", version: version) }
        var invalidation = try NameInvalidation(name: "big", version: 1).encode()
        invalidation.replaceSubrange(invalidation.count - 8 ..< invalidation.count, with: (0 ..< 8).map { UInt8(truncatingIfNeeded: version >> (56 - 8 * $0)) })
        #expect(throws: NameRecordError(.malformed, "")) { try NameInvalidation.decode(invalidation) }
        NameRecord.fuzz(bytes)  // never traps
    }
    // The bound itself is a valid version, and the origin's next version after it is refused, not wrapped.
    let top = try NameRecord.sign(name: "big", content: content(1), version: NameRecord.maxVersion, ttlSeconds: 60, owner: owner)
    #expect(try NameRecord.decode(top.encode()) == top)
    var origin = Subscriptions<Int>(grace: 0)
    try origin.publish(top, now: 0)
    #expect(throws: NameRecordError(.staleVersion, "")) { try origin.publish(name: "big", content: content(2), ttlSeconds: 60, owner: owner, now: 0) }
    #expect(origin.record(for: "big") == top)
}
