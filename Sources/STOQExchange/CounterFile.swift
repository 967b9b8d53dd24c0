import Foundation
import Logging

/// A node's totals that survive restarts, kept in `STORE/counters.json`: what it served, its
/// cache's hits, misses and upstream bytes, and the uploads it took. The node adds what it counts
/// while running to the totals it loaded, writes them atomically every few seconds and at
/// shutdown, and starts its Prometheus counters from them.
///
/// A missing file starts at zero (logged at info); a corrupt or unreadable one too (logged as a
/// warning) — never fatal. Negative or absurd values in the file are taken as zero.
public struct PersistentCounters: Codable, Sendable, Equatable {
    /// The file's format version.
    public var version = 1
    /// Chunk bytes served to peers.
    public var servedBytes = 0
    /// Chunk responses served to peers.
    public var servedChunks = 0
    /// An edge's reads answered from its cache.
    public var cacheHits = 0
    /// An edge's reads that went upstream.
    public var cacheMisses = 0
    /// Bytes an edge fetched from upstream.
    public var cacheUpstreamBytes = 0
    /// Uploads committed into this origin.
    public var uploads = 0
    /// Chunk bytes received in uploads.
    public var uploadBytes = 0

    /// All zero.
    public init() {}

    /// The file name in the store directory.
    public static let fileName = "counters.json"

    /// Each counter of `self` plus the one of `other`.
    public func adding(_ other: PersistentCounters) -> PersistentCounters {
        var sum = self
        sum.servedBytes = Self.add(servedBytes, other.servedBytes)
        sum.servedChunks = Self.add(servedChunks, other.servedChunks)
        sum.cacheHits = Self.add(cacheHits, other.cacheHits)
        sum.cacheMisses = Self.add(cacheMisses, other.cacheMisses)
        sum.cacheUpstreamBytes = Self.add(cacheUpstreamBytes, other.cacheUpstreamBytes)
        sum.uploads = Self.add(uploads, other.uploads)
        sum.uploadBytes = Self.add(uploadBytes, other.uploadBytes)
        return sum
    }

    private static func add(_ a: Int, _ b: Int) -> Int { a.addingReportingOverflow(b).overflow ? Int.max : a + b }

    /// Every counter clamped to 0...2^62 (a hand-edited or damaged file cannot make one negative).
    public var bounded: PersistentCounters {
        func clamp(_ v: Int) -> Int { min(max(v, 0), 1 << 62) }
        var c = self
        c.servedBytes = clamp(servedBytes)
        c.servedChunks = clamp(servedChunks)
        c.cacheHits = clamp(cacheHits)
        c.cacheMisses = clamp(cacheMisses)
        c.cacheUpstreamBytes = clamp(cacheUpstreamBytes)
        c.uploads = clamp(uploads)
        c.uploadBytes = clamp(uploadBytes)
        return c
    }

    /// Reads the totals in `path`: zero when it is missing (logged at info) or corrupt (logged
    /// as a warning by ``StateFile``).
    public static func load(path: String, logger: Logger) -> PersistentCounters {
        guard FileManager.default.fileExists(atPath: path) else {
            logger.info("no saved counters; starting at zero", metadata: ["file": "\(path)"])
            return PersistentCounters()
        }
        guard let loaded = StateFile.load(PersistentCounters.self, path: path, logger: logger) else { return PersistentCounters() }
        return loaded.bounded
    }

    /// Writes the totals to `path` atomically.
    public func save(path: String) throws {
        try StateFile.save(self, path: path)
    }

    // Every key optional on decoding: a file from an older version lacks some.
    private enum CodingKeys: String, CodingKey {
        case version, servedBytes, servedChunks, cacheHits, cacheMisses, cacheUpstreamBytes, uploads, uploadBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 1
        servedBytes = try c.decodeIfPresent(Int.self, forKey: .servedBytes) ?? 0
        servedChunks = try c.decodeIfPresent(Int.self, forKey: .servedChunks) ?? 0
        cacheHits = try c.decodeIfPresent(Int.self, forKey: .cacheHits) ?? 0
        cacheMisses = try c.decodeIfPresent(Int.self, forKey: .cacheMisses) ?? 0
        cacheUpstreamBytes = try c.decodeIfPresent(Int.self, forKey: .cacheUpstreamBytes) ?? 0
        uploads = try c.decodeIfPresent(Int.self, forKey: .uploads) ?? 0
        uploadBytes = try c.decodeIfPresent(Int.self, forKey: .uploadBytes) ?? 0
    }
}
