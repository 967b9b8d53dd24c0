import Crypto
import Foundation
import STOQIdentity
import STOQNode

/// What a client keeps about a block it stored: the manifest, the receipts that prove the commit,
/// where each shard and manifest replica lives, and the challenges prepared while it still had
/// the shards. Written as `BLOCK_HEX.json` in a ``BlockDirectory``.
public struct BlockRecord: Codable, Hashable, Sendable {
    /// One shard's holder.
    public struct Holder: Codable, Hashable, Sendable {
        /// Shard index.
        public var shard: Int
        /// Node id (hex).
        public var node: String
        /// Its address, `[host]:port`.
        public var address: String
    }

    /// A node known when the block was stored or repaired (placement candidates for repair).
    public struct KnownNode: Codable, Hashable, Sendable {
        /// Node id (hex).
        public var node: String
        /// Its address.
        public var address: String
        /// Its region.
        public var region: String
        /// Its free bytes when last asked.
        public var freeBytes: UInt64
    }

    /// A prepared challenge (the expected answer never leaves this file).
    public struct PreparedChallenge: Codable, Hashable, Sendable {
        /// Shard index.
        public var shard: Int
        /// Nonce (hex).
        public var nonce: String
        /// Range start.
        public var offset: Int
        /// Range length.
        public var length: Int
        /// Expected SHA-256 (hex).
        public var expected: String
    }

    /// Block id (hex).
    public var block: String
    /// The manifest, base64 of its binary form.
    public var manifest: String
    /// The verified receipts, base64 each: the block's proof.
    public var receipts: [String]
    /// Shard holders.
    public var holders: [Holder]
    /// Manifest replica holders.
    public var manifestReplicas: [Holder]
    /// Nodes known at put or repair time.
    public var nodes: [KnownNode]
    /// Unused prepared challenges.
    public var challenges: [PreparedChallenge]
    /// The placement computed at put time, as `stoq block plan` explains it (where and why).
    public var plan: String?
    /// The node the put's plan chose for each shard (before any failure or repair moved it).
    public var planned: [Holder]?
    /// The stored file's name, if it came from a file.
    public var fileName: String?
    /// When the block was committed.
    public var committed: Date

    /// The decoded manifest.
    public func decodedManifest() throws(HyperMeshError) -> BlockManifest {
        guard let data = Data(base64Encoded: manifest) else { throw HyperMeshError(.malformedManifest, "block record \(block): manifest is not base64") }
        return try BlockManifest(decoding: [UInt8](data))
    }

    /// The decoded receipts (undecodable ones dropped).
    public func decodedReceipts() -> [StorageReceipt] {
        receipts.compactMap { Data(base64Encoded: $0).flatMap { try? StorageReceipt(decoding: [UInt8]($0)) } }
    }

    /// Holder of each shard: node id and address.
    public func holderMap() -> [Int: (node: MeshNodeID, address: String)] {
        var out: [Int: (MeshNodeID, String)] = [:]
        for h in holders { if let id = MeshNodeID(hex: h.node) { out[h.shard] = (id, h.address) } }
        return out
    }

    /// The holders as ``LocatedHolder``s (entries whose node id or address does not parse are skipped).
    public func locatedHolders() -> [LocatedHolder] {
        holders.compactMap { h in
            guard let node = MeshNodeID(hex: h.node), let address = PeerAddress(h.address) else { return nil }
            return LocatedHolder(shard: h.shard, node: node, address: address)
        }
    }

    /// Sets shard holders and receipts, replacing older entries for the same shards.
    mutating func setHolder(shard: Int, node: MeshNodeID, address: String, receipt: StorageReceipt) {
        holders.removeAll { $0.shard == shard }
        holders.append(Holder(shard: shard, node: node.hex, address: address))
        holders.sort { $0.shard < $1.shard }
        var kept = decodedReceipts().filter { $0.shardIndex != shard }
        kept.append(receipt)
        receipts = kept.sorted { $0.shardIndex < $1.shardIndex }.map { Data($0.encoded()).base64EncodedString() }
    }

    /// Prepares `count` challenges over `shard` while its bytes are at hand.
    mutating func prepareChallenges(block: BlockID, shard index: Int, node: MeshNodeID, bytes: [UInt8], count: Int) {
        challenges.removeAll { $0.shard == index }
        var rng = SystemRandomNumberGenerator()
        for n in 0..<count {
            let c = StorageChallenge.prepare(id: UInt64(n), blockID: block, shardIndex: index, node: node, shard: bytes, using: &rng)
            challenges.append(PreparedChallenge(shard: index, nonce: Hex.encode(c.nonce), offset: c.offset, length: c.length, expected: c.expected.hex))
        }
    }

    /// Takes one prepared challenge for `shard` to ask `node` (nil when none are left).
    mutating func takeChallenge(shard: Int, node: MeshNodeID, id: UInt64) -> StorageChallenge? {
        guard let i = challenges.firstIndex(where: { $0.shard == shard }) else { return nil }
        let c = challenges.remove(at: i)
        guard let nonce = Hex.decode(c.nonce), nonce.count == HyperMeshMessage.nonceLength, let expected = Digest256(hex: c.expected) else { return nil }
        return StorageChallenge(
            id: id, blockID: BlockID(hex: block) ?? expected, shardIndex: shard, node: node, nonce: nonce, offset: c.offset, length: c.length,
            expected: expected)
    }
}

/// Where a client keeps its block records, the audit log and its reader key.
///
/// Layout: `BLOCK_HEX.json` per block (``BlockRecord``), `audit.log` (``AuditLog`` binary form,
/// hash-chained, appended to) and `reader.key` (the P-256 key-agreement key blocks are sealed
/// for, PEM, mode 0600). Default: `~/.stoq/blocks`.
public struct BlockDirectory: Sendable {
    /// The directory.
    public let path: String

    /// The default directory: `$STOQ_BLOCKS`, else `~/.stoq/blocks`.
    public static var defaultPath: String {
        if let env = ProcessInfo.processInfo.environment["STOQ_BLOCKS"], !env.isEmpty { return env }
        // $HOME first: Foundation's NSHomeDirectory() reads the password database on Linux.
        let home = ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return (home as NSString).appendingPathComponent(".stoq/blocks")
    }

    /// Opens (creating if needed) a block directory.
    public init(path: String = BlockDirectory.defaultPath) throws(HyperMeshError) {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw HyperMeshError(.storage, "cannot create the block directory \(path): \(error.localizedDescription)")
        }
    }

    private func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// The reader key, created on first use.
    public func readerKey() throws(HyperMeshError) -> P256.KeyAgreement.PrivateKey {
        let keyPath = file("reader.key")
        if let text = try? String(contentsOfFile: keyPath, encoding: .utf8) {
            do {
                return try P256.KeyAgreement.PrivateKey(pemRepresentation: text)
            } catch {
                throw HyperMeshError(.storage, "\(keyPath) is not a P-256 private key: \(error)")
            }
        }
        let key = P256.KeyAgreement.PrivateKey()
        guard FileManager.default.createFile(atPath: keyPath, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw HyperMeshError(.storage, "cannot write \(keyPath)")
        }
        return key
    }

    /// Finds a block by its full id or an unambiguous hex prefix (at least 8 digits).
    public func resolve(_ text: String) throws(HyperMeshError) -> BlockID {
        let lower = text.lowercased()
        if let id = BlockID(hex: lower) { return id }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".json") && $0.hasPrefix(lower) }
        guard lower.count >= 8, names.count == 1, let id = BlockID(hex: String(names[0].dropLast(5))) else {
            if lower.count < 8 && !names.isEmpty { throw HyperMeshError(.notFound, "block id prefix '\(text)' is too short; give at least 8 hex digits, or the full id") }
            if names.count > 1 { throw HyperMeshError(.notFound, "block id prefix \(text) is ambiguous in \(path); give more digits, or the full id") }
            throw HyperMeshError(
                .notFound,
                "no block stored from \(path) has an id starting with '\(text)'; a prefix works only for blocks recorded in this block "
                    + "directory (--blocks DIR): for a block stored elsewhere give its full 64-hex-digit id and the storage nodes "
                    + "(--node ADDR,... or --bootstrap ADDR)")
        }
        return id
    }

    /// The record of `block`.
    public func record(_ block: BlockID) throws(HyperMeshError) -> BlockRecord {
        let recordPath = file("\(block.hex).json")
        guard let data = FileManager.default.contents(atPath: recordPath) else {
            throw HyperMeshError(
                .notFound,
                "no record of block \(block.short) in \(path): it was stored from another block directory (--blocks DIR) or machine, "
                    + "or never committed; `stoq block get`, `verify` and `repair` find it on the storage nodes given with --node ADDR,... or --bootstrap ADDR")
        }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(BlockRecord.self, from: data)
        } catch {
            throw HyperMeshError(.storage, "\(recordPath) is not a valid block record: \(error)")
        }
    }

    /// Whether a record of `block` exists.
    public func contains(_ block: BlockID) -> Bool { FileManager.default.fileExists(atPath: file("\(block.hex).json")) }

    /// Writes a record (atomically).
    public func save(_ record: BlockRecord) throws(HyperMeshError) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            try encoder.encode(record).write(to: URL(fileURLWithPath: file("\(record.block).json")), options: .atomic)
        } catch {
            throw HyperMeshError(.storage, "cannot write the record of block \(record.block): \(error.localizedDescription)")
        }
    }

    /// The audit log, loaded and checked.
    /// - Throws: ``HyperMeshError/Code/storage`` when the file does not decode or its chain is broken.
    public func auditLog() throws(HyperMeshError) -> AuditLog {
        guard let data = FileManager.default.contents(atPath: file("audit.log")) else { return AuditLog() }
        let log = try AuditLog(decoding: [UInt8](data))
        if case .broken(let at, let reason) = log.verify() {
            throw HyperMeshError(.storage, "the audit log \(file("audit.log")) is broken at entry \(at): \(reason)")
        }
        return log
    }

    /// Appends events to the audit log (time: since the Unix epoch).
    @discardableResult
    public func appendAudit(_ events: [AuditEvent]) throws(HyperMeshError) -> [AuditEntry] {
        var log = try auditLog()
        let now = Duration.nanoseconds(Int64(Date().timeIntervalSince1970 * 1e9))
        let added = events.map { log.append($0, now: now) }
        let bytes = added.flatMap(AuditLog.encode(entry:))
        let logPath = file("audit.log")
        do {
            if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: bytes)
            try handle.synchronize()
        } catch {
            throw HyperMeshError(.storage, "cannot append to \(logPath): \(error.localizedDescription)")
        }
        return added
    }
}
