import Foundation

/// An in-memory ``ChunkStore`` for tests and simulations.
///
/// `@unchecked Sendable`: all mutable state is accessed only while holding `lock`.
public final class MemoryChunkStore: ChunkStore, @unchecked Sendable {
    private let lock = NSLock()
    private var files: [ChunkID: [UInt8]] = [:]          // "bytes on disk"
    private var chunks: [ChunkID: Int] = [:]              // committed metadata
    private var edges: [ChunkID: Set<ChunkID>] = [:]
    private var refs: [ChunkID: Int] = [:]
    private var kinds: [ChunkID: (String, UInt64)] = [:]
    private var plain: [ChunkID: ChunkID] = [:]
    private var pinned: [ContentID: String] = [:]
    private var access: [ChunkID: Int64] = [:]

    /// An empty store.
    public init() {}

    private func locked<T>(_ f: () throws -> T) rethrows -> T { lock.lock(); defer { lock.unlock() }; return try f() }

    /// Test hook: replaces the bytes held for `id` (simulates damage).
    public func corrupt(_ id: ChunkID, with bytes: [UInt8]?) { locked { files[id] = bytes } }

    public func contains(_ id: ChunkID) throws -> Bool { locked { chunks[id] != nil && files[id] != nil } }

    public func read(_ id: ChunkID) throws -> [UInt8] {
        guard let b = locked({ chunks[id] != nil ? files[id] : nil }) else { throw ContentError(.notFound, "chunk \(id.short) is not in the store") }
        guard ChunkID.of(b) == id else { throw ContentError(.idMismatch, "chunk \(id.short) is damaged: its bytes hash to \(ChunkID.of(b).short); run `stoq store verify --repair` and put the content again") }
        return b
    }

    public func writeChunk(_ id: ChunkID, _ bytes: [UInt8]) throws { locked { files[id] = bytes } }

    public func commit(_ batch: CommitBatch) throws {
        try locked {
            for c in batch.chunks where files[c.id] == nil {
                throw ContentError(.corruptStore, "commit names chunk \(c.id.short) whose bytes were not written")
            }
            for c in batch.chunks { chunks[c.id] = c.size }
            for e in batch.edges where edges[e.parent, default: []].insert(e.child).inserted { refs[e.child, default: 0] += 1 }
            for m in batch.manifests { kinds[m.id] = (m.kind, m.size) }
            for p in batch.plainIndex { plain[p.tag] = p.id }
            for p in batch.pins { pinned[p.id] = p.name }
        }
    }

    public func lookupPlain(_ tags: [ChunkID]) throws -> [ChunkID: ChunkID] {
        locked {
            var out = [ChunkID: ChunkID]()
            for t in tags { if let id = plain[t], chunks[id] != nil { out[t] = id } }
            return out
        }
    }

    public func pin(_ id: ContentID, name: String) throws {
        try locked {
            guard chunks[id.manifest] != nil else { throw ContentError(.notFound, "\(id) is not in the store") }
            pinned[id] = name
        }
    }

    public func unpin(_ id: ContentID) throws {
        try locked { guard pinned.removeValue(forKey: id) != nil else { throw ContentError(.notFound, "\(id) is not pinned") } }
    }

    public func pins() throws -> [Pin] {
        locked { pinned.map { Pin(id: $0.key, name: $0.value, kind: kinds[$0.key.manifest]?.0 ?? "?", size: kinds[$0.key.manifest]?.1 ?? 0) }.sorted { $0.name < $1.name } }
    }

    public func referenceCount(_ id: ChunkID) throws -> Int { locked { refs[id] ?? 0 } }

    public func touch(_ ids: [ChunkID], now: Int64) throws { locked { for i in ids { access[i] = now } } }

    public func gc() throws -> GCReport {
        locked {
            let live = Reachability.closure(roots: pinned.keys.map(\.manifest)) { Array(edges[$0] ?? []) }
            var report = GCReport(removedChunks: 0, freedBytes: 0)
            for (id, size) in chunks where !live.contains(id) {
                chunks[id] = nil; files[id] = nil; kinds[id] = nil; access[id] = nil
                if let children = edges.removeValue(forKey: id) { for c in children { refs[c, default: 1] -= 1 } }
                report.removedChunks += 1; report.freedBytes += Int64(size)
            }
            plain = plain.filter { chunks[$0.value] != nil }
            return report
        }
    }

    @discardableResult
    public func evict(_ ids: [ChunkID]) throws -> Int64 {
        locked {
            var freed: Int64 = 0
            for id in ids where (refs[id] ?? 0) == 0 && pinned[ContentID(id)] == nil {
                guard let size = chunks.removeValue(forKey: id) else { continue }
                files[id] = nil; kinds[id] = nil; access[id] = nil
                if let children = edges.removeValue(forKey: id) { for c in children { refs[c, default: 1] -= 1 } }
                freed += Int64(size)
            }
            plain = plain.filter { chunks[$0.value] != nil }
            return freed
        }
    }

    public func verify(repair: Bool) throws -> VerifyReport {
        locked {
            var r = VerifyReport()
            for (id, _) in chunks {
                r.checked += 1
                guard let b = files[id] else { r.missing.append(id); continue }
                if ChunkID.of(b) != id { r.damaged.append(id) }
            }
            r.orphaned = files.keys.filter { chunks[$0] == nil }
            let live = Reachability.closure(roots: pinned.keys.map(\.manifest)) { Array(edges[$0] ?? []) }
            for id in live where chunks[id] == nil && !r.missing.contains(id) { r.missing.append(id) }
            let bad = Set(r.damaged + r.missing)
            if !bad.isEmpty {
                for p in pinned.keys where !Reachability.closure(roots: [p.manifest], children: { Array(edges[$0] ?? []) }).isDisjoint(with: bad) {
                    r.brokenPins.append(p)
                }
            }
            if repair {
                for id in bad { chunks[id] = nil; files[id] = nil }
                for id in r.orphaned { files[id] = nil }
                r.repaired = true
            }
            return r
        }
    }

    public func stats() throws -> StoreStats {
        locked { StoreStats(chunks: chunks.count, bytes: Int64(chunks.values.reduce(0, +)), pins: pinned.count) }
    }
}
