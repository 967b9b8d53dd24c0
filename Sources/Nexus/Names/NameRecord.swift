import Crypto

/// One node that serves a named service: its id and where to reach it.
public struct ServiceEndpoint: Hashable, Sendable {
    /// The node's id (SHA-256 of its public key).
    public var nodeID: NexusID
    /// Up to ``NameRecord/maxAddressesPerEndpoint`` IPv6 socket addresses.
    public var addresses: [NexusAddress]

    /// Creates an endpoint.
    public init(nodeID: NexusID, addresses: [NexusAddress] = []) { self.nodeID = nodeID; self.addresses = addresses }
}

/// What a name points at.
public enum NameValue: Hashable, Sendable {
    /// An immutable content id (the SHA-256 of a manifest).
    case content(NexusHash)
    /// The set of nodes that serve a service (anycast).
    case service([ServiceEndpoint])
}

/// A signed, versioned, expiring name record (DNS-like), stored in the DHT under ``NexusName/key``.
///
/// The owner signs the canonical encoding (everything but the signature) with P-256 ECDSA. A
/// holder accepts a record only if the signature verifies under the embedded owner key, the record
/// has not expired, and its version is higher than what it holds (see ``NameRecordStore``).
///
/// Encoding (all integers big-endian):
/// ```
/// "SNR" 0x01 | name: u8 len + bytes | value tag u8 (1 content: 32 bytes; 2 service: u8 count,
/// each: 32-byte node id, u8 address count, each 16-byte address + u16 port) | version u64 |
/// issuedAt u64 (ms) | ttl u32 (s) | owner key: 65-byte X9.63 | signature: 64-byte raw (r||s)
/// ```
public struct NameRecord: Hashable, Sendable {
    /// The name.
    public var name: NexusName
    /// What it points at.
    public var value: NameValue
    /// Monotonic version chosen by the owner; the highest valid version wins.
    public var version: UInt64
    /// When the owner signed it (ms since 1970).
    public var issuedAt: UInt64
    /// Lifetime in seconds from ``issuedAt``.
    public var ttl: UInt32
    /// The owner's P-256 public key, X9.63 uncompressed (65 bytes).
    public var ownerKey: [UInt8]
    /// Raw (r‖s) ECDSA signature over ``signedBytes``.
    public var signature: [UInt8]

    /// The largest encoding accepted by ``decode(_:)``.
    public static let maxEncodedSize = 8 * 1024
    /// The most endpoints a service record may list.
    public static let maxEndpoints = 32
    /// The most addresses per endpoint.
    public static let maxAddressesPerEndpoint = 4
    /// The longest TTL accepted: 7 days.
    public static let maxTTL: UInt32 = 7 * 24 * 3600
    /// How far in the future `issuedAt` may be (clock skew), in ms.
    public static let maxClockSkew: UInt64 = 5 * 60 * 1000

    private static let magic: [UInt8] = [0x53, 0x4E, 0x52] // "SNR"
    private static let formatVersion: UInt8 = 1

    /// When the record expires (ms since 1970).
    public var expiresAt: UInt64 { issuedAt &+ UInt64(ttl) * 1000 }

    /// Creates and signs a record.
    /// - Parameters:
    ///   - name: the name.
    ///   - value: what it points at.
    ///   - version: the version (must exceed any earlier one).
    ///   - issuedAt: now, in ms since 1970.
    ///   - ttl: lifetime in seconds (1 … ``maxTTL``).
    ///   - owner: the owner's signing key.
    public static func sign(name: NexusName, value: NameValue, version: UInt64, issuedAt: UInt64, ttl: UInt32, owner: P256.Signing.PrivateKey) throws(NexusError) -> NameRecord {
        var r = NameRecord(name: name, value: value, version: version, issuedAt: issuedAt, ttl: ttl,
                           ownerKey: Array(owner.publicKey.x963Representation), signature: [])
        try r.checkShape()
        do { r.signature = Array(try owner.signature(for: r.signedBytes).rawRepresentation) } catch {
            throw NexusError(.badSignature, "could not sign the name record: \(error)")
        }
        return r
    }

    private func checkShape() throws(NexusError) {
        guard (1...Self.maxTTL).contains(ttl) else { throw NexusError(.lengthLimitExceeded, "TTL must be 1…\(Self.maxTTL) s; got \(ttl)") }
        if case .service(let eps) = value {
            guard eps.count <= Self.maxEndpoints else { throw NexusError(.lengthLimitExceeded, "a service record lists at most \(Self.maxEndpoints) nodes; got \(eps.count)") }
            for e in eps where e.addresses.count > Self.maxAddressesPerEndpoint {
                throw NexusError(.lengthLimitExceeded, "node \(e.nodeID.shortHex)… has \(e.addresses.count) addresses; at most \(Self.maxAddressesPerEndpoint)")
            }
        }
        guard ownerKey.count == 65 else { throw NexusError(.malformedInput, "owner key must be a 65-byte X9.63 P-256 key") }
    }

    /// The bytes the owner signs: the encoding without the signature.
    public var signedBytes: [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.raw(Self.magic); w.u8(Self.formatVersion)
        w.short(Array(name.text.utf8))
        switch value {
        case .content(let id):
            w.u8(1); w.hash(id)
        case .service(let eps):
            w.u8(2); w.u8(UInt8(eps.count))
            for e in eps {
                w.hash(e.nodeID); w.u8(UInt8(e.addresses.count))
                for a in e.addresses { a.encode(&w) }
            }
        }
        w.u64(version); w.u64(issuedAt); w.u32(ttl)
        w.raw(ownerKey)
        return w.bytes
    }

    /// The canonical encoding.
    public func encode() -> [UInt8] { signedBytes + signature }

    /// Decodes a record (structure only; call ``verify(now:)`` to check it).
    ///
    /// Safe on arbitrary bytes: every length and count is bounded and the encoding must be
    /// canonical (lower-case name, no trailing bytes).
    /// - Throws: ``NexusError`` `.malformedInput`, `.lengthLimitExceeded`, `.unsupportedVersion`, `.invalidName`.
    public static func decode(_ bytes: [UInt8]) throws(NexusError) -> NameRecord {
        guard bytes.count <= maxEncodedSize else { throw NexusError(.lengthLimitExceeded, "name record is \(bytes.count) bytes; at most \(maxEncodedSize)") }
        var r = ByteReader(bytes)
        guard try r.raw(3, "magic") == magic else { throw NexusError(.malformedInput, "not a STOQ name record (bad magic)") }
        let fv = try r.u8("format version")
        guard fv == formatVersion else { throw NexusError(.unsupportedVersion, "name record format \(fv) is not supported (this build reads \(formatVersion))") }
        let nameBytes = try r.short(max: NexusName.maxLength, "name")
        guard let nameText = String(validating: nameBytes, as: UTF8.self) else { throw NexusError(.invalidName, "name is not UTF-8") }
        let name = try NexusName(canonical: nameText)
        let value: NameValue
        switch try r.u8("value tag") {
        case 1: value = .content(try r.hash("content id"))
        case 2:
            let n = try r.count(max: maxEndpoints, "endpoints")
            var eps: [ServiceEndpoint] = []
            for _ in 0..<n {
                let id = try r.hash("node id")
                let m = try r.count(max: maxAddressesPerEndpoint, "addresses")
                var addrs: [NexusAddress] = []
                for _ in 0..<m { addrs.append(try NexusAddress.decode(&r)) }
                eps.append(ServiceEndpoint(nodeID: id, addresses: addrs))
            }
            value = .service(eps)
        case let t: throw NexusError(.malformedInput, "unknown name value type \(t)")
        }
        let version = try r.u64("version"), issuedAt = try r.u64("issued at"), ttl = try r.u32("ttl")
        let owner = try r.raw(65, "owner key")
        let sig = try r.raw(64, "signature")
        try r.expectEnd("name record")
        let rec = NameRecord(name: name, value: value, version: version, issuedAt: issuedAt, ttl: ttl, ownerKey: owner, signature: sig)
        try rec.checkShape()
        return rec
    }

    /// Fuzz entry point: decodes arbitrary bytes and, if they decode, checks that re-encoding is
    /// identical (canonical form). Never traps on any input.
    public static func fuzz(_ data: [UInt8]) {
        if let r = try? decode(data) { precondition(r.encode() == data, "name record encoding is not canonical") }
    }

    /// The owner key as a swift-crypto key.
    public func ownerPublicKey() throws(NexusError) -> P256.Signing.PublicKey {
        guard let k = try? P256.Signing.PublicKey(x963Representation: ownerKey) else {
            throw NexusError(.forgedRecord, "record for '\(name)' carries an invalid owner key")
        }
        return k
    }

    /// Checks the signature and the expiry.
    /// - Parameter now: the current time (ms since 1970).
    /// - Throws: `.forgedRecord` (bad signature or key), `.expiredRecord`, `.staleRecord` (issued in the future beyond clock skew).
    public func verify(now: UInt64) throws(NexusError) {
        let key = try ownerPublicKey()
        guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature), key.isValidSignature(sig, for: signedBytes) else {
            throw NexusError(.forgedRecord, "record for '\(name)' version \(version) is not signed by its owner key: refuse it")
        }
        guard now < expiresAt else {
            throw NexusError(.expiredRecord, "record for '\(name)' version \(version) expired \((now - expiresAt) / 1000) s ago; the owner must publish a fresh one")
        }
        guard issuedAt <= now &+ Self.maxClockSkew else {
            throw NexusError(.staleRecord, "record for '\(name)' claims to be issued \((issuedAt - now) / 1000) s in the future; check clocks")
        }
    }
}

/// Outcome of offering a record to a ``NameRecordStore``.
public enum NameRecordUpdate: Hashable, Sendable {
    /// The record was new or newer and is now held.
    case accepted
    /// The identical record is already held.
    case unchanged
}

/// The name records a node holds, with the acceptance rules (sans-IO, pass `now`).
///
/// - a record must verify (owner signature, not expired);
/// - the first valid record for a name binds the name to its owner key; later records must
///   carry the same key (`.ownerMismatch`) until the held record expires;
/// - a higher version replaces a lower one; a lower version is `.staleRecord`; the same version
///   with different content is `.recordConflict`.
public struct NameRecordStore: Sendable {
    /// Records by name.
    public private(set) var records: [NexusName: NameRecord] = [:]

    /// Creates an empty store.
    public init() {}

    /// Offers a record.
    /// - Returns: whether it was accepted or already held.
    /// - Throws: ``NexusError`` explaining why the record was refused.
    @discardableResult
    public mutating func offer(_ record: NameRecord, now: UInt64) throws(NexusError) -> NameRecordUpdate {
        try record.verify(now: now)
        if let held = records[record.name], now < held.expiresAt {
            guard held.ownerKey == record.ownerKey else {
                throw NexusError(.ownerMismatch, "'\(record.name)' is owned by another key; only its owner can update it")
            }
            if record.version < held.version {
                throw NexusError(.staleRecord, "record for '\(record.name)' has version \(record.version), older than the held version \(held.version)")
            }
            if record.version == held.version {
                if record == held { return .unchanged }
                throw NexusError(.recordConflict, "two different records for '\(record.name)' carry version \(record.version); the owner must bump the version")
            }
        }
        records[record.name] = record
        return .accepted
    }

    /// The held, unexpired record for `name`.
    public func record(for name: NexusName, now: UInt64) -> NameRecord? {
        guard let r = records[name], now < r.expiresAt else { return nil }
        return r
    }

    /// Drops expired records; returns how many were removed.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int {
        let before = records.count
        records = records.filter { now < $0.value.expiresAt }
        return before - records.count
    }
}
