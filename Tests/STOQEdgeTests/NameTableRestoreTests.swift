import Crypto
import STOQContent
import Testing
@testable import STOQEdge

/// An edge that restarts restores its names (saved by `NameDirectory` in `cached.json`): owner
/// keys, version floors and mappings, the mappings unconfirmed until the upstream is asked.
@Suite struct NameTableRestoreTests {
    static let owner = P256.Signing.PrivateKey()
    static let other = P256.Signing.PrivateKey()

    static func record(_ name: String, _ version: UInt64, owner: P256.Signing.PrivateKey = owner) throws -> NameRecord {
        try NameRecord.sign(name: name, content: ContentID(ChunkID.of([UInt8(version)])), version: version, ttlSeconds: 60, owner: owner)
    }

    @Test func aRestoredTableKnowsItsNamesButRevalidatesThem() throws {
        var before = NameTable()
        try before.registerOwner(Self.owner.publicKey, for: "site")
        try before.handleRecord(Self.record("site", 3), now: 0)
        try before.registerOwner(Self.owner.publicKey, for: "gone")
        try before.handleRecord(Self.record("gone", 2), now: 0)
        before.handleInvalidation(try NameInvalidation(name: "gone", version: 5), now: 1)
        let saved = before.saved

        var after = NameTable()
        #expect(after.restore(owners: saved.owners, floors: saved.floors, entries: saved.entries) == 1)
        // Unconfirmed: a lookup asks the upstream first; the last known record is still there.
        #expect(after.lookup("site", now: 1) == nil)
        #expect(after.lastKnown("site", now: 1)?.version == 3)
        // The owner key and the floors survive: forged, other-owner and stale records are refused.
        #expect(throws: NameRecordError.self) { try after.handleRecord(Self.record("site", 4, owner: Self.other), now: 2) }
        #expect(throws: NameRecordError.self) { try after.handleRecord(Self.record("site", 2), now: 2) }
        #expect(throws: NameRecordError.self) { try after.handleRecord(Self.record("gone", 4), now: 2) }
        #expect(try after.handleRecord(Self.record("site", 4), now: 2) != .refreshed)
        #expect(after.lookup("site", now: 3)?.version == 4)
    }

    @Test func damagedSavedStateIsDropped() throws {
        let good = try Self.record("site", 3)
        // A mapping whose owner is not the saved one, or below its floor, or under another name.
        var after = NameTable()
        let restored = after.restore(
            owners: ["site": Array(Self.other.publicKey.x963Representation), "low": Array(Self.owner.publicKey.x963Representation),
                     "bad key": [1, 2, 3]],
            floors: ["low": 9],
            entries: ["site": .init(record: good, expiresAt: 10), "low": .init(record: try Self.record("low", 3), expiresAt: 10),
                      "elsewhere": .init(record: good, expiresAt: 10)])
        #expect(restored == 0)
        #expect(after.owner(of: "bad key") == nil)
        #expect(after.count == 0)
    }
}
