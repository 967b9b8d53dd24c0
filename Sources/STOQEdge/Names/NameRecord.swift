import Crypto
import Foundation
import STOQContent

/// A signed, versioned mapping from a mutable name to an immutable content id, with a TTL.
///
/// Content ids never change; names do. The name's owner signs every version with its P-256
/// key (ECDSA over SHA-256); edges accept a record only from the owner, only if its version
/// is not older than what they hold, and forget it after `ttlSeconds`. This is STOQ's
/// edge-level coherency record; Nexus keeps its own DHT name records one layer up.
///
/// Canonical binary encoding (all integers big-endian):
/// ```
/// "STNR"  format(1)=1  nameLength(1)  name(UTF-8, 1...255)  content(32)
/// version(8, at most 2^62 − 1)  ttlSeconds(4)  ownerKey(65, X9.63 uncompressed)  signature(64, raw r||s)
/// ```
/// The signature covers the domain string `STOQ name record v1` followed by every byte
/// before the signature.
public struct NameRecord: Sendable, Equatable, CustomStringConvertible {
    /// The mutable name (UTF-8, 1 ... 255 bytes, no control characters).
    public let name: String
    /// The content the name points to.
    public let content: ContentID
    /// Higher versions replace lower ones.
    public let version: UInt64
    /// How long an edge may use the record after accepting it.
    public let ttlSeconds: UInt32
    /// The owner's public key, X9.63 uncompressed (65 bytes).
    public let ownerKey: [UInt8]
    /// Raw ECDSA P-256 signature (r || s, 64 bytes).
    public let signature: [UInt8]

    static let magic: [UInt8] = Array("STNR".utf8)
    static let format: UInt8 = 1
    static let domain: [UInt8] = Array("STOQ name record v1".utf8)
    /// Longest name in bytes.
    public static let maxNameBytes = 255
    /// Longest encoding in bytes.
    public static let maxEncodedSize = 4 + 1 + 1 + maxNameBytes + 32 + 8 + 4 + 65 + 64
    /// The highest version a record may carry: 2^62 − 1, the largest QUIC varint. The record
    /// stores 8 bytes, but `stoq/1` carries versions as varints (INVALIDATE, NAME_PUBLISHED), so a
    /// record above it could be stored and then never announced; it is refused when decoded or signed.
    public static let maxVersion: UInt64 = (1 << 62) - 1

    /// Signs a new record.
    /// - Parameters:
    ///   - name: the mutable name.
    ///   - content: the content id it points to.
    ///   - version: its version (higher wins).
    ///   - ttlSeconds: how long edges may use it.
    ///   - owner: the name owner's signing key.
    /// - Throws: ``NameRecordError`` `.invalidName` for a bad name, `.malformed` for a version above
    ///   ``maxVersion``, `.badSignature` if signing fails.
    public static func sign(name: String, content: ContentID, version: UInt64, ttlSeconds: UInt32, owner: P256.Signing.PrivateKey) throws(NameRecordError) -> NameRecord {
        try validate(name: name)
        try validate(version: version, of: name)
        let key = Array(owner.publicKey.x963Representation)
        let body = encodeBody(name: name, content: content, version: version, ttlSeconds: ttlSeconds, ownerKey: key)
        let signature: P256.Signing.ECDSASignature
        do {
            signature = try owner.signature(for: domain + body)
        } catch {
            throw NameRecordError(.badSignature, "could not sign the record for '\(name)': \(error)")
        }
        return NameRecord(name: name, content: content, version: version, ttlSeconds: ttlSeconds, ownerKey: key, signature: Array(signature.rawRepresentation))
    }

    private init(name: String, content: ContentID, version: UInt64, ttlSeconds: UInt32, ownerKey: [UInt8], signature: [UInt8]) {
        self.name = name
        self.content = content
        self.version = version
        self.ttlSeconds = ttlSeconds
        self.ownerKey = ownerKey
        self.signature = signature
    }

    /// Whether the signature verifies under ``ownerKey``.
    public var hasValidSignature: Bool {
        guard let key = try? P256.Signing.PublicKey(x963Representation: ownerKey),
              let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
        return key.isValidSignature(sig, for: Self.domain + body)
    }

    /// Whether the record is signed by `key`'s holder (owner match and valid signature).
    public func isSigned(by key: P256.Signing.PublicKey) -> Bool {
        Array(key.x963Representation) == ownerKey && hasValidSignature
    }

    /// The signed bytes (everything before the signature).
    var body: [UInt8] { Self.encodeBody(name: name, content: content, version: version, ttlSeconds: ttlSeconds, ownerKey: ownerKey) }

    /// The canonical encoding.
    public func encode() -> [UInt8] { body + signature }

    /// Decodes a canonical encoding. Safe on arbitrary bytes: every length is bounded, trailing
    /// bytes and non-canonical forms are refused. Does not check the signature (see ``hasValidSignature``).
    /// - Parameter bytes: the encoding.
    /// - Throws: ``NameRecordError`` `.malformed` or `.invalidName`.
    public static func decode<C: Collection>(_ bytes: C) throws(NameRecordError) -> NameRecord where C.Element == UInt8 {
        guard bytes.count <= maxEncodedSize else { throw NameRecordError(.malformed, "a name record is at most \(maxEncodedSize) bytes, got \(bytes.count)") }
        var reader = ByteReader(Array(bytes))
        guard reader.take(4) == magic else { throw NameRecordError(.malformed, "not a STOQ name record (bad magic)") }
        guard reader.byte() == format else { throw NameRecordError(.malformed, "unknown name record format (expected \(format)); upgrade this node") }
        let name = try reader.name()
        guard let contentBytes = reader.take(32), let manifest = ChunkID(bytes: contentBytes),
              let version = reader.uint64(), let ttl = reader.uint32(), let key = reader.take(65), let signature = reader.take(64) else {
            throw NameRecordError(.malformed, "truncated name record for '\(name)'")
        }
        guard reader.isAtEnd else { throw NameRecordError(.malformed, "trailing bytes after the name record for '\(name)'") }
        try validate(version: version, of: name)
        guard (try? P256.Signing.PublicKey(x963Representation: key)) != nil else {
            throw NameRecordError(.malformed, "the owner key of '\(name)' is not a P-256 point")
        }
        return NameRecord(name: name, content: ContentID(manifest), version: version, ttlSeconds: ttl, ownerKey: key, signature: signature)
    }

    /// Fuzz entry point for a libFuzzer harness: decodes arbitrary bytes, and for what decodes,
    /// checks that the encoding round-trips and verification does not crash.
    /// - Parameter data: arbitrary bytes.
    public static func fuzz(_ data: [UInt8]) {
        if let record = try? decode(data) {
            precondition(record.encode() == data, "NameRecord: decode/encode is not canonical")
            _ = record.hasValidSignature
        }
        if let invalidation = try? NameInvalidation.decode(data) {
            precondition(invalidation.encode() == data, "NameInvalidation: decode/encode is not canonical")
        }
    }

    /// Checks a name: 1 ... 255 UTF-8 bytes, no control characters.
    /// - Throws: ``NameRecordError`` `.invalidName`.
    public static func validate(name: String) throws(NameRecordError) {
        let utf8 = Array(name.utf8)
        guard !utf8.isEmpty, utf8.count <= maxNameBytes else {
            throw NameRecordError(.invalidName, "a name is 1 ... \(maxNameBytes) bytes of UTF-8, got \(utf8.count) bytes")
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw NameRecordError(.invalidName, "the name contains control characters; use printable text")
        }
    }

    /// Checks a version: at most ``maxVersion``.
    /// - Throws: ``NameRecordError`` `.malformed`.
    public static func validate(version: UInt64, of name: String) throws(NameRecordError) {
        guard version <= maxVersion else {
            throw NameRecordError(.malformed, "'\(name)' v\(version) is above the highest version a name may have (2^62 − 1 = \(maxVersion)); publish a lower version")
        }
    }

    static func encodeBody(name: String, content: ContentID, version: UInt64, ttlSeconds: UInt32, ownerKey: [UInt8]) -> [UInt8] {
        var out = magic
        out.reserveCapacity(maxEncodedSize)
        out.append(format)
        let utf8 = Array(name.utf8)
        out.append(UInt8(utf8.count))
        out += utf8
        out += content.manifest.bytes
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: version >> UInt64(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: ttlSeconds >> UInt32(shift))) }
        out += ownerKey
        return out
    }

    /// `name → content (vN, ttl)`.
    public var description: String { "\(name) → \(content) (v\(version), ttl \(ttlSeconds) s)" }
}

/// The origin's message to an edge: the name now has version `version`; drop any older mapping.
///
/// Unsigned: it can only make an edge forget (and re-fetch a signed record), so the runtime
/// accepts it only on an authenticated connection from the origin. Encoding:
/// `"STNI" format(1)=1 nameLength(1) name version(8)`.
public struct NameInvalidation: Sendable, Hashable, CustomStringConvertible {
    /// The name that changed.
    public let name: String
    /// The version now current at the origin.
    public let version: UInt64

    static let magic: [UInt8] = Array("STNI".utf8)

    /// Creates an invalidation.
    /// - Throws: ``NameRecordError`` `.invalidName`, or `.malformed` for a version above ``NameRecord/maxVersion``.
    public init(name: String, version: UInt64) throws(NameRecordError) {
        try NameRecord.validate(name: name)
        try NameRecord.validate(version: version, of: name)
        self.name = name
        self.version = version
    }

    /// The canonical encoding.
    public func encode() -> [UInt8] {
        var out = Self.magic
        out.append(NameRecord.format)
        let utf8 = Array(name.utf8)
        out.append(UInt8(utf8.count))
        out += utf8
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: version >> UInt64(shift))) }
        return out
    }

    /// Decodes a canonical encoding; safe on arbitrary bytes.
    /// - Throws: ``NameRecordError`` `.malformed` or `.invalidName`.
    public static func decode<C: Collection>(_ bytes: C) throws(NameRecordError) -> NameInvalidation where C.Element == UInt8 {
        guard bytes.count <= 4 + 1 + 1 + NameRecord.maxNameBytes + 8 else { throw NameRecordError(.malformed, "an invalidation is at most \(4 + 2 + NameRecord.maxNameBytes + 8) bytes") }
        var reader = ByteReader(Array(bytes))
        guard reader.take(4) == magic else { throw NameRecordError(.malformed, "not a STOQ name invalidation (bad magic)") }
        guard reader.byte() == NameRecord.format else { throw NameRecordError(.malformed, "unknown invalidation format; upgrade this node") }
        let name = try reader.name()
        guard let version = reader.uint64() else { throw NameRecordError(.malformed, "truncated invalidation for '\(name)'") }
        guard reader.isAtEnd else { throw NameRecordError(.malformed, "trailing bytes after the invalidation for '\(name)'") }
        return try NameInvalidation(name: name, version: version)
    }

    /// `invalidate name ≥ vN`.
    public var description: String { "invalidate \(name) < v\(version)" }
}

/// A bounded reader over a byte array: every read checks the remaining length.
struct ByteReader {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { position == bytes.count }

    mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, bytes.count - position >= count else { return nil }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    mutating func byte() -> UInt8? { take(1)?.first }

    mutating func uint64() -> UInt64? {
        take(8)?.reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func uint32() -> UInt32? {
        take(4)?.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// A length-prefixed (1 byte) name, validated and canonical UTF-8.
    mutating func name() throws(NameRecordError) -> String {
        guard let length = byte(), length > 0, let raw = take(Int(length)) else {
            throw NameRecordError(.malformed, "missing or empty name")
        }
        let name = String(decoding: raw, as: UTF8.self)
        guard Array(name.utf8) == raw else {
            throw NameRecordError(.invalidName, "the name is not valid UTF-8")
        }
        try NameRecord.validate(name: name)
        return name
    }
}
