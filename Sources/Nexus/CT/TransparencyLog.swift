import Crypto
import Foundation
import GRDB

/// An append-only certificate-transparency log in the style of RFC 9162, persisted in SQLite.
///
/// Storage (GRDB, WAL mode through a `DatabasePool`):
/// - `leaves(idx, leaf_hash, entry, timestamp)`: every entry (a certificate's DER) and its leaf hash;
/// - `nodes(level, idx, hash)`: the hash of every *complete perfect* subtree of level ≥ 1. Appending
///   leaf `i` adds one node per trailing one-bit of `i` (amortised one), so a proof needs only
///   O(log n) point reads (every range RFC 9162's recursion visits splits into perfect subtrees);
/// - `heads(tree_size, timestamp, root, signature)`: the signed tree heads issued.
///
/// Before signing a new head the log checks, with a consistency proof computed from its own
/// storage, that the new tree extends the last head; a changed node or leaf hash makes that fail
/// with `.logTampered` instead of signing a forked history. ``verifyIntegrity()`` rechecks
/// everything (entries → leaf hashes → nodes → latest head).
///
/// The class is `Sendable`: all mutable state lives in SQLite behind GRDB's `DatabasePool`,
/// which serialises writes.
public final class TransparencyLog: Sendable {
    private let db: DatabasePool
    private let key: P256.Signing.PrivateKey
    /// The log's public key.
    public var publicKey: P256.Signing.PublicKey { key.publicKey }
    /// SHA-256 of the log's public key (SPKI DER).
    public let logID: NexusHash
    /// The largest entry accepted, in bytes (a certificate chain fits comfortably).
    public static let maxEntrySize = 64 * 1024

    /// SHA-256 of a P-256 public key's SubjectPublicKeyInfo DER.
    public static func logID(of key: P256.Signing.PublicKey) -> NexusHash { NexusHash.sha256(key.derRepresentation) }

    /// Opens (creating if needed) a log stored at `path`.
    /// - Parameters:
    ///   - path: the SQLite file.
    ///   - signingKey: the log key that signs heads and receipts.
    /// - Throws: ``NexusError`` `.logStorageFailure` if the database cannot be opened or migrated.
    public init(path: String, signingKey: P256.Signing.PrivateKey) throws(NexusError) {
        self.key = signingKey
        self.logID = Self.logID(of: signingKey.publicKey)
        do {
            var config = Configuration()
            config.busyMode = .timeout(5)
            db = try DatabasePool(path: path, configuration: config)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1") { db in
                try db.execute(sql: """
                    CREATE TABLE leaves (idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, entry BLOB NOT NULL, timestamp INTEGER NOT NULL);
                    CREATE INDEX leaves_by_hash ON leaves(leaf_hash);
                    CREATE TABLE nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
                    CREATE TABLE heads (tree_size INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, root BLOB NOT NULL, signature BLOB NOT NULL);
                    CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
                    """)
            }
            try migrator.migrate(db)
            let id = Data(logID.bytes)
            try db.write { db in
                if let stored = try Data.fetchOne(db, sql: "SELECT v FROM meta WHERE k = 'log_id'") {
                    guard stored == id else { throw NexusError(.badSignature, "this log database belongs to log \(NexusHash(bytes: stored)?.shortHex ?? "?")…; open it with its own key") }
                } else {
                    try db.execute(sql: "INSERT INTO meta (k, v) VALUES ('log_id', ?)", arguments: [id])
                }
            }
        } catch let e as NexusError {
            throw e
        } catch {
            throw NexusError(.logStorageFailure, "cannot open CT log at \(path): \(error)")
        }
    }

    // MARK: - Storage helpers

    private func storage<T>(_ what: String, _ body: () throws -> T) throws(NexusError) -> T {
        do { return try body() } catch let e as NexusError { throw e } catch {
            throw NexusError(.logStorageFailure, "\(what) failed: \(error)")
        }
    }

    private static func hash(_ data: Data?, _ what: String) throws(NexusError) -> NexusHash {
        guard let data, let h = NexusHash(bytes: data) else {
            throw NexusError(.logTampered, "\(what) is missing or not 32 bytes in the log database")
        }
        return h
    }

    /// Returns a perfect-subtree reader bound to one database connection.
    private static func perfectReader(_ db: Database) -> (Int, UInt64) throws(NexusError) -> NexusHash {
        return { (level: Int, index: UInt64) throws(NexusError) -> NexusHash in
            let data: Data?
            do {
                if level == 0 {
                    data = try Data.fetchOne(db, sql: "SELECT leaf_hash FROM leaves WHERE idx = ?", arguments: [Int64(index)])
                } else {
                    data = try Data.fetchOne(db, sql: "SELECT hash FROM nodes WHERE level = ? AND idx = ?", arguments: [level, Int64(index)])
                }
            } catch { throw NexusError(.logStorageFailure, "reading subtree (\(level), \(index)): \(error)") }
            return try hash(data, "subtree hash (level \(level), index \(index))")
        }
    }

    private static func count(_ db: Database) throws -> UInt64 {
        UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves") ?? 0)
    }

    // MARK: - Appending

    /// Appends a certificate (DER) and returns a signed receipt with its index.
    ///
    /// Appending the same bytes twice returns the first index (and its original timestamp).
    /// - Parameters:
    ///   - entry: the certificate's DER bytes (1 … ``maxEntrySize`` bytes).
    ///   - now: the current time in milliseconds since the Unix epoch.
    public func append(_ entry: [UInt8], now: UInt64) throws(NexusError) -> LogReceipt {
        guard !entry.isEmpty, entry.count <= Self.maxEntrySize else {
            throw NexusError(.lengthLimitExceeded, "a log entry must be 1…\(Self.maxEntrySize) bytes; this one is \(entry.count)")
        }
        let leaf = Merkle.leafHash(entry)
        let (index, timestamp): (UInt64, UInt64) = try storage("append") {
            try db.write { db -> (UInt64, UInt64) in
                if let row = try Row.fetchOne(db, sql: "SELECT idx, timestamp FROM leaves WHERE leaf_hash = ? ORDER BY idx LIMIT 1", arguments: [Data(leaf.bytes)]) {
                    return (UInt64(row["idx"] as Int64), UInt64(row["timestamp"] as Int64))
                }
                let index = try Self.count(db)
                try db.execute(sql: "INSERT INTO leaves (idx, leaf_hash, entry, timestamp) VALUES (?, ?, ?, ?)",
                               arguments: [Int64(index), Data(leaf.bytes), Data(entry), Int64(now)])
                // Complete every perfect subtree this leaf closes.
                var current = leaf, level = 0, i = index
                let read = Self.perfectReader(db)
                while i & 1 == 1 {
                    let left = try read(level, i - 1)
                    current = Merkle.nodeHash(left, current)
                    level += 1; i >>= 1
                    try db.execute(sql: "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", arguments: [level, Int64(i), Data(current.bytes)])
                }
                return (index, now)
            }
        }
        var receipt = LogReceipt(logID: logID, index: index, timestamp: timestamp, leafHash: leaf, signature: [])
        do { receipt.signature = Array(try key.signature(for: receipt.signedBytes).derRepresentation) } catch {
            throw NexusError(.badSignature, "could not sign the receipt: \(error)")
        }
        return receipt
    }

    // MARK: - Reading

    /// The number of entries.
    public func size() throws(NexusError) -> UInt64 { try storage("size") { try db.read { (db: Database) in try Self.count(db) } } }

    /// The entry at `index`, after checking it still hashes to its stored leaf hash.
    /// - Throws: `.invalidIndex`, or `.logTampered` if the stored entry was changed.
    public func entry(at index: UInt64) throws(NexusError) -> [UInt8] {
        let row = try storage("read entry") { try db.read { (db: Database) in try Row.fetchOne(db, sql: "SELECT leaf_hash, entry FROM leaves WHERE idx = ?", arguments: [Int64(index)]) } }
        guard let row else { throw NexusError(.invalidIndex, "the log has no entry \(index)") }
        let entry = [UInt8](row["entry"] as Data)
        guard try Self.hash(row["leaf_hash"], "leaf hash \(index)") == Merkle.leafHash(entry) else {
            throw NexusError(.logTampered, "entry \(index) no longer hashes to its stored leaf hash: the log database was modified")
        }
        return entry
    }

    /// The index of the entry with this leaf hash, or `nil` if it is not logged.
    public func index(ofLeafHash leaf: NexusHash) throws(NexusError) -> UInt64? {
        try storage("lookup") {
            try db.read { (db: Database) in try Int64.fetchOne(db, sql: "SELECT idx FROM leaves WHERE leaf_hash = ? ORDER BY idx LIMIT 1", arguments: [Data(leaf.bytes)]) }
        }.map { UInt64($0) }
    }

    /// `MTH` of the first `size` entries.
    public func rootHash(size: UInt64) throws(NexusError) -> NexusHash {
        try storage("root hash") {
            try db.read { db in
                guard size <= (try Self.count(db)) else { throw NexusError(.invalidTreeSize, "the log has fewer than \(size) entries") }
                return try Merkle.rootHash(size: size, perfect: Self.perfectReader(db))
            }
        }
    }

    /// The inclusion proof for entry `index` in the tree of `size` entries.
    public func inclusionProof(index: UInt64, size: UInt64) throws(NexusError) -> [NexusHash] {
        try storage("inclusion proof") {
            try db.read { db in
                guard size <= (try Self.count(db)) else { throw NexusError(.invalidTreeSize, "the log has fewer than \(size) entries") }
                return try Merkle.inclusionProof(index: index, size: size, perfect: Self.perfectReader(db))
            }
        }
    }

    /// The consistency proof between tree sizes `old` and `new`.
    public func consistencyProof(old: UInt64, new: UInt64) throws(NexusError) -> [NexusHash] {
        try storage("consistency proof") {
            try db.read { db in
                guard new <= (try Self.count(db)) else { throw NexusError(.invalidTreeSize, "the log has fewer than \(new) entries") }
                return try Merkle.consistencyProof(old: old, new: new, perfect: Self.perfectReader(db))
            }
        }
    }

    // MARK: - Heads

    /// The head of the largest size signed so far, or `nil`.
    public func latestHead() throws(NexusError) -> SignedTreeHead? {
        try storage("latest head") { try db.read { (db: Database) in try self.head(db, sql: "SELECT * FROM heads ORDER BY tree_size DESC LIMIT 1", []) } }
    }

    /// The signed head for exactly `size` entries, if one was issued.
    public func head(size: UInt64) throws(NexusError) -> SignedTreeHead? {
        try storage("head") { try db.read { (db: Database) in try self.head(db, sql: "SELECT * FROM heads WHERE tree_size = ?", [Int64(size)]) } }
    }

    private func head(_ db: Database, sql: String, _ args: StatementArguments) throws -> SignedTreeHead? {
        guard let row = try Row.fetchOne(db, sql: sql, arguments: args) else { return nil }
        return SignedTreeHead(logID: logID, treeSize: UInt64(row["tree_size"] as Int64), timestamp: UInt64(row["timestamp"] as Int64),
                                     rootHash: try Self.hash(row["root"], "head root"), signature: [UInt8](row["signature"] as Data))
    }

    /// Signs a head over the current tree (or returns the stored head if the size has not changed).
    ///
    /// Before signing, checks with a consistency proof from storage that the current tree extends
    /// the latest head; if it does not, the database was modified and this throws `.logTampered`.
    /// - Parameter now: the current time in milliseconds since the Unix epoch.
    public func signedTreeHead(now: UInt64) throws(NexusError) -> SignedTreeHead {
        let sth: SignedTreeHead = try storage("sign head") {
            try db.write { db in
                let size = try Self.count(db)
                let read = Self.perfectReader(db)
                let previous = try self.head(db, sql: "SELECT * FROM heads ORDER BY tree_size DESC LIMIT 1", [])
                if let previous {
                    if previous.treeSize == size { return previous }
                    let root = try Merkle.rootHash(size: size, perfect: read)
                    let proof = try Merkle.consistencyProof(old: previous.treeSize, new: size, perfect: read)
                    do {
                        try previous.verify(publicKey: key.publicKey)
                        try Merkle.verifyConsistency(oldSize: previous.treeSize, newSize: size, oldRoot: previous.rootHash, newRoot: root, proof: proof)
                    } catch {
                        throw NexusError(.logTampered, "refusing to sign: the stored tree no longer extends the head of size \(previous.treeSize) (\((error as? NexusError)?.reason ?? String(describing: error))); the log database was modified")
                    }
                }
                guard size > 0 else { throw NexusError(.emptyLog, "the log is empty: append a certificate before asking for a tree head") }
                let root = try Merkle.rootHash(size: size, perfect: read)
                let sth = try SignedTreeHead.sign(treeSize: size, timestamp: now, rootHash: root, key: key)
                try db.execute(sql: "INSERT INTO heads (tree_size, timestamp, root, signature) VALUES (?, ?, ?, ?)",
                               arguments: [Int64(size), Int64(now), Data(root.bytes), Data(sth.signature)])
                return sth
            }
        }
        return sth
    }

    /// An offline-checkable proof that entry `index` is in the tree of `head`.
    public func inclusionBundle(index: UInt64, head: SignedTreeHead) throws(NexusError) -> InclusionBundle {
        let entry = try entry(at: index)
        return InclusionBundle(head: head, index: index, leafHash: Merkle.leafHash(entry), proof: try inclusionProof(index: index, size: head.treeSize))
    }

    /// Checks that a certificate is logged: finds it, signs (or reuses) a head covering it, and
    /// returns a bundle that verifies.
    /// - Throws: `.notLogged` if it is not in the log.
    public func proveLogged(_ entry: [UInt8], now: UInt64) throws(NexusError) -> InclusionBundle {
        guard let index = try index(ofLeafHash: Merkle.leafHash(entry)) else {
            throw NexusError(.notLogged, "the certificate (leaf \(Merkle.leafHash(entry).shortHex)…) is not in log \(logID.shortHex)…")
        }
        let head = try signedTreeHead(now: now)
        let bundle = try inclusionBundle(index: index, head: head)
        try bundle.verify(entry: entry, publicKey: publicKey)
        return bundle
    }

    /// Rechecks the whole store: every entry against its leaf hash, every stored node against its
    /// children, every head's signature and root.
    /// - Returns: the number of entries checked.
    /// - Throws: `.logTampered` naming the first inconsistency.
    @discardableResult
    public func verifyIntegrity() throws(NexusError) -> UInt64 {
        try storage("integrity check") {
            try db.read { db in
                var tree = MerkleTree()
                let rows = try Row.fetchCursor(db, sql: "SELECT idx, leaf_hash, entry FROM leaves ORDER BY idx")
                while let row = try rows.next() {
                    let idx = UInt64(row["idx"] as Int64)
                    guard idx == tree.size else { throw NexusError(.logTampered, "entry \(tree.size) is missing from the log database") }
                    let stored = try Self.hash(row["leaf_hash"], "leaf hash \(idx)")
                    guard stored == Merkle.leafHash([UInt8](row["entry"] as Data)) else {
                        throw NexusError(.logTampered, "entry \(idx) does not hash to its stored leaf hash: the log database was modified")
                    }
                    tree.append(leafHash: stored)
                }
                let nodes = try Row.fetchCursor(db, sql: "SELECT level, idx, hash FROM nodes")
                var count = 0
                while let row = try nodes.next() {
                    let level = row["level"] as Int, idx = row["idx"] as Int64
                    guard level < tree.levels.count, idx < tree.levels[level].count,
                          tree.levels[level][Int(idx)] == (try Self.hash(row["hash"], "node")) else {
                        throw NexusError(.logTampered, "stored subtree hash (level \(level), index \(idx)) does not match its leaves: the log database was modified")
                    }
                    count += 1
                }
                let expected = tree.levels.dropFirst().reduce(0) { $0 + $1.count }
                guard count == expected else { throw NexusError(.logTampered, "the log stores \(count) subtree hashes; \(expected) expected") }
                let heads = try Row.fetchAll(db, sql: "SELECT * FROM heads ORDER BY tree_size")
                for row in heads {
                    let head = try self.head(db, sql: "SELECT * FROM heads WHERE tree_size = ?", [row["tree_size"] as Int64])!
                    do { try head.verify(publicKey: key.publicKey) } catch {
                        throw NexusError(.logTampered, "head of size \(head.treeSize): \((error as? NexusError)?.reason ?? String(describing: error))")
                    }
                    guard head.treeSize <= tree.size, try tree.rootHash(size: head.treeSize) == head.rootHash else {
                        throw NexusError(.logTampered, "the entries no longer produce the signed root of size \(head.treeSize): the log database was modified")
                    }
                }
                return tree.size
            }
        }
    }

    /// For tests and tooling: runs raw SQL against the store (e.g. to simulate tampering).
    public func _unsafeExecute(sql: String, arguments: [Data] = []) throws(NexusError) {
        try storage("raw SQL") { try db.write { (db: Database) in try db.execute(sql: sql, arguments: StatementArguments(arguments)) } }
    }
}

extension TransparencyLog {
    /// The entries from index `from` on whose bytes start with `prefix` (e.g. name bindings,
    /// ``NameOwnerBinding/prefix``), in log order, at most `limit`; entries that do not match are skipped.
    /// - Returns: (index, entry) pairs; empty when the log cannot be read.
    public func entries(withPrefix prefix: [UInt8], from: UInt64, limit: Int = 10_000) -> [(UInt64, [UInt8])] {
        (try? db.read { db -> [(UInt64, [UInt8])] in
            let rows = try Row.fetchAll(db, sql: "SELECT idx, entry FROM leaves WHERE idx >= ? AND substr(entry, 1, ?) = ? ORDER BY idx LIMIT ?",
                                        arguments: [Int64(from), prefix.count, Data(prefix), limit])
            return rows.map { (UInt64($0["idx"] as Int64), Array($0["entry"] as Data)) }
        }) ?? []
    }
}
