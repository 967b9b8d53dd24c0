import Crypto
import Foundation

/// Identifiers of the compression applied to a block before sealing, as stored in the manifest.
public enum BlockCompressionID {
    /// No compression.
    public static let none: UInt8 = 0
    /// Zstandard (provided by STOQContent's `Zstd`).
    public static let zstd: UInt8 = 1
}

/// The compression step of the block pipeline, kept behind a protocol so that HyperMesh does not
/// depend on a particular zstd binding (STOQContent provides one).
public protocol BlockCompressor: Sendable {
    /// The id recorded in the manifest (see ``BlockCompressionID``).
    var id: UInt8 { get }
    /// Compresses `bytes`.
    func compress(_ bytes: [UInt8]) throws -> [UInt8]
    /// Decompresses `bytes` back to exactly `originalLength` bytes.
    func decompress(_ bytes: [UInt8], originalLength: Int) throws -> [UInt8]
}

/// The identity compressor: stores blocks as they are.
public struct NoCompression: BlockCompressor {
    /// Creates the identity compressor.
    public init() {}
    public var id: UInt8 { BlockCompressionID.none }
    public func compress(_ bytes: [UInt8]) throws -> [UInt8] { bytes }
    public func decompress(_ bytes: [UInt8], originalLength: Int) throws -> [UInt8] { bytes }
}

/// A block cut into its k + m shards, with the manifest that describes them.
public struct EncodedBlock: Sendable {
    /// The manifest (block id, code, shard hashes, sealed keys).
    public let manifest: BlockManifest
    /// The k + m shards, data first; shard `i` hashes to `manifest.shardHashes[i]`.
    public let shards: [[UInt8]]
}

/// The block pipeline: (compress →) encrypt with a fresh key → split into k padded data shards →
/// m parity shards → SHA-256 per shard → manifest; and the way back.
///
/// Encryption is ChaCha20-Poly1305 under a random 256-bit key per block, with a random nonce; the
/// associated data binds the plain length and compression id. The block id is the SHA-256 of the
/// sealed bytes (nonce ‖ ciphertext ‖ tag).
public struct BlockCodec: Sendable {
    /// The erasure coder (k + m).
    public let coder: ErasureCoder
    /// The compression step.
    public let compressor: any BlockCompressor

    /// Shards are padded to a multiple of this many bytes, which suits ISA-L's vector kernels.
    public static let shardAlignment = 64

    /// Creates a pipeline.
    /// - Parameters:
    ///   - coder: the erasure coder (10 + 4 by default in ``ErasureCoder``).
    ///   - compressor: the compression step; default zstd level 3. Decoding also reads blocks
    ///     stored without compression.
    public init(coder: ErasureCoder, compressor: any BlockCompressor = ZstdBlockCompressor()) {
        self.coder = coder
        self.compressor = compressor
    }

    /// Encodes a block.
    /// - Parameters:
    ///   - content: the block's bytes.
    ///   - readers: key-agreement public keys of everyone allowed to read it.
    /// - Returns: the manifest and the k + m shards.
    public func encode(_ content: [UInt8], readers: [P256.KeyAgreement.PublicKey]) throws -> EncodedBlock {
        var stages = BlockStageTimes()
        return try encode(content, readers: readers, stages: &stages)
    }

    /// Encodes a block, adding the time of each stage to `stages`.
    /// - Parameters:
    ///   - content: the block's bytes.
    ///   - readers: key-agreement public keys of everyone allowed to read it.
    ///   - stages: accumulates compress, encrypt, encode and hash times.
    public func encode(_ content: [UInt8], readers: [P256.KeyAgreement.PublicKey], stages: inout BlockStageTimes) throws -> EncodedBlock {
        guard content.count <= BlockManifest.maximumPlainLength else {
            throw HyperMeshError(.invalidParameters, "block of \(content.count) bytes exceeds \(BlockManifest.maximumPlainLength)")
        }
        guard readers.count <= BlockManifest.maximumReaders else {
            throw HyperMeshError(.invalidParameters, "at most \(BlockManifest.maximumReaders) readers per block")
        }
        let compressed = try stages.measure(\.compress) { try compressor.compress(content) }
        let key = SymmetricKey(size: .bits256)
        let sealed = try stages.measure(\.encrypt) {
            Array(try ChaChaPoly.seal(compressed, using: key, authenticating: Self.associatedData(content.count, compressor.id)).combined)
        }
        let blockID = stages.measure(\.hash) { BlockID.hashing(sealed) }

        let k = coder.dataShards
        let perShard = max(1, (sealed.count + k - 1) / k)
        let shardSize = (perShard + Self.shardAlignment - 1) / Self.shardAlignment * Self.shardAlignment
        guard shardSize <= BlockManifest.maximumShardSize else {
            throw HyperMeshError(.invalidParameters, "block too large: shard size \(shardSize) exceeds \(BlockManifest.maximumShardSize)")
        }
        let stripe = ShardStripe(shardCount: coder.totalShards, shardSize: shardSize)
        let shards = try stages.measure(\.encode) {
            stripe.fill(sealed, acrossShards: k)
            try coder.encode(stripe)
            return (0..<coder.totalShards).map { stripe.shard($0) }
        }
        let hashes = stages.measure(\.hash) { (0..<coder.totalShards).map { stripe.sha256($0) } }
        let sealedKeys = try stages.measure(\.encrypt) { try readers.map { try SealedBlockKey.seal(key, block: blockID, for: $0) } }
        let manifest = try BlockManifest(
            blockID: blockID, dataShards: k, parityShards: coder.parityShards, shardSize: shardSize,
            sealedLength: sealed.count, plainLength: content.count, compression: compressor.id,
            shardHashes: hashes, readers: sealedKeys
        )
        return EncodedBlock(manifest: manifest, shards: shards)
    }

    /// Whether `bytes` is shard `index` of the block described by `manifest`.
    public static func verifyShard(_ bytes: [UInt8], index: Int, of manifest: BlockManifest) -> Bool {
        manifest.shardHashes.indices.contains(index) && bytes.count == manifest.shardSize
            && Digest256.hashing(bytes) == manifest.shardHashes[index]
    }

    /// Rebuilds the sealed bytes of a block from any k verified shards.
    ///
    /// Shards whose hash does not match the manifest are treated as missing.
    /// - Parameters:
    ///   - manifest: the block manifest.
    ///   - shards: k + m slots, `nil` where a shard is missing.
    /// - Throws: ``HyperMeshError/Code/notEnoughShards`` (saying how many are missing and needed),
    ///   ``HyperMeshError/Code/blockIDMismatch``.
    public func sealedBytes(manifest: BlockManifest, shards: [[UInt8]?]) throws(HyperMeshError) -> [UInt8] {
        var stages = BlockStageTimes()
        return try sealedBytes(manifest: manifest, shards: shards, stages: &stages)
    }

    /// Rebuilds the sealed bytes of a block, adding hash and decode times to `stages`.
    public func sealedBytes(manifest: BlockManifest, shards: [[UInt8]?], stages: inout BlockStageTimes) throws(HyperMeshError) -> [UInt8] {
        try checkCode(manifest)
        guard shards.count == manifest.totalShards else {
            throw HyperMeshError(.invalidParameters, "expected \(manifest.totalShards) shard slots, got \(shards.count)")
        }
        var verified = shards
        var corrupted: [Int] = []
        let clock = ContinuousClock()
        var started = clock.now
        for i in verified.indices {
            if let s = verified[i], !Self.verifyShard(s, index: i, of: manifest) {
                verified[i] = nil
                corrupted.append(i)
            }
        }
        stages.hash += clock.now - started
        started = clock.now
        let data: [[UInt8]]
        do {
            data = try coder.decodeData(verified)
        } catch where error.code == .notEnoughShards && !corrupted.isEmpty {
            throw HyperMeshError(.notEnoughShards, error.reason + "; shards \(corrupted) failed their SHA-256 check")
        }
        var sealed: [UInt8] = []
        sealed.reserveCapacity(manifest.sealedLength)
        for shard in data {
            let take = min(shard.count, manifest.sealedLength - sealed.count)
            sealed.append(contentsOf: shard[0..<take])
        }
        stages.encode += clock.now - started
        started = clock.now
        defer { stages.hash += clock.now - started }
        guard BlockID.hashing(sealed) == manifest.blockID else {
            throw HyperMeshError(.blockIDMismatch, "rebuilt block does not hash to \(manifest.blockID.short)")
        }
        return sealed
    }

    /// Rebuilds, decrypts and decompresses a block.
    /// - Parameters:
    ///   - manifest: the block manifest.
    ///   - shards: k + m slots, `nil` where a shard is missing; at least k must verify.
    ///   - reader: a private key whose public half is among the manifest's readers.
    public func decode(manifest: BlockManifest, shards: [[UInt8]?], reader: P256.KeyAgreement.PrivateKey) throws -> [UInt8] {
        var stages = BlockStageTimes()
        return try decode(manifest: manifest, shards: shards, reader: reader, stages: &stages)
    }

    /// Rebuilds, decrypts and decompresses a block, adding each stage's time to `stages`
    /// (hash: shard and block checks; encode: erasure decoding; encrypt: decryption; compress: decompression).
    public func decode(
        manifest: BlockManifest, shards: [[UInt8]?], reader: P256.KeyAgreement.PrivateKey, stages: inout BlockStageTimes
    ) throws -> [UInt8] {
        let readerID = SealedBlockKey.readerID(reader.publicKey)
        guard let sealedKey = manifest.readers.first(where: { $0.reader == readerID }) else {
            throw HyperMeshError(.noReaderKey, "block \(manifest.blockID.short) is not sealed for reader \(readerID.short)")
        }
        let key = try stages.measure(\.encrypt) { () throws(HyperMeshError) in try sealedKey.open(block: manifest.blockID, with: reader) }
        let sealed = try sealedBytes(manifest: manifest, shards: shards, stages: &stages)
        let plain: [UInt8]
        do {
            plain = try stages.measure(\.encrypt) {
                let box = try ChaChaPoly.SealedBox(combined: sealed)
                return Array(try ChaChaPoly.open(box, using: key, authenticating: Self.associatedData(manifest.plainLength, manifest.compression)))
            }
        } catch {
            throw HyperMeshError(.decryptionFailed, "block \(manifest.blockID.short) failed authentication: \(error)")
        }
        let step: any BlockCompressor
        switch manifest.compression {
        case compressor.id: step = compressor
        case BlockCompressionID.none: step = NoCompression()
        case BlockCompressionID.zstd: step = ZstdBlockCompressor()
        default:
            throw HyperMeshError(.invalidParameters, "block uses compression \(manifest.compression), which this codec cannot undo")
        }
        let content: [UInt8]
        do {
            content = try stages.measure(\.compress) { try step.decompress(plain, originalLength: manifest.plainLength) }
        } catch {
            throw HyperMeshError(.decryptionFailed, "block \(manifest.blockID.short) failed to decompress: \(error)")
        }
        guard content.count == manifest.plainLength else {
            throw HyperMeshError(.decryptionFailed, "decompressed \(content.count) bytes, manifest says \(manifest.plainLength)")
        }
        return content
    }

    private func checkCode(_ manifest: BlockManifest) throws(HyperMeshError) {
        guard manifest.dataShards == coder.dataShards, manifest.parityShards == coder.parityShards else {
            throw HyperMeshError(
                .invalidParameters,
                "block uses a \(manifest.dataShards)+\(manifest.parityShards) code; this codec is \(coder.dataShards)+\(coder.parityShards)"
            )
        }
    }

    static func associatedData(_ plainLength: Int, _ compression: UInt8) -> [UInt8] {
        var w = ByteWriter()
        w.raw(Array("HMBK".utf8))
        w.u64(UInt64(plainLength))
        w.u8(compression)
        return w.bytes
    }
}

/// Time spent in each stage of the block pipeline, over one or more blocks.
///
/// On the way in: compress, encrypt (ChaCha20-Poly1305 and sealing the key), encode (erasure
/// coding), hash (block id and shard SHA-256). On the way out the same fields hold the reverse
/// steps: decompress, decrypt, erasure decode, shard and block checks. The network driver adds
/// transfer (shards on the wire until the last answer) and receipts (verifying signatures).
public struct BlockStageTimes: Hashable, Sendable {
    /// Compression, or decompression on a read.
    public var compress: Duration = .zero
    /// Encryption and key sealing, or decryption on a read.
    public var encrypt: Duration = .zero
    /// Erasure encoding, or decoding on a read.
    public var encode: Duration = .zero
    /// SHA-256 of the block and its shards.
    public var hash: Duration = .zero
    /// Moving shards over the network (wall time).
    public var transfer: Duration = .zero
    /// Verifying receipts (signatures) on a put.
    public var receipts: Duration = .zero

    /// No time yet.
    public init() {}

    /// Runs `body`, adding its duration to the field at `path`.
    public mutating func measure<T, E: Error>(_ path: WritableKeyPath<BlockStageTimes, Duration>, _ body: () throws(E) -> T) throws(E) -> T {
        let clock = ContinuousClock()
        let start = clock.now
        defer { self[keyPath: path] += clock.now - start }
        return try body()
    }

    /// Adds another set of times.
    public static func += (lhs: inout BlockStageTimes, rhs: BlockStageTimes) {
        lhs.compress += rhs.compress
        lhs.encrypt += rhs.encrypt
        lhs.encode += rhs.encode
        lhs.hash += rhs.hash
        lhs.transfer += rhs.transfer
        lhs.receipts += rhs.receipts
    }
}
