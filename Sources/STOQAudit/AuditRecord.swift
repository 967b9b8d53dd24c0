import Crypto
import Foundation
import STOQIdentity

/// One transfer in a node's audit trail: what moved, with whom, how much and when.
///
/// Binary form (docs/PROTOCOL.md, "Audit trail"), all integers big-endian:
/// `time:u64` (ms since 1970, when the transfer ended) · `durationMs:u32` · `direction:u8`
/// (1 served, 2 fetched, 3 uploaded, 4 status, 5 purged) · `content:[32]` (the manifest id) · `peers:u8` (0…16) then each peer's
/// node id `[32]` (0 peers: anonymous) · `bytes:u64` · `chunks:u64` · `grant:u8` (0 none, 1 then
/// `grantID:[16]`).
public struct AuditRecord: Hashable, Sendable {
    /// Which way the bytes went.
    public enum Direction: UInt8, Sendable, Hashable {
        /// The node served chunks to the peer.
        case served = 1
        /// The node fetched chunks from the peer(s) (an edge's fills, a library fetch).
        case fetched = 2
        /// The node received an upload from the peer and committed it (content: the committed
        /// content id; bytes and chunks: what the upload carried, chunks the store held already
        /// are not counted).
        case uploaded = 3
        /// The node answered a STATUS request of the peer (content: 32 zero bytes; bytes: the
        /// JSON document's length; chunks: 0).
        case status = 4
        /// The node executed a PURGE the peer sent (content: the purged content id; bytes and
        /// chunks: what this node dropped from its own cache).
        case purged = 5
        /// `served`, `fetched`, `uploaded`, `status` or `purged`.
        public var word: String {
            switch self {
            case .served: "served"
            case .fetched: "fetched"
            case .uploaded: "uploaded"
            case .status: "status"
            case .purged: "purged"
            }
        }
        /// The preposition before the peer in `stoq audit show`: "to" (served, status), "from"
        /// (fetched, uploaded), "by" (purged).
        public var preposition: String {
            switch self {
            case .served, .status: "to"
            case .fetched, .uploaded: "from"
            case .purged: "by"
            }
        }
    }

    /// When the transfer ended, in milliseconds since 1970.
    public var timeMilliseconds: UInt64
    /// How long it took, in milliseconds.
    public var durationMilliseconds: UInt32
    /// Which way.
    public var direction: Direction
    /// The content's manifest id (32 bytes).
    public var content: [UInt8]
    /// The peers' node ids (32 bytes each, at most ``maximumPeers``); empty: an anonymous reader.
    public var peers: [[UInt8]]
    /// Chunk bytes moved.
    public var bytes: UInt64
    /// Chunks moved.
    public var chunks: UInt64
    /// The access grant the transfer was made under (16 bytes), nil when none.
    public var grantID: [UInt8]?

    /// The most peers one record names.
    public static let maximumPeers = 16

    /// Creates a record; peers beyond ``maximumPeers`` are dropped, ids of the wrong length are
    /// refused by ``encoded()``'s caller (``AuditTrail/append(_:)``).
    public init(timeMilliseconds: UInt64, durationMilliseconds: UInt32, direction: Direction, content: [UInt8], peers: [[UInt8]],
                bytes: UInt64, chunks: UInt64, grantID: [UInt8]? = nil) {
        self.timeMilliseconds = timeMilliseconds
        self.durationMilliseconds = durationMilliseconds
        self.direction = direction
        self.content = content
        self.peers = Array(peers.prefix(Self.maximumPeers))
        self.bytes = bytes
        self.chunks = chunks
        self.grantID = grantID
    }

    /// Whether every id has its length (content 32, peers 32, grant 16).
    public var isWellFormed: Bool {
        content.count == 32 && peers.count <= Self.maximumPeers && peers.allSatisfy { $0.count == 32 } && (grantID?.count ?? 16) == 16
    }

    /// The record's bytes.
    public func encoded() -> [UInt8] {
        var w = AuditWriter()
        w.u64(timeMilliseconds)
        w.u32(durationMilliseconds)
        w.u8(direction.rawValue)
        w.raw(content)
        w.u8(UInt8(peers.count))
        for p in peers { w.raw(p) }
        w.u64(bytes)
        w.u64(chunks)
        if let grantID { w.u8(1); w.raw(grantID) } else { w.u8(0) }
        return w.bytes
    }

    /// Decodes a record; nil unless the bytes are exactly one well-formed record.
    public init?(decoding bytes: ArraySlice<UInt8>) {
        var r = AuditReader(bytes)
        guard let time = r.u64(), let duration = r.u32(), let d = r.u8(), let direction = Direction(rawValue: d),
              let content = r.take(32), let count = r.u8(), Int(count) <= Self.maximumPeers else { return nil }
        var peers: [[UInt8]] = []
        for _ in 0..<count {
            guard let p = r.take(32) else { return nil }
            peers.append(p)
        }
        guard let b = r.u64(), let c = r.u64(), let g = r.u8(), g <= 1 else { return nil }
        var grant: [UInt8]?
        if g == 1 {
            guard let id = r.take(16) else { return nil }
            grant = id
        }
        guard r.isAtEnd else { return nil }
        self.init(timeMilliseconds: time, durationMilliseconds: duration, direction: direction, content: content, peers: peers,
                  bytes: b, chunks: c, grantID: grant)
    }

    /// The chain hash of the record at position `index` after `previous`:
    /// `SHA-256("STOQ-AUDIT-REC-v1" ‖ previous ‖ index:u64 ‖ record)`.
    public static func chainHash(previous: [UInt8], index: UInt64, record: some Collection<UInt8>) -> [UInt8] {
        var h = SHA256()
        h.update(data: Array("STOQ-AUDIT-REC-v1".utf8))
        h.update(data: previous)
        var w = AuditWriter()
        w.u64(index)
        h.update(data: w.bytes)
        h.update(data: Array(record))
        return Array(h.finalize())
    }

    /// The hash before the first record: 32 zero bytes.
    public static let genesis = [UInt8](repeating: 0, count: 32)
}

/// A signed audit head: the node's signature over how many records its log holds and the chain
/// hash of the last one.
///
/// Binary form: `nodeID:[32]` · `count:u64` · `hash:[32]` · `time:u64` (ms since 1970) ·
/// `certificate:u16-length bytes (≤ 8192, DER)` · `signature:u16-length bytes (≤ 128, DER ECDSA)`.
/// The signature (ECDSA P-256, SHA-256) covers `"STOQ-AUDIT-HEAD-v1" ‖ nodeID ‖ count ‖ hash ‖ time`.
public struct AuditHead: Hashable, Sendable {
    /// The signer's node id (SHA-256 of its certificate's SubjectPublicKeyInfo).
    public var nodeID: [UInt8]
    /// Records the head covers.
    public var count: UInt64
    /// The chain hash after record `count - 1` (the genesis hash when `count` is 0).
    public var hash: [UInt8]
    /// When it was signed, ms since 1970.
    public var timeMilliseconds: UInt64
    /// The signer's certificate (DER).
    public var certificate: [UInt8]
    /// The DER ECDSA signature.
    public var signature: [UInt8]

    /// The largest certificate a head carries.
    public static let maximumCertificateLength = 8192
    /// The largest signature a head carries.
    public static let maximumSignatureLength = 128

    /// Creates a head from its parts (no check).
    public init(nodeID: [UInt8], count: UInt64, hash: [UInt8], timeMilliseconds: UInt64, certificate: [UInt8], signature: [UInt8]) {
        self.nodeID = nodeID
        self.count = count
        self.hash = hash
        self.timeMilliseconds = timeMilliseconds
        self.certificate = certificate
        self.signature = signature
    }

    /// The bytes the signature covers.
    public var signedBytes: [UInt8] {
        var w = AuditWriter()
        w.raw(Array("STOQ-AUDIT-HEAD-v1".utf8))
        w.raw(nodeID)
        w.u64(count)
        w.raw(hash)
        w.u64(timeMilliseconds)
        return w.bytes
    }

    /// The head's bytes.
    public func encoded() -> [UInt8] {
        var w = AuditWriter()
        w.raw(nodeID)
        w.u64(count)
        w.raw(hash)
        w.u64(timeMilliseconds)
        w.u16(UInt16(certificate.count))
        w.raw(certificate)
        w.u16(UInt16(signature.count))
        w.raw(signature)
        return w.bytes
    }

    /// Decodes a head; nil unless the bytes are exactly one well-formed head.
    public init?(decoding bytes: ArraySlice<UInt8>) {
        var r = AuditReader(bytes)
        guard let id = r.take(32), let count = r.u64(), let hash = r.take(32), let time = r.u64(),
              let cl = r.u16(), Int(cl) <= Self.maximumCertificateLength, let cert = r.take(Int(cl)),
              let sl = r.u16(), Int(sl) <= Self.maximumSignatureLength, let sig = r.take(Int(sl)), r.isAtEnd else { return nil }
        self.init(nodeID: id, count: count, hash: hash, timeMilliseconds: time, certificate: cert, signature: sig)
    }

    /// Signs a head with a P-256 key.
    public static func sign(count: UInt64, hash: [UInt8], timeMilliseconds: UInt64, nodeID: [UInt8], certificate: [UInt8],
                            key: P256.Signing.PrivateKey) throws -> AuditHead {
        try sign(count: count, hash: hash, timeMilliseconds: timeMilliseconds, nodeID: nodeID, certificate: certificate, signer: SoftwareSigner(key))
    }

    /// Signs a head with a P-256 key in memory or in a token.
    public static func sign(count: UInt64, hash: [UInt8], timeMilliseconds: UInt64, nodeID: [UInt8], certificate: [UInt8],
                            signer: any CertificateSigner) throws -> AuditHead {
        var head = AuditHead(nodeID: nodeID, count: count, hash: hash, timeMilliseconds: timeMilliseconds, certificate: certificate, signature: [])
        head.signature = try signer.signSHA256(head.signedBytes)
        return head
    }
}

/// Big-endian writer for the audit formats.
struct AuditWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(s)) & 0xff)) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(s)) & 0xff)) } }
    mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
}

/// Bounds-checked big-endian reader for the audit formats.
struct AuditReader {
    let bytes: ArraySlice<UInt8>
    var position: Int
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes; self.position = bytes.startIndex }
    var isAtEnd: Bool { position == bytes.endIndex }
    var remaining: Int { bytes.endIndex - position }
    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, remaining >= n else { return nil }
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }
    mutating func uint(_ n: Int) -> UInt64? {
        guard remaining >= n else { return nil }
        var v: UInt64 = 0
        for i in 0..<n { v = v << 8 | UInt64(bytes[position + i]) }
        position += n
        return v
    }
    mutating func u8() -> UInt8? { uint(1).map { UInt8($0) } }
    mutating func u16() -> UInt16? { uint(2).map { UInt16($0) } }
    mutating func u32() -> UInt32? { uint(4).map { UInt32($0) } }
    mutating func u64() -> UInt64? { uint(8) }
}
