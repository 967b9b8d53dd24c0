import Crypto
import Testing
@testable import Nexus
import STOQSimulation

@Suite struct NameRecordTests {
    let owner = P256.Signing.PrivateKey()
    let t0: UInt64 = 1_700_000_000_000

    func record(_ name: String = "video.example", version: UInt64, ttl: UInt32 = 3600, at: UInt64? = nil, key: P256.Signing.PrivateKey? = nil, value: NameValue? = nil) throws -> NameRecord {
        try NameRecord.sign(name: try NexusName(name), value: value ?? .content(NexusHash.sha256([UInt8(version)])), version: version,
                            issuedAt: at ?? t0, ttl: ttl, owner: key ?? owner)
    }

    @Test func namesAreValidated() throws {
        #expect(try NexusName("Video.Example").text == "video.example")
        for bad in ["", "a..b", "-a.b", "a-.b", "under_score", "dot.", String(repeating: "a", count: 64), "héllo", "sp ace",
                    String(repeating: "abcdefgh.", count: 30)] {
            let e = #expect(throws: NexusError.self, "\(bad)") { try NexusName(bad) }
            #expect(e?.code == .invalidName)
        }
    }

    @Test func roundTripAndVerify() throws {
        let eps = [ServiceEndpoint(nodeID: .sha256([1]), addresses: [try NexusAddress(parsing: "[fd00::1]:4433"), try NexusAddress(parsing: "[2001:db8::5]:443")]),
                   ServiceEndpoint(nodeID: .sha256([2]))]
        for r in [try record(version: 1), try record("api.svc", version: 7, value: .service(eps))] {
            let bytes = r.encode()
            let back = try NameRecord.decode(bytes)
            #expect(back == r)
            try back.verify(now: t0 + 1)
        }
    }

    @Test func higherVersionWinsStaleForgedAndExpiredRefused() throws {
        var store = NameRecordStore()
        let v2 = try record(version: 2)
        #expect(try store.offer(v2, now: t0) == .accepted)
        #expect(try store.offer(v2, now: t0) == .unchanged)
        #expect(try store.offer(try record(version: 3), now: t0) == .accepted)
        #expect(store.record(for: try NexusName("video.example"), now: t0)?.version == 3)
        #expect(#expect(throws: NexusError.self) { try store.offer(try record(version: 1), now: t0) }?.code == .staleRecord)
        #expect(#expect(throws: NexusError.self) { try store.offer(try record(version: 3, value: .content(.zero)), now: t0) }?.code == .recordConflict)
        // Another key cannot take over the name.
        #expect(#expect(throws: NexusError.self) { try store.offer(try record(version: 9, key: P256.Signing.PrivateKey()), now: t0) }?.code == .ownerMismatch)
        // Forged: value changed after signing.
        var forged = try record(version: 10)
        forged.value = .content(.zero)
        #expect(#expect(throws: NexusError.self) { try store.offer(forged, now: t0) }?.code == .forgedRecord)
        // Signature by another key with the owner's key embedded.
        var swapped = try record(version: 11, key: P256.Signing.PrivateKey())
        swapped.ownerKey = Array(owner.publicKey.x963Representation)
        #expect(#expect(throws: NexusError.self) { try store.offer(swapped, now: t0) }?.code == .forgedRecord)
        // Expired.
        let old = try record(version: 12, ttl: 10, at: t0 - 20_000)
        #expect(#expect(throws: NexusError.self) { try store.offer(old, now: t0) }?.code == .expiredRecord)
        // After expiry the held record no longer blocks.
        #expect(store.expire(now: t0 + 3_601_000) == 1)
    }

    @Test(arguments: [21 as UInt64, 22, 23])
    func seededGarbageAndMutationsNeverTrap(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let good = try record(version: 5).encode()
        for i in 0..<3_000 {
            var bytes: [UInt8]
            switch i % 3 {
            case 0: bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1:
                bytes = good
                for _ in 0..<(1 + rng.next() % 4) { bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: 1 + rng.next() % 255) }
            default: bytes = Array(good.prefix(Int(rng.next() % UInt64(good.count))))
            }
            NameRecord.fuzz(bytes)
            if i % 3 == 1, let r = try? NameRecord.decode(bytes) {
                // A mutated record may still parse but must not verify as the owner's.
                #expect((try? r.verify(now: t0)) == nil || r.encode() == good, "seed \(seed) iteration \(i)")
            }
        }
    }

    @Test func addressesAreIPv6Only() throws {
        #expect(try NexusAddress(parsing: "[fd00::1]:4433").description == "[fd00::1]:4433")
        #expect(try NexusAddress(parsing: "::1").description == "[::1]:0")
        #expect(try NexusAddress(parsing: "[2001:db8:0:0:1:0:0:1]:1").description == "[2001:db8::1:0:0:1]:1")
        for bad in ["10.0.0.1", "[::ffff:10.0.0.1]:1", "[::ffff:a00:1]:1", "fd00::1::2", "fd00:zz::1", "[fd00::1]:99999"] {
            #expect(throws: NexusError.self, "\(bad)") { try NexusAddress(parsing: bad) }
        }
    }
}
