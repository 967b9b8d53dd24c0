import Testing
import STOQContent
@testable import STOQNode

@Suite struct UploadLedgerTests {
    func tree(_ n: Int) throws -> UploadTree {
        let chunks = (0..<n).map { UploadChunk(hash: ChunkID.of([UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)]), length: 1000 + $0) }
        return try UploadTree(root: .file(UploadFile(contentType: "application/octet-stream", chunks: chunks)))
    }

    @Test func anUploadCommitsOnlyWhenEveryNeededChunkArrived() throws {
        var ledger = UploadLedger<Int>()
        let t0 = ContinuousClock.now
        let id = try ledger.open(owner: 1, tree: try tree(4), name: "x", isPublic: false, needed: [1, 3], now: t0)
        #expect(throws: UploadRefusal.self) { try ledger.takeForCommit(id: id, owner: 1, now: t0) }
        let (chunk, type) = try ledger.beginChunk(id: id, owner: 1, index: 1, length: 1001, now: t0)
        #expect(chunk.length == 1001 && type == "application/octet-stream")
        #expect(ledger.endChunk(id: id, index: 1, stored: true, now: t0) == 1)
        // A chunk that failed is still needed.
        _ = try ledger.beginChunk(id: id, owner: 1, index: 3, length: 1003, now: t0)
        #expect(ledger.endChunk(id: id, index: 3, stored: false, now: t0) == 1)
        _ = try ledger.beginChunk(id: id, owner: 1, index: 3, length: 1003, now: t0)
        #expect(ledger.endChunk(id: id, index: 3, stored: true, now: t0) == 0)
        let s = try ledger.takeForCommit(id: id, owner: 1, now: t0)
        #expect(s.received == 2 && s.receivedBytes == 2004)
        #expect(ledger.count == 0)
    }

    @Test func requestsOutOfBoundsOrFromAnotherConnectionAreRefused() throws {
        var limits = UploadLedger<Int>.Limits()
        limits.perConnection = 2
        limits.total = 3
        limits.chunksInFlight = 1
        var ledger = UploadLedger<Int>(limits: limits)
        let t0 = ContinuousClock.now
        let t = try tree(3)
        let a = try ledger.open(owner: 1, tree: t, name: "a", isPublic: false, needed: [0, 1, 2], now: t0)
        _ = try ledger.open(owner: 1, tree: t, name: "b", isPublic: false, needed: [0], now: t0)
        #expect { try ledger.open(owner: 1, tree: t, name: "c", isPublic: false, needed: [], now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.limitExceeded }
        _ = try ledger.open(owner: 2, tree: t, name: "d", isPublic: false, needed: [], now: t0)
        #expect { try ledger.open(owner: 3, tree: t, name: "e", isPublic: false, needed: [], now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.limitExceeded }
        #expect { try ledger.beginChunk(id: a, owner: 2, index: 0, length: 1000, now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.forbidden }
        #expect { try ledger.beginChunk(id: a, owner: 1, index: 3, length: 1000, now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.badRequest }
        #expect { try ledger.beginChunk(id: a, owner: 1, index: 0, length: 999, now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.badRequest }
        #expect { try ledger.beginChunk(id: 12345, owner: 1, index: 0, length: 1000, now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.badRequest }
        _ = try ledger.beginChunk(id: a, owner: 1, index: 0, length: 1000, now: t0)
        #expect { try ledger.beginChunk(id: a, owner: 1, index: 1, length: 1001, now: t0) } throws: { ($0 as? UploadRefusal)?.code == UploadProtocol.limitExceeded }
        // Idle uploads are dropped; their connection's slots free up.
        ledger.expire(now: t0 + .seconds(301))
        #expect(ledger.count == 0)
        ledger = UploadLedger<Int>(limits: limits)
        _ = try ledger.open(owner: 9, tree: t, name: "z", isPublic: false, needed: [], now: t0)
        ledger.drop(owner: 9)
        #expect(ledger.count == 0)
    }
}
