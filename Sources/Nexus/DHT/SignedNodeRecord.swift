import Crypto
import STOQEdge
import STOQIdentity

/// A node record published in the DHT, signed by the node's own key, so anyone can find a node's
/// current addresses by its id and nobody else can publish them.
///
/// Self-certifying: the record carries the node's P-256 public key (SubjectPublicKeyInfo DER);
/// the node id is SHA-256 of that key (as in STOQIdentity), so a valid signature under a key whose
/// hash is the id proves the node itself signed. Stored under ``key(for:)``; a newer `issuedAt`
/// replaces an older one.
///
/// Wire form: `"SNN" | 1 | NodeRecord | issuedAt u64 | ttl u32 | location (0, or 1 + latitude and
/// longitude as i32 micro-degrees) | u16 SPKI | signature (64 raw)`.
public struct SignedNodeRecord: Hashable, Sendable {
    /// The record.
    public var record: NodeRecord
    /// When it was signed (ms since 1970).
    public var issuedAt: UInt64
    /// Lifetime (s).
    public var ttl: UInt32
    /// Where the node is (from its configuration), for geographic fallback in service selection.
    public var location: GeoLocation?
    /// The node's P-256 public key, SubjectPublicKeyInfo DER.
    public var publicKey: [UInt8]
    /// ECDSA P-256 signature (raw r‖s) over ``signedBytes``.
    public var signature: [UInt8]

    static let magic: [UInt8] = [0x53, 0x4E, 0x4E] // "SNN"
    /// The largest encoding.
    public static let maxEncodedSize = 1024

    /// The DHT key a node's record lives under.
    public static func key(for id: NexusID) -> NexusID {
        NexusHash.sha256(Array("stoq-node:".utf8) + id.bytes)
    }

    /// When it expires (ms since 1970).
    public var expiresAt: UInt64 { issuedAt &+ UInt64(ttl) * 1000 }

    /// Signs `record` with the node's key.
    /// - Throws: `.ownerMismatch` when the key is not the one the record's id names.
    public static func sign(_ record: NodeRecord, location: GeoLocation? = nil, issuedAt: UInt64, ttl: UInt32, key: P256.Signing.PrivateKey) throws(NexusError) -> SignedNodeRecord {
        try sign(record, location: location, issuedAt: issuedAt, ttl: ttl, signer: SoftwareSigner(key))
    }

    /// Signs `record` with the node's key, in memory or in a token (`TokenKey`).
    /// - Throws: `.ownerMismatch` when the key is not the one the record's id names.
    public static func sign(_ record: NodeRecord, location: GeoLocation? = nil, issuedAt: UInt64, ttl: UInt32, signer: any CertificateSigner) throws(NexusError) -> SignedNodeRecord {
        guard let publicKey = signer.p256PublicKey else {
            throw NexusError(.ownerMismatch, "the node key is not a P-256 key; node records are signed with P-256")
        }
        let spki = Array(publicKey.derRepresentation)
        guard NexusHash.sha256(spki) == record.id else {
            throw NexusError(.ownerMismatch, "the key does not belong to node \(record.id.shortHex); sign with the node's own TLS key")
        }
        var s = SignedNodeRecord(record: record, issuedAt: issuedAt, ttl: ttl, location: location.map(Self.quantized), publicKey: spki, signature: [])
        do { s.signature = Array(try signer.p256Signature(for: s.signedBytes).rawRepresentation) } catch {
            throw NexusError(.badSignature, "could not sign the node record: \(error)")
        }
        return s
    }

    /// The signed bytes: the encoding without the signature.
    public var signedBytes: [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.raw(Self.magic); w.u8(1)
        record.encode(&w)
        w.u64(issuedAt); w.u32(ttl)
        if let location {
            w.u8(1)
            w.u32(UInt32(bitPattern: Int32(location.latitude * 1e6)))
            w.u32(UInt32(bitPattern: Int32(location.longitude * 1e6)))
        } else {
            w.u8(0)
        }
        w.medium(publicKey)
        return w.bytes
    }

    /// The canonical encoding.
    public func encode() -> [UInt8] { signedBytes + signature }

    /// True if `bytes` start like a signed node record.
    public static func looksLikeOne(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

    /// Decodes (structure only; ``verify(now:)`` checks it). Safe on arbitrary bytes.
    public static func decode(_ bytes: [UInt8]) throws(NexusError) -> SignedNodeRecord {
        guard bytes.count <= maxEncodedSize else { throw NexusError(.lengthLimitExceeded, "node record is \(bytes.count) bytes; at most \(maxEncodedSize)") }
        var r = ByteReader(bytes)
        guard try r.raw(3, "magic") == magic else { throw NexusError(.malformedInput, "not a signed node record (bad magic)") }
        let v = try r.u8("format")
        guard v == 1 else { throw NexusError(.unsupportedVersion, "node record format \(v) is not supported") }
        let record = try NodeRecord.decode(&r)
        let issuedAt = try r.u64("issued at"), ttl = try r.u32("ttl")
        var location: GeoLocation?
        switch try r.u8("location flag") {
        case 0: break
        case 1:
            let lat = Double(Int32(bitPattern: try r.u32("latitude"))) / 1e6, lon = Double(Int32(bitPattern: try r.u32("longitude"))) / 1e6
            guard (-90...90).contains(lat), (-180...180).contains(lon) else { throw NexusError(.malformedInput, "node location \(lat), \(lon) is off the globe") }
            location = GeoLocation(latitude: lat, longitude: lon)
        case let f: throw NexusError(.malformedInput, "location flag must be 0 or 1, not \(f)")
        }
        let key = try r.medium(max: 256, "public key")
        let signature = try r.raw(64, "signature")
        try r.expectEnd("node record")
        return SignedNodeRecord(record: record, issuedAt: issuedAt, ttl: ttl, location: location, publicKey: key, signature: signature)
    }

    /// The location as it travels (micro-degree precision), so encoding round-trips exactly.
    static func quantized(_ l: GeoLocation) -> GeoLocation {
        GeoLocation(latitude: Double(Int32(max(-90, min(90, l.latitude)) * 1e6)) / 1e6,
                    longitude: Double(Int32(max(-180, min(180, l.longitude)) * 1e6)) / 1e6)
    }

    /// Fuzz entry point: never traps; what decodes re-encodes identically.
    public static func fuzz(_ data: [UInt8]) {
        if let r = try? decode(data) { precondition(r.encode() == data, "node record encoding is not canonical") }
    }

    /// Checks that the key is the node's (its hash is the id), the signature and the lifetime.
    /// - Throws: `.forgedRecord`, `.expiredRecord`, `.staleRecord`.
    public func verify(now: UInt64) throws(NexusError) {
        guard NexusHash.sha256(publicKey) == record.id, let key = try? P256.Signing.PublicKey(derRepresentation: publicKey) else {
            throw NexusError(.forgedRecord, "node record for \(record.id.shortHex) carries a key that is not that node's: refuse it")
        }
        guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature), key.isValidSignature(sig, for: signedBytes) else {
            throw NexusError(.forgedRecord, "node record for \(record.id.shortHex) is not signed by that node: refuse it")
        }
        guard now < expiresAt else {
            throw NexusError(.expiredRecord, "node record for \(record.id.shortHex) expired \((now - expiresAt) / 1000) s ago")
        }
        guard issuedAt <= now &+ NameRecord.maxClockSkew else {
            throw NexusError(.staleRecord, "node record for \(record.id.shortHex) claims to be issued in the future; check clocks")
        }
    }
}

/// What a Nexus node stores for the network: signed name records under their name's key and
/// signed node records under ``SignedNodeRecord/key(for:)``; anything else is refused.
public struct NexusRecordValidator: DHTRecordValidator {
    /// Owned names (see ``NameRecordValidator/ownership``); nil: only the held record binds.
    public let ownership: NameOwnershipStore?
    /// Creates the validator.
    public init(ownership: NameOwnershipStore? = nil) { self.ownership = ownership }

    /// True for a valid, unexpired signed record stored under its own key.
    public func validate(key: NexusID, value: [UInt8], now: UInt64) -> Bool {
        if SignedNodeRecord.looksLikeOne(value) {
            guard let r = try? SignedNodeRecord.decode(value), SignedNodeRecord.key(for: r.record.id) == key,
                  (try? r.verify(now: now)) != nil else { return false }
            return true
        }
        return NameRecordValidator(ownership: ownership).validate(key: key, value: value, now: now)
    }

    /// Node records: a later signature by the same node; names: a higher version by the same owner.
    public func shouldReplace(existing: [UInt8], with incoming: [UInt8]) -> Bool {
        if SignedNodeRecord.looksLikeOne(existing) || SignedNodeRecord.looksLikeOne(incoming) {
            guard let a = try? SignedNodeRecord.decode(existing), let b = try? SignedNodeRecord.decode(incoming) else { return false }
            return a.record.id == b.record.id && b.issuedAt > a.issuedAt
        }
        return NameRecordValidator().shouldReplace(existing: existing, with: incoming)
    }
}
