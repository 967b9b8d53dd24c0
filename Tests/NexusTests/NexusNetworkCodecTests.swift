import Crypto
import STOQSimulation
import Testing
@testable import Nexus

/// Codecs added for the network: DHT request envelopes, signed node records, relay requests.
@Suite struct NexusNetworkCodecTests {
    /// Flips a few bytes and maybe truncates.
    static func mangle(_ bytes: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = bytes
        if !b.isEmpty {
            for _ in 0..<(1 + rng.next() % 3) { b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: 1 + rng.next() % 255) }
        }
        if rng.next() % 2 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1)))) }
        return b
    }

    @Test(arguments: [91 as UInt64, 92])
    func envelopesRoundTripAndGarbageNeverTraps(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<2_000 {
            let e = DHTRequestEnvelope(sender: randomRecord(&rng), message: randomMessage(&rng))
            #expect(try DHTRequestEnvelope.decode(e.encode()) == e, "seed \(seed)")
            let bad = Self.mangle(e.encode(), &rng)
            DHTRequestEnvelope.fuzz(bad)
            DHTRequestEnvelope.fuzz((0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
    }

    @Test(arguments: [93 as UInt64])
    func signedNodeRecordsVerifyAndRefuseForgeries(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let key = P256.Signing.PrivateKey()
        let id = NexusHash.sha256(key.publicKey.derRepresentation)
        let record = NodeRecord(id: id, addresses: [try NexusAddress(parsing: "[fd00::7]:4433")], region: "eu", certificateFingerprint: randomHash(&rng))
        let signed = try SignedNodeRecord.sign(record, location: GeoLocation(latitude: 48.85, longitude: 2.35), issuedAt: 1_000, ttl: 60, key: key)
        let decoded = try SignedNodeRecord.decode(signed.encode())
        #expect(decoded == signed)
        try decoded.verify(now: 2_000)
        let validator = NexusRecordValidator()
        #expect(validator.validate(key: SignedNodeRecord.key(for: id), value: signed.encode(), now: 2_000))
        #expect(!validator.validate(key: id, value: signed.encode(), now: 2_000))  // wrong key
        #expect(!validator.validate(key: SignedNodeRecord.key(for: id), value: signed.encode(), now: 61_001))  // expired
        // Someone else's key cannot sign for this id, nor can the addresses be changed.
        #expect(throws: NexusError.self) { try SignedNodeRecord.sign(record, issuedAt: 1_000, ttl: 60, key: P256.Signing.PrivateKey()) }
        var moved = signed
        moved.record.addresses = [try NexusAddress(parsing: "[fd00::66]:4433")]
        let e = #expect(throws: NexusError.self) { try moved.verify(now: 2_000) }
        #expect(e?.code == .forgedRecord)
        // A newer signature replaces an older one; not the other way round.
        let newer = try SignedNodeRecord.sign(record, issuedAt: 5_000, ttl: 60, key: key)
        #expect(validator.shouldReplace(existing: signed.encode(), with: newer.encode()))
        #expect(!validator.shouldReplace(existing: newer.encode(), with: signed.encode()))
        for _ in 0..<3_000 {
            SignedNodeRecord.fuzz(Self.mangle(signed.encode(), &rng))
            _ = validator.validate(key: SignedNodeRecord.key(for: id), value: Self.mangle(signed.encode(), &rng), now: 2_000)
        }
    }
}
