import Crypto

/// The root (or an inner index) of a **sealed** private content: the list of every chunk the content
/// consists of, in the clear, and its real root manifest's id sealed with the content's metadata key.
///
/// A node that stores or serves a sealed content sees chunk ids and sizes only: the file and
/// directory manifests (names, modes, content types, tree structure) are stored as sealed chunks
/// (``SealedMetadata``), indistinguishable from data chunks. Layout, big-endian:
/// ```
/// "STQE" | version u8 = 1 | count u32 (0...65536) | Merkle root (32, over the entry ids)
/// count × entry: kind u8 (1 chunk, 2 index) | id (32) | size u32
/// sealed length u32 (0 on an inner index; 60 on a root) | sealed (nonce 12 | ciphertext 32 | tag 16)
/// ```
/// A kind 1 entry is a chunk to fetch and store as is (a data chunk or a sealed manifest; a node
/// cannot tell which): `size` is the publisher's size hint (a data chunk's plaintext size, its
/// stored bytes at most 17 more; a sealed manifest's stored size). A kind 2 entry is another
/// `STQE` of this content (an inner index, with no sealed part): `size` is its encoded length.
/// An id appears at most once in an index. Nothing may follow; an index is at most 16 MiB.
public struct SealedIndex: Sendable, Equatable {
    /// What an entry names.
    public enum Kind: UInt8, Sendable {
        /// A chunk of the content (data or sealed manifest).
        case chunk = 1
        /// A further index of the same content.
        case index = 2
    }
    /// One entry.
    public struct Entry: Sendable, Equatable {
        /// Chunk or index.
        public var kind: Kind
        /// Its chunk id.
        public var id: ChunkID
        /// The size hint (see the type's documentation).
        public var size: UInt32
        /// Creates an entry.
        public init(kind: Kind, id: ChunkID, size: UInt32) { self.kind = kind; self.id = id; self.size = size }
    }

    /// Entries in fetch order.
    public var entries: [Entry]
    /// The sealed root id (60 bytes) on a root index, empty on an inner index.
    public var sealedRoot: [UInt8]

    /// Magic bytes.
    public static let magic: [UInt8] = Array("STQE".utf8)
    /// Format version.
    public static let version: UInt8 = 1
    /// Size of the sealed root: nonce 12, id 32, tag 16.
    public static let sealedRootLength = 60

    /// Creates an index.
    public init(entries: [Entry], sealedRoot: [UInt8]) { self.entries = entries; self.sealedRoot = sealedRoot }

    /// Whether `bytes` begin like a sealed index (cheap, no validation).
    public static func looksLike(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

    /// Encodes.
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic); w.u8(Self.version); w.u32(UInt32(entries.count)); w.id(Merkle.root(entries.map(\.id)))
        for e in entries { w.u8(e.kind.rawValue); w.id(e.id); w.u32(e.size) }
        w.u32(UInt32(sealedRoot.count)); w.raw(sealedRoot)
        return w.bytes
    }

    /// Decodes and validates; safe on arbitrary bytes.
    /// - Throws: ``ContentError`` `.malformed` with the reason, `.unsupportedVersion`.
    public static func decode(_ bytes: [UInt8]) throws -> SealedIndex {
        var r = ByteReader(bytes, what: "sealed content index")
        guard bytes.count <= 16 << 20 else { throw r.fail("larger than 16 MiB") }
        guard Array(try r.raw(4)) == magic else { throw r.fail("bad magic (not a STOQ sealed content index)") }
        let version = try r.u8()
        guard version == 1 else { throw ContentError(.unsupportedVersion, "sealed content index version \(version); this build reads version 1 — upgrade stoq") }
        let count = Int(try r.u32())
        guard count <= FileManifest.maxEntries else { throw r.fail("\(count) entries, more than the limit \(FileManifest.maxEntries)") }
        try r.need(32 + count * 37 + 4)
        let root = try r.id()
        var entries = [Entry]()
        entries.reserveCapacity(count)
        var seen = Set<ChunkID>()
        for i in 0..<count {
            guard let kind = Kind(rawValue: try r.u8()) else { throw r.fail("entry \(i) has an unknown kind") }
            let id = try r.id()
            let size = try r.u32()
            guard size > 0, size <= (16 << 20) + 64 else { throw r.fail("entry \(i) has size \(size)") }
            guard seen.insert(id).inserted else { throw r.fail("entry \(i) repeats an id") }
            entries.append(Entry(kind: kind, id: id, size: size))
        }
        let n = Int(try r.u32())
        guard n == 0 || n == sealedRootLength else { throw r.fail("a sealed root of \(n) bytes (0 or \(sealedRootLength))") }
        let sealed = Array(try r.raw(n))
        try r.end()
        guard Merkle.root(entries.map(\.id)) == root else { throw r.fail("Merkle root does not match the entries (forged or damaged index)") }
        return SealedIndex(entries: entries, sealedRoot: sealed)
    }

    /// Fuzz entry point: decodes arbitrary bytes; what decodes must re-encode to the same bytes.
    public static func fuzz(_ data: [UInt8]) {
        guard let i = try? decode(data) else { return }
        precondition(i.encode() == data, "sealed index encoding is not canonical")
    }
}

/// The keys and seals of a sealed content's metadata.
///
/// A sealed content has one random 32-byte **content key** `K` (kept by the publisher in
/// `private.keys`, handed to readers only wrapped for their reader key: ``ReaderKeyEnvelope``).
/// `K` seals the key tables of its file leaves (as a public content's key does), and
/// `metaKey = HKDF-SHA256(IKM = K, salt = none, info = "stoq manifest key v1", L = 32)` seals its
/// manifests and the root id in its ``SealedIndex``:
/// ```
/// nonce  = first 12 bytes of HMAC-SHA256(key = metaKey, message = label ‖ plaintext)
/// sealed = nonce ‖ ChaCha20-Poly1305(metaKey, nonce, plaintext, associated data = label) ‖ tag
/// ```
/// with `label` the ASCII `"stoq sealed manifest"` for a manifest (plaintext: its `STQD`/`STQM`
/// bytes) and `"stoq sealed root"` for the index's root (plaintext: the root manifest's id).
public enum SealedMetadata {
    static let manifestLabel = Array("stoq sealed manifest".utf8)
    static let rootLabel = Array("stoq sealed root".utf8)

    /// The metadata key of a content key.
    public static func metaKey(contentKey: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: contentKey), info: Array("stoq manifest key v1".utf8), outputByteCount: 32)
    }

    static func seal(_ plain: [UInt8], label: [UInt8], key: SymmetricKey) throws -> [UInt8] {
        let mac = Array(HMAC<SHA256>.authenticationCode(for: label + plain, using: key))
        let box = try ChaChaPoly.seal(plain, using: key, nonce: try ChaChaPoly.Nonce(data: mac[0..<12]), authenticating: label)
        return Array(box.combined)
    }

    static func open(_ sealed: [UInt8], label: [UInt8], key: SymmetricKey, what: String) throws -> [UInt8] {
        guard sealed.count >= 28 else { throw ContentError(.malformed, "\(what) is \(sealed.count) bytes, too short to be sealed") }
        do {
            return Array(try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: sealed), using: key, authenticating: label))
        } catch {
            throw ContentError(.decryptionFailed, "\(what) did not open with the content key at hand: the key is another content's (a ticket or keyring entry for something else), or the content was altered")
        }
    }

    /// Seals a manifest's bytes.
    public static func sealManifest(_ bytes: [UInt8], metaKey: SymmetricKey) throws -> [UInt8] {
        try seal(bytes, label: manifestLabel, key: metaKey)
    }

    /// Opens a sealed manifest.
    /// - Throws: `.decryptionFailed` for a wrong key or altered bytes.
    public static func openManifest(_ sealed: [UInt8], metaKey: SymmetricKey) throws -> [UInt8] {
        try open(sealed, label: manifestLabel, key: metaKey, what: "a sealed manifest")
    }

    /// Seals the root manifest id for a root index.
    public static func sealRoot(_ id: ChunkID, metaKey: SymmetricKey) throws -> [UInt8] {
        try seal(id.bytes, label: rootLabel, key: metaKey)
    }

    /// Opens a root index's sealed root id.
    /// - Throws: `.decryptionFailed` for a wrong key; `.malformed` for an inner index (nothing sealed).
    public static func openRoot(_ index: SealedIndex, metaKey: SymmetricKey) throws -> ChunkID {
        guard !index.sealedRoot.isEmpty else { throw ContentError(.malformed, "an inner sealed index is not a content's root") }
        let plain = try open(index.sealedRoot, label: rootLabel, key: metaKey, what: "the content's sealed index")
        guard let id = ChunkID(bytes: plain) else { throw ContentError(.malformed, "the sealed root is not a chunk id") }
        return id
    }
}
