import Crypto
import Foundation

/// A content key wrapped for one reader: what a ticket (version 2) and an access grant's extension
/// type 1 carry so that only that reader can open a sealed private content.
///
/// Sealing follows HyperMesh's block keys (``SealedBlockKey`` there) with X25519: HPKE (RFC 9180)
/// base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, with
/// `info = "stoq content key v1" ‖ content id` and the envelope's first 65 bytes as associated data,
/// so an envelope can be moved neither to another content nor to another reader id. Binary form:
/// ```
/// version u8 = 1 | content id (32) | reader id (32) | encapsulated key (32) | sealed key (48)
/// ```
/// 145 bytes, nothing may follow. The reader id is SHA-256 of the reader's 32-byte X25519 public
/// key, so a reader can tell "not for me" from "damaged".
public struct ReaderKeyEnvelope: Sendable, Hashable {
    /// The content whose key this is.
    public var content: ContentID
    /// SHA-256 of the reader's raw X25519 public key.
    public var reader: [UInt8]
    /// HPKE encapsulated key (the sender's ephemeral X25519 public key).
    public var encapsulatedKey: [UInt8]
    /// The 32-byte content key, sealed (48 bytes with the tag).
    public var sealedKey: [UInt8]

    /// Format version.
    public static let version: UInt8 = 1
    /// Encoded length.
    public static let length = 145
    static let suite = HPKE.Ciphersuite(kem: .Curve25519_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .chaChaPoly)

    /// Creates an envelope from its parts (no check: see ``encode()`` and ``decode(_:)``).
    public init(content: ContentID, reader: [UInt8], encapsulatedKey: [UInt8], sealedKey: [UInt8]) {
        self.content = content
        self.reader = reader
        self.encapsulatedKey = encapsulatedKey
        self.sealedKey = sealedKey
    }

    /// The reader id of a public key.
    public static func readerID(_ key: Curve25519.KeyAgreement.PublicKey) -> [UInt8] {
        Array(SHA256.hash(data: key.rawRepresentation))
    }

    static func info(_ content: ContentID) -> Data { Data("stoq content key v1".utf8) + Data(content.manifest.bytes) }
    static func header(_ content: ContentID, _ reader: [UInt8]) -> Data { Data([version]) + Data(content.manifest.bytes) + Data(reader) }

    /// Wraps `contentKey` (32 bytes) of `content` for `reader`.
    /// - Throws: `.invalidArgument` for a key that is not 32 bytes.
    public static func seal(contentKey: [UInt8], content: ContentID, for reader: Curve25519.KeyAgreement.PublicKey) throws -> ReaderKeyEnvelope {
        guard contentKey.count == 32 else { throw ContentError(.invalidArgument, "a content key is 32 bytes, got \(contentKey.count)") }
        let rid = readerID(reader)
        do {
            var sender = try HPKE.Sender(recipientKey: reader, ciphersuite: suite, info: info(content))
            let ct = try sender.seal(contentKey, authenticating: header(content, rid))
            return ReaderKeyEnvelope(content: content, reader: rid, encapsulatedKey: Array(sender.encapsulatedKey), sealedKey: Array(ct))
        } catch {
            throw ContentError(.invalidArgument, "cannot wrap the content key for this reader key: \(error)")
        }
    }

    /// Opens the content key with the reader's private key.
    /// - Throws: `.decryptionFailed` when the envelope is for another reader or was altered.
    public func open(with privateKey: Curve25519.KeyAgreement.PrivateKey) throws -> [UInt8] {
        guard Self.readerID(privateKey.publicKey) == reader else {
            throw ContentError(.decryptionFailed, "the content key is wrapped for another reader (reader \(ReaderKey.short(reader))), not for this reader key (\(ReaderKey.short(Self.readerID(privateKey.publicKey)))); ask the publisher for a ticket made with --reader for your key (stoq reader key prints it)")
        }
        do {
            var recipient = try HPKE.Recipient(privateKey: privateKey, ciphersuite: Self.suite, info: Self.info(content), encapsulatedKey: Data(encapsulatedKey))
            let raw = try recipient.open(Data(sealedKey), authenticating: Self.header(content, reader))
            guard raw.count == 32 else { throw ContentError(.malformed, "the unwrapped content key is \(raw.count) bytes, not 32") }
            return Array(raw)
        } catch let e as ContentError {
            throw e
        } catch {
            throw ContentError(.decryptionFailed, "the wrapped content key did not open: it was altered or damaged; ask the publisher for it again")
        }
    }

    /// The binary form (145 bytes).
    public func encode() -> [UInt8] {
        [Self.version] + content.manifest.bytes + reader + encapsulatedKey + sealedKey
    }

    /// Decodes the binary form; safe on arbitrary bytes.
    /// - Throws: `.malformed` for a wrong length, `.unsupportedVersion` for another version.
    public static func decode(_ bytes: [UInt8]) throws -> ReaderKeyEnvelope {
        guard bytes.count == length else {
            throw ContentError(.malformed, "a wrapped content key is \(length) bytes, not \(bytes.count)")
        }
        guard bytes[0] == version else {
            throw ContentError(.unsupportedVersion, "wrapped content key version \(bytes[0]); this build reads version \(version) — upgrade stoq")
        }
        return ReaderKeyEnvelope(
            content: ContentID(ChunkID(bytes: bytes[1..<33])!), reader: Array(bytes[33..<65]),
            encapsulatedKey: Array(bytes[65..<97]), sealedKey: Array(bytes[97..<145]))
    }

    /// ``decode(_:)`` with a typed error (for typed-throws callers).
    static func decodeTyped(_ bytes: [UInt8]) throws(ContentError) -> ReaderKeyEnvelope {
        do { return try decode(bytes) } catch let e as ContentError { throw e } catch { throw ContentError(.malformed, "wrapped content key: \(error)") }
    }

    /// Fuzz entry point: decodes arbitrary bytes; what decodes re-encodes to the same bytes, and
    /// opening it with a fixed key fails cleanly.
    public static func fuzz(_ data: [UInt8]) {
        guard let e = try? decode(data) else { return }
        precondition(e.encode() == data, "a decoded envelope re-encodes differently")
        _ = try? e.open(with: fuzzReader)
    }
    static let fuzzReader = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: 7, count: 32))
}

/// A reader's X25519 key: the private half in a file of 32 raw bytes (mode 0600, default
/// `~/.stoq/reader.key`), the public half as text `stoqreader1` + lowercase base32 (what
/// `stoq reader key` prints and `stoq share --reader FILE` reads).
public enum ReaderKey {
    /// The text prefix of a reader public key.
    public static let prefix = "stoqreader1"

    /// The public key's text form.
    public static func text(_ key: Curve25519.KeyAgreement.PublicKey) -> String {
        prefix + Base32.encode(Array(key.rawRepresentation))
    }

    /// The first 8 hex digits of a reader id (for messages).
    public static func short(_ id: [UInt8]) -> String { id.prefix(4).map { String(format: "%02x", $0) }.joined() }

    /// Parses a public key's text form (surrounding whitespace ignored).
    /// - Throws: `.malformed` with a reason for people.
    public static func parsePublic(_ text: String) throws -> Curve25519.KeyAgreement.PublicKey {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.hasPrefix(prefix), let raw = Base32.decode(String(t.dropFirst(prefix.count))), raw.count == 32,
              let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw)
        else {
            throw ContentError(.malformed, "not a reader key: a reader public key is \(prefix) followed by 52 base32 characters (stoq reader key prints one)")
        }
        return key
    }

    /// Reads the private key file (32 raw bytes).
    /// - Throws: `.notFound`, `.io`, `.invalidArgument` for a file of another size.
    public static func load(path: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        let bytes = try Posix.readFile(path)
        guard bytes.count == 32, let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes) else {
            throw ContentError(.invalidArgument, "\(path) is \(bytes.count) bytes; a reader key file is exactly 32 bytes (stoq reader key makes one)")
        }
        return key
    }

    /// Reads a public key from a file: its text form, or a private key file (its public half).
    public static func loadPublic(path: String) throws -> Curve25519.KeyAgreement.PublicKey {
        let bytes = try Posix.readFile(path)
        if let text = String(validating: bytes, as: UTF8.self), text.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix(prefix) {
            return try parsePublic(text)
        }
        if bytes.count == 32, let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes) { return key.publicKey }
        throw ContentError(.invalidArgument, "\(path) holds no reader key: give the \(prefix)… text that `stoq reader key` prints")
    }

    /// Loads the key file at `path`, creating it (32 random bytes, mode 0600) when missing.
    public static func loadOrCreate(path: String) throws -> (key: Curve25519.KeyAgreement.PrivateKey, created: Bool) {
        if Posix.exists(path) { return (try load(path: path), false) }
        let key = Curve25519.KeyAgreement.PrivateKey()
        let bytes = Array(key.rawRepresentation)
        try Posix.makeDirectories(Posix.parent(path), mode: 0o700)
        let fd = try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        defer { fd.close() }
        try fd.writeAll(bytes)
        try fd.sync()
        return (key, true)
    }
}
