import Crypto
import Foundation
import Testing
@testable import STOQEdge

/// Owned names (issue 15 item 5): the binding entry's codec, and who owns a name when keys race,
/// hand names over, and the log and a node's first sight disagree.
@Suite("Owned names")
struct NameOwnershipTests {
    let alice = P256.Signing.PrivateKey()
    let bob = P256.Signing.PrivateKey()
    let logKey = P256.Signing.PrivateKey()
    var a: [UInt8] { Array(alice.publicKey.x963Representation) }
    var b: [UInt8] { Array(bob.publicKey.x963Representation) }

    @Test("a binding round-trips, verifies, and any damage is refused")
    func codec() throws {
        let claim = try NameOwnerBinding.claim("shop.example", owner: alice, now: 1_700_000_000_000)
        let bytes = claim.encode()
        #expect(bytes.count == 6 + 12 + 65 + 65 + 8 + 64)
        let decoded = try NameOwnerBinding.decode(bytes)
        #expect(decoded == claim && decoded.hasValidSignature)
        var damaged = bytes
        damaged[10] ^= 1
        #expect((try? NameOwnerBinding.decode(damaged))?.hasValidSignature != true)
        #expect(throws: NameRecordError.self) { try NameOwnerBinding.decode(Array(bytes.dropLast())) }
        #expect(throws: NameRecordError.self) { try NameOwnerBinding.decode(bytes + [0]) }
        #expect(throws: NameRecordError.self) { try NameOwnerBinding.decode([0x30, 0x82]) }
        // A claim must be signed by the key it binds.
        let stolen = try NameOwnerBinding.transfer("shop.example", from: bob, to: a, now: 1)
        var forged = stolen.encode()
        forged[4] = NameOwnerBinding.Kind.claim.rawValue
        #expect(try NameOwnerBinding.decode(forged).hasValidSignature == false)
        for cut in 0..<bytes.count { NameOwnerBinding.fuzz(Array(bytes.prefix(cut))) }
    }

    @Test("first sight binds; another key is refused with a clear message; the owner updates")
    func firstSight() throws {
        var o = NameOwnership()
        let bound = try o.admit("site", key: a, now: 1)
        let again = try o.admit("site", key: a, now: 2)
        #expect(bound && !again)
        do {
            try o.check("site", key: b)
            Issue.record("bob took alice's name")
        } catch {
            #expect((error as? NameRecordError)?.code == .wrongOwner)
            #expect("\(error)".contains("owned by another key"))
        }
        // Persisted form round-trips.
        let saved = try JSONDecoder().decode(NameOwnership.self, from: JSONEncoder().encode(o))
        #expect(saved == o)
    }

    @Test("the log's order decides a race; transfers need the owner, recoveries the log key")
    func logOrder() throws {
        var o = NameOwnership()
        try o.admit("race", key: a, now: 1)  // alice published first on this node…
        let bobClaim = try NameOwnerBinding.claim("race", owner: bob, now: 2)
        let aliceClaim = try NameOwnerBinding.claim("race", owner: alice, now: 3)
        let changed0 = o.apply(bobClaim, index: 0, logKey: nil, now: 4)  // …but bob's claim was logged first
        #expect(changed0)
        let changed1 = o.apply(aliceClaim, index: 1, logKey: nil, now: 5)
        #expect(!changed1)
        #expect(o.owner(of: "race")?.key == b && o.owner(of: "race")?.logIndex == 0)
        #expect(throws: NameRecordError.self) { try o.check("race", key: a) }
        // Alice cannot hand bob's name to herself; bob can.
        let changed2 = o.apply(try .transfer("race", from: alice, to: a, now: 6), index: 2, logKey: nil, now: 6)
        #expect(!changed2)
        let changed3 = o.apply(try .transfer("race", from: bob, to: a, now: 7), index: 3, logKey: nil, now: 7)
        #expect(changed3)
        #expect(o.owner(of: "race")?.key == a)
        // Alice loses her key: only the log operator recovers the name.
        let logX963 = Array(logKey.publicKey.x963Representation)
        let changed4 = o.apply(try .recovery("race", logKey: bob, to: b, now: 8), index: 4, logKey: logX963, now: 8)
        #expect(!changed4)
        let changed5 = o.apply(try .recovery("race", logKey: logKey, to: b, now: 9), index: 5, logKey: logX963, now: 9)
        #expect(changed5)
        #expect(o.owner(of: "race")?.key == b && o.logCursor == 6)
    }

    @Test("the store keeps bindings across a restart and reads new log entries")
    func store() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("owners-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = NameOwnershipStore(path: path)
        try first.admit("kept", key: a, now: 1)
        let reopened = NameOwnershipStore(path: path)
        #expect(throws: NameRecordError.self) { try reopened.admit("kept", key: b, now: 2) }
        let entry = try NameOwnerBinding.claim("logged", owner: bob, now: 3).encode()
        reopened.attachLog(reader: { from in from == 0 ? [(UInt64(0), entry)] : [] }, logKey: Array(logKey.publicKey.x963Representation))
        #expect(throws: NameRecordError.self) { try reopened.admit("logged", key: a, now: 4) }
        #expect(reopened.owner(of: "logged", now: 5)?.logIndex == 0)
    }
}
