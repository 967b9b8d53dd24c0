import Crypto
import Foundation

/// The block key sealed for one reader.
///
/// Sealing uses HPKE (RFC 9180) in base mode with the suite DHKEM(P-256, HKDF-SHA256),
/// HKDF-SHA256, ChaCha20-Poly1305: P-256 because it is the curve of STOQ node identities, so a
/// reader's key agreement key sits beside its signing key; HPKE because it is a standard,
/// analysed construction (ephemeral key per recipient, key schedule bound to `info`) that
/// swift-crypto implements, rather than an ad-hoc ECIES. The HPKE `info` is
/// `"stoq-hypermesh-block-key-v1" ‖ block id` and the AEAD associated data is the block id, so a
/// sealed key cannot be moved to another block.
public struct SealedBlockKey: Hashable, Sendable {
    /// SHA-256 of the reader's P-256 key-agreement public key (SPKI DER).
    public let reader: Digest256
    /// HPKE encapsulated key (65 bytes for P-256).
    public let encapsulatedKey: [UInt8]
    /// The 32-byte block key, HPKE-sealed (48 bytes with the tag).
    public let ciphertext: [UInt8]

    /// Creates a sealed key record.
    public init(reader: Digest256, encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
        self.reader = reader
        self.encapsulatedKey = encapsulatedKey
        self.ciphertext = ciphertext
    }

    static let suite = HPKE.Ciphersuite(kem: .P256_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .chaChaPoly)
    static func info(_ block: BlockID) -> Data { Data("stoq-hypermesh-block-key-v1".utf8) + Data(block.bytes) }

    /// The reader id of a key-agreement public key.
    public static func readerID(_ key: P256.KeyAgreement.PublicKey) -> Digest256 {
        Digest256.hashing(key.derRepresentation)
    }

    /// Seals `key` for `reader`.
    static func seal(_ key: SymmetricKey, block: BlockID, for reader: P256.KeyAgreement.PublicKey) throws -> SealedBlockKey {
        var sender = try HPKE.Sender(recipientKey: reader, ciphersuite: suite, info: info(block))
        let ct = try key.withUnsafeBytes { try sender.seal(Data($0), authenticating: Data(block.bytes)) }
        return SealedBlockKey(reader: readerID(reader), encapsulatedKey: Array(sender.encapsulatedKey), ciphertext: Array(ct))
    }

    /// Opens the block key with the reader's private key.
    func open(block: BlockID, with privateKey: P256.KeyAgreement.PrivateKey) throws(HyperMeshError) -> SymmetricKey {
        do {
            var recipient = try HPKE.Recipient(
                privateKey: privateKey, ciphersuite: Self.suite, info: Self.info(block), encapsulatedKey: Data(encapsulatedKey)
            )
            let raw = try recipient.open(Data(ciphertext), authenticating: Data(block.bytes))
            guard raw.count == 32 else { throw HyperMeshError(.decryptionFailed, "unsealed block key has \(raw.count) bytes") }
            return SymmetricKey(data: raw)
        } catch let error as HyperMeshError {
            throw error
        } catch {
            throw HyperMeshError(.decryptionFailed, "could not unseal the block key for reader \(reader.short): \(error)")
        }
    }
}

/// Everything needed to find, check, rebuild and decrypt one block.
///
/// Binary form (big-endian), version 1:
/// `"HMBK"` · version u8 · block id [32] · k u8 · m u8 · shard size u32 · sealed length u64 ·
/// plain length u64 · compression u8 · (k+m) × shard SHA-256 [32] · reader count u8 ·
/// per reader: reader id [32] · u16 length + encapsulated key · u16 length + sealed key.
/// No trailing bytes. The decoder bounds every field before reading it.
public struct BlockManifest: Hashable, Sendable {
    /// The block id (SHA-256 of the sealed bytes).
    public let blockID: BlockID
    /// Data shards, k.
    public let dataShards: Int
    /// Parity shards, m.
    public let parityShards: Int
    /// Bytes per shard (the sealed bytes are zero-padded up to k × shardSize).
    public let shardSize: Int
    /// Length of the sealed bytes (nonce ‖ ciphertext ‖ tag) before padding.
    public let sealedLength: Int
    /// Length of the original content before compression.
    public let plainLength: Int
    /// Compression applied before sealing (see ``BlockCompressionID``).
    public let compression: UInt8
    /// SHA-256 of each of the k + m shards, data first.
    public let shardHashes: [Digest256]
    /// The block key, sealed for each authorised reader.
    public let readers: [SealedBlockKey]

    /// Total shards, k + m.
    public var totalShards: Int { dataShards + parityShards }

    static let magic: [UInt8] = Array("HMBK".utf8)
    /// Current format version.
    public static let version: UInt8 = 1
    /// Largest shard accepted by the decoder (64 MiB).
    public static let maximumShardSize = 64 << 20
    /// Largest plain length accepted by the decoder (16 GiB; a block is far smaller in practice).
    public static let maximumPlainLength = 16 << 30
    /// Most readers one manifest may carry.
    public static let maximumReaders = 64

    /// Creates a manifest; the fields are checked the same way the decoder checks them.
    public init(
        blockID: BlockID, dataShards: Int, parityShards: Int, shardSize: Int, sealedLength: Int,
        plainLength: Int, compression: UInt8, shardHashes: [Digest256], readers: [SealedBlockKey]
    ) throws(HyperMeshError) {
        guard dataShards >= 1, parityShards >= 0, dataShards + parityShards <= ErasureCoder.maximumTotalShards else {
            throw HyperMeshError(.malformedManifest, "k=\(dataShards) m=\(parityShards) out of range")
        }
        guard shardSize >= 1, shardSize <= Self.maximumShardSize else {
            throw HyperMeshError(.malformedManifest, "shard size \(shardSize) out of range 1...\(Self.maximumShardSize)")
        }
        guard sealedLength >= 0, sealedLength <= dataShards * shardSize else {
            throw HyperMeshError(.malformedManifest, "sealed length \(sealedLength) exceeds k × shard size")
        }
        guard plainLength >= 0, plainLength <= Self.maximumPlainLength else {
            throw HyperMeshError(.malformedManifest, "plain length \(plainLength) out of range")
        }
        guard shardHashes.count == dataShards + parityShards else {
            throw HyperMeshError(.malformedManifest, "\(shardHashes.count) shard hashes for \(dataShards + parityShards) shards")
        }
        guard readers.count <= Self.maximumReaders,
            readers.allSatisfy({ $0.encapsulatedKey.count <= 256 && $0.ciphertext.count <= 256 })
        else {
            throw HyperMeshError(.malformedManifest, "too many readers or oversized sealed keys")
        }
        self.blockID = blockID
        self.dataShards = dataShards
        self.parityShards = parityShards
        self.shardSize = shardSize
        self.sealedLength = sealedLength
        self.plainLength = plainLength
        self.compression = compression
        self.shardHashes = shardHashes
        self.readers = readers
    }

    /// The binary form.
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u8(Self.version)
        w.raw(blockID.bytes)
        w.u8(UInt8(dataShards))
        w.u8(UInt8(parityShards))
        w.u32(UInt32(shardSize))
        w.u64(UInt64(sealedLength))
        w.u64(UInt64(plainLength))
        w.u8(compression)
        for h in shardHashes { w.raw(h.bytes) }
        w.u8(UInt8(readers.count))
        for r in readers {
            w.raw(r.reader.bytes)
            w.blob16(r.encapsulatedKey)
            w.blob16(r.ciphertext)
        }
        return w.bytes
    }

    /// Decodes a manifest; safe on arbitrary bytes.
    /// - Throws: ``HyperMeshError/Code/malformedManifest`` naming the first bad field.
    public init(decoding bytes: [UInt8]) throws(HyperMeshError) {
        func bad(_ what: String) -> HyperMeshError {
            HyperMeshError(.malformedManifest, "block manifest is malformed: \(what)")
        }
        var r = ByteReader(bytes)
        guard r.take(4) == Self.magic else { throw bad("missing \"HMBK\" magic") }
        guard let version = r.u8() else { throw bad("truncated version") }
        guard version == Self.version else { throw bad("unsupported version \(version) (this build reads \(Self.version))") }
        guard let id = r.digest(), let k = r.u8(), let m = r.u8(), let size = r.u32(), let sealed = r.u64(),
            let plain = r.u64(), let compression = r.u8()
        else { throw bad("truncated header") }
        guard k >= 1, Int(k) + Int(m) <= ErasureCoder.maximumTotalShards else { throw bad("k=\(k) m=\(m) out of range") }
        guard size >= 1, Int(size) <= Self.maximumShardSize else { throw bad("shard size \(size) out of range") }
        guard sealed <= UInt64(k) * UInt64(size) else { throw bad("sealed length larger than k × shard size") }
        guard plain <= UInt64(Self.maximumPlainLength) else { throw bad("plain length \(plain) out of range") }
        var hashes: [Digest256] = []
        for _ in 0..<(Int(k) + Int(m)) {
            guard let h = r.digest() else { throw bad("truncated shard hashes") }
            hashes.append(h)
        }
        guard let readerCount = r.u8(), Int(readerCount) <= Self.maximumReaders else { throw bad("reader count out of range") }
        var readers: [SealedBlockKey] = []
        for _ in 0..<readerCount {
            guard let reader = r.digest(), let enc = r.blob16(max: 256), let ct = r.blob16(max: 256) else {
                throw bad("truncated reader entry")
            }
            readers.append(SealedBlockKey(reader: reader, encapsulatedKey: enc, ciphertext: ct))
        }
        guard r.isAtEnd else { throw bad("\(r.remaining) trailing bytes") }
        try self.init(
            blockID: id, dataShards: Int(k), parityShards: Int(m), shardSize: Int(size), sealedLength: Int(sealed),
            plainLength: Int(plain), compression: compression, shardHashes: hashes, readers: readers
        )
    }

    /// Fuzz entry point for a libFuzzer harness: decodes arbitrary bytes and, when they decode,
    /// checks that re-encoding gives the same bytes. Traps only on a real bug.
    public static func fuzz(_ data: [UInt8]) {
        guard let manifest = try? BlockManifest(decoding: data) else { return }
        precondition(manifest.encoded() == data, "manifest encoding is not canonical")
    }
}
