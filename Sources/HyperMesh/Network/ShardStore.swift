import Foundation

/// A storage node's shards and manifest replicas on disk, each verified by SHA-256 when read.
///
/// Layout under ``directory``: `BLOCK_HEX/INDEX-SHA256_HEX` for shards (the name carries the hash
/// the bytes must have) and `BLOCK_HEX/manifest` for a manifest replica. Files are written to a
/// temporary name, fsynced and renamed, so a crash leaves either the old state or the new one.
/// A read re-hashes the file: bytes changed on disk (bit rot, tampering) are reported as
/// ``ShardRead/corrupt`` and never served.
///
/// `@unchecked Sendable`: ``directory`` is immutable; the counters are guarded by `lock`; file
/// operations on distinct names are independent and a same-name race ends in one atomic rename.
public final class ShardStore: @unchecked Sendable {
    /// The directory holding the shards.
    public let directory: String
    private let lock = NSLock()
    private var corruptFound = 0

    /// Opens (creating if needed) a shard store.
    /// - Throws: ``HyperMeshError/Code/storage`` when the directory cannot be created.
    public init(directory: String) throws(HyperMeshError) {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw HyperMeshError(.storage, "cannot create the shard directory \(directory): \(error.localizedDescription)")
        }
    }

    /// The outcome of reading a shard.
    public enum ShardRead: Sendable {
        /// The verified bytes.
        case found([UInt8])
        /// Not held.
        case missing
        /// Held, but the bytes no longer hash to the value they were stored with.
        case corrupt(expected: Digest256, actual: Digest256)
    }

    private func blockDirectory(_ block: BlockID) -> String {
        (directory as NSString).appendingPathComponent(block.hex)
    }

    /// The path of shard `index` of `block` when held (tests use it to damage a shard).
    public func path(block: BlockID, index: Int) -> String? {
        let dir = blockDirectory(block)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return nil }
        return names.first { $0.hasPrefix("\(index)-") && !$0.hasSuffix(".tmp") }.map { (dir as NSString).appendingPathComponent($0) }
    }

    /// Stores shard `index` of `block` after checking its SHA-256.
    /// - Returns: the hash the bytes were stored under.
    /// - Throws: ``HyperMeshError/Code/shardCorrupted`` when the bytes do not hash to `hash`,
    ///   ``HyperMeshError/Code/storage`` when the file cannot be written.
    @discardableResult
    public func put(block: BlockID, index: Int, bytes: [UInt8], hash: Digest256) throws(HyperMeshError) -> Digest256 {
        let actual = Digest256.hashing(bytes)
        guard actual == hash else {
            throw HyperMeshError(.shardCorrupted, "shard \(index) of \(block.short) hashes to \(actual.short), not \(hash.short)")
        }
        if let old = path(block: block, index: index) { try? FileManager.default.removeItem(atPath: old) }
        try writeDurably(bytes, to: (blockDirectory(block) as NSString).appendingPathComponent("\(index)-\(hash.hex)"))
        return hash
    }

    /// The shards of `block` held, by index, each with the hash it was stored under (from the file
    /// names: nothing is re-hashed). At most ``ErasureCoder/maximumTotalShards`` entries.
    public func held(block: BlockID) -> [(index: Int, hash: Digest256)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: blockDirectory(block)) else { return [] }
        var out: [Int: Digest256] = [:]
        for name in names where !name.hasSuffix(".tmp") {
            let parts = name.split(separator: "-", maxSplits: 1)
            guard parts.count == 2, let index = Int(parts[0]), (0..<ErasureCoder.maximumTotalShards).contains(index),
                let hash = Digest256(hex: String(parts[1]))
            else { continue }
            out[index] = hash
        }
        return out.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Reads and verifies shard `index` of `block`.
    public func read(block: BlockID, index: Int) -> ShardRead {
        guard let path = path(block: block, index: index), let data = FileManager.default.contents(atPath: path) else { return .missing }
        let name = (path as NSString).lastPathComponent
        guard let expected = Digest256(hex: String(name.drop { $0 != "-" }.dropFirst())) else { return .missing }
        let bytes = [UInt8](data)
        let actual = Digest256.hashing(bytes)
        guard actual == expected else {
            lock.withLock { corruptFound += 1 }
            return .corrupt(expected: expected, actual: actual)
        }
        return .found(bytes)
    }

    /// Deletes shard `index` of `block` (no error when absent).
    public func delete(block: BlockID, index: Int) {
        if let path = path(block: block, index: index) { try? FileManager.default.removeItem(atPath: path) }
        removeBlockDirectoryIfEmpty(block)
    }

    /// Keeps a manifest replica.
    public func putManifest(_ manifest: BlockManifest) throws(HyperMeshError) {
        try writeDurably(manifest.encoded(), to: (blockDirectory(manifest.blockID) as NSString).appendingPathComponent("manifest"))
    }

    /// A held manifest replica, decoded (and so checked) before it is returned.
    public func manifest(block: BlockID) -> BlockManifest? {
        let path = (blockDirectory(block) as NSString).appendingPathComponent("manifest")
        guard let data = FileManager.default.contents(atPath: path), let m = try? BlockManifest(decoding: [UInt8](data)),
            m.blockID == block
        else { return nil }
        return m
    }

    /// Forgets a manifest replica.
    public func deleteManifest(block: BlockID) {
        try? FileManager.default.removeItem(atPath: (blockDirectory(block) as NSString).appendingPathComponent("manifest"))
        removeBlockDirectoryIfEmpty(block)
    }

    /// Shards held and their bytes, and how many corrupt shards reads have found.
    public func stats() -> (shards: Int, bytes: Int, corruptFound: Int) {
        var shards = 0
        var bytes = 0
        let fm = FileManager.default
        for block in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] {
            let dir = (directory as NSString).appendingPathComponent(block)
            for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name != "manifest" && !name.hasSuffix(".tmp") {
                shards += 1
                let attributes = try? fm.attributesOfItem(atPath: (dir as NSString).appendingPathComponent(name))
                bytes += (attributes?[.size] as? NSNumber)?.intValue ?? 0
            }
        }
        return (shards, bytes, lock.withLock { corruptFound })
    }

    /// Free bytes on the store's file system.
    public func freeBytes() -> UInt64 {
        let attributes = try? FileManager.default.attributesOfFileSystem(forPath: directory)
        return (attributes?[.systemFreeSize] as? NSNumber)?.uint64Value ?? 0
    }

    private func removeBlockDirectoryIfEmpty(_ block: BlockID) {
        let dir = blockDirectory(block)
        if let names = try? FileManager.default.contentsOfDirectory(atPath: dir), names.isEmpty {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    private func writeDurably(_ bytes: [UInt8], to path: String) throws(HyperMeshError) {
        let dir = (path as NSString).deletingLastPathComponent
        let temporary = path + ".\(UInt64.random(in: 0 ... .max)).tmp"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
                throw HyperMeshError(.storage, "cannot create \(temporary)")
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try handle.write(contentsOf: bytes)
            try handle.synchronize()
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: temporary, toPath: path)
        } catch let error as HyperMeshError {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw HyperMeshError(.storage, "cannot write \(path): \(error.localizedDescription); check space and permissions")
        }
    }
}
