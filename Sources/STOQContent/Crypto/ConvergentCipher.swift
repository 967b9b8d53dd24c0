import Crypto

/// A publisher's secret and the keys derived from it.
///
/// - `secret` keys the convergent chunk keys (HMAC-SHA256), so only chunks of the same publisher
///   deduplicate and an outsider cannot confirm a guessed plaintext.
/// - `readKey` = HKDF-SHA256(secret, info "stoq read key v1") seals each manifest's key table.
///   For now a reader is anyone the publisher gives the read key to (`stoq` keeps both in the store
///   directory, `publisher.key`); wrapping a per-manifest content key for each reader's X25519 key
///   is the planned next step and changes only ``KeyTable``.
public struct PublisherKeys: Sendable {
    /// The HMAC key for chunk keys.
    public let secret: SymmetricKey
    /// The key that seals key tables.
    public let readKey: SymmetricKey

    /// Derives the keys from 32 secret bytes.
    /// - Parameter secret: 32 random bytes.
    public init(secret: [UInt8]) throws {
        guard secret.count == 32 else { throw ContentError(.invalidArgument, "a publisher secret is 32 bytes, got \(secret.count)") }
        self.secret = SymmetricKey(data: secret)
        self.readKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: self.secret, info: Array("stoq read key v1".utf8), outputByteCount: 32)
    }

    /// A fresh random publisher.
    public static func random() -> PublisherKeys {
        try! PublisherKeys(secret: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }
}

/// One chunk after convergent encryption.
public struct SealedChunk: Sendable {
    /// SHA-256 of `bytes`: the id under which stores hold and serve it.
    public var id: ChunkID
    /// The stored bytes: ChaCha20-Poly1305 ciphertext and tag of (flag byte ‖ body).
    public var bytes: [UInt8]
    /// The 32-byte chunk key (travels only inside a sealed key table).
    public var key: [UInt8]
    /// Whether the body was zstd-compressed.
    public var compressed: Bool
}

/// Keyed convergent encryption of chunks.
///
/// Per-chunk key `k = HMAC-SHA256(publisher secret, SHA-256(plaintext))`; the stored bytes are
/// `ChaCha20-Poly1305(k, nonce = 0, flag ‖ body)` where `flag` is 1 if `body` is the zstd frame of the
/// plaintext (used only when it is smaller) and 0 if it is the plaintext.
///
/// **Why a fixed nonce is safe here.** A ChaCha20-Poly1305 nonce must never be reused with the same
/// key for *different* messages. Here a key is a function of the plaintext (through its hash), and the
/// message encrypted under it is a deterministic function of that same plaintext (the compress decision
/// and zstd level are fixed), so a key only ever encrypts one message; encrypting it again yields the
/// identical ciphertext, which is exactly what convergent dedup wants and reveals nothing new. Keys of
/// different plaintexts differ except with SHA-256/HMAC collision probability.
public struct ConvergentCipher: Sendable {
    /// The publisher's keys.
    public let keys: PublisherKeys
    /// zstd level for chunk bodies.
    public let zstdLevel: Int32

    /// Creates a cipher.
    public init(keys: PublisherKeys, zstdLevel: Int32 = 1) {
        self.keys = keys
        self.zstdLevel = zstdLevel
    }

    /// The chunk key for a plaintext hash.
    public func chunkKey(plaintextHash: ChunkID) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: plaintextHash.bytes, using: keys.secret))
    }

    static let zeroNonce = try! ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12))

    /// Encrypts one chunk.
    /// - Parameters:
    ///   - plaintext: the chunk's bytes.
    ///   - plaintextHash: SHA-256 of `plaintext` (the chunker already computed it).
    ///   - tryCompression: try zstd first (skip for media that is already compressed).
    public func seal(_ plaintext: UnsafeRawBufferPointer, plaintextHash: ChunkID, tryCompression: Bool = true) throws -> SealedChunk {
        let key = chunkKey(plaintextHash: plaintextHash)
        var message = [UInt8]()
        var compressed = false
        if tryCompression, plaintext.count >= 64, case .success(let z) = Zstd.compress(plaintext, level: zstdLevel), z.count < plaintext.count {
            message.reserveCapacity(z.count + 1)
            message.append(1)
            message += z
            compressed = true
        } else {
            message.reserveCapacity(plaintext.count + 1)
            message.append(0)
            message += plaintext
        }
        let box = try ChaChaPoly.seal(message, using: SymmetricKey(data: key), nonce: Self.zeroNonce)
        var bytes = [UInt8]()
        bytes.reserveCapacity(box.ciphertext.count + 16)
        bytes += box.ciphertext
        bytes += box.tag
        return SealedChunk(id: ChunkID.of(bytes), bytes: bytes, key: key, compressed: compressed)
    }

    /// Encrypts a byte array.
    public func seal(_ plaintext: [UInt8], tryCompression: Bool = true) throws -> SealedChunk {
        try plaintext.withUnsafeBytes { try seal($0, plaintextHash: ChunkID.of($0), tryCompression: tryCompression) }
    }

    /// Decrypts stored bytes.
    /// - Parameters:
    ///   - stored: ciphertext ‖ tag as held by a store.
    ///   - key: the chunk key from the manifest's key table.
    ///   - expectedSize: the plaintext size the manifest records (bounds decompression).
    /// - Throws: ``ContentError/Code/decryptionFailed`` or `.malformed`.
    public static func open(_ stored: [UInt8], key: [UInt8], expectedSize: Int) throws -> [UInt8] {
        guard stored.count >= 17, key.count == 32 else { throw ContentError(.malformed, "a sealed chunk is at least 17 bytes and its key 32 bytes") }
        let box: ChaChaPoly.SealedBox
        do {
            box = try ChaChaPoly.SealedBox(nonce: zeroNonce, ciphertext: stored[..<(stored.count - 16)], tag: stored[(stored.count - 16)...])
        } catch { throw ContentError(.malformed, "sealed chunk: \(error)") }
        let message: [UInt8]
        do { message = Array(try ChaChaPoly.open(box, using: SymmetricKey(data: key))) } catch {
            throw ContentError(.decryptionFailed, "a chunk did not authenticate with its key: wrong publisher read key, or the manifest and chunk do not belong together")
        }
        let out: [UInt8]
        switch message.first {
        case 0: out = Array(message.dropFirst())
        case 1:
            do { out = try Zstd.decompress(Array(message.dropFirst()), maxSize: expectedSize) } catch {
                throw ContentError(.malformed, "chunk body: \(error)")
            }
        default: throw ContentError(.malformed, "unknown chunk body flag")
        }
        guard out.count == expectedSize else { throw ContentError(.malformed, "chunk decrypted to \(out.count) bytes, manifest says \(expectedSize)") }
        return out
    }
}

/// The chunk keys of one manifest, sealed with the publisher's read key.
///
/// Layout of the sealed form: nonce (12) ‖ ciphertext ‖ tag (16), the plaintext being the keys
/// concatenated (32 bytes each, in entry order). The nonce is the first 12 bytes of
/// HMAC-SHA256(read key, plaintext) — a synthetic IV — so equal key tables seal identically (manifests
/// deduplicate) and a nonce can repeat only for an identical message.
public enum KeyTable {
    /// Seals `keys`.
    public static func seal(_ keys: [[UInt8]], readKey: SymmetricKey) throws -> [UInt8] {
        var plain = [UInt8]()
        plain.reserveCapacity(keys.count * 32)
        for k in keys { plain += k }
        let mac = Array(HMAC<SHA256>.authenticationCode(for: plain, using: readKey))
        let nonce = try ChaChaPoly.Nonce(data: mac[0..<12])
        let box = try ChaChaPoly.seal(plain, using: readKey, nonce: nonce)
        return Array(box.combined)
    }

    /// Opens a sealed table of `count` keys.
    /// - Throws: ``ContentError/Code/decryptionFailed`` if the read key is wrong or the table was altered.
    public static func open(_ sealed: [UInt8], count: Int, readKey: SymmetricKey) throws -> [[UInt8]] {
        guard sealed.count == 12 + 32 * count + 16 else {
            throw ContentError(.malformed, "key table is \(sealed.count) bytes, expected \(28 + 32 * count) for \(count) keys")
        }
        let plain: [UInt8]
        do {
            plain = Array(try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: sealed), using: readKey))
        } catch {
            throw ContentError(.decryptionFailed, "the manifest's key table did not open with the key at hand: the content is private to a publisher whose key this is not (give its publisher.key with --publisher-key), or a public content read without its own key")
        }
        return (0..<count).map { Array(plain[($0 * 32)..<($0 * 32 + 32)]) }
    }
}
