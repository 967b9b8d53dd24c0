import Foundation
import Testing
@testable import STOQContent

@Suite struct ChunkingTests {
    @Test func fastCDCRespectsBounds() throws {
        let cdc = try FastCDC()
        var rng = SeededRNG(seed: 1)
        let data = rng.bytes(8 << 20)
        let ends = cdc.boundaries(data)
        var prev = 0
        for (i, e) in ends.enumerated() {
            let size = e - prev
            #expect(size <= cdc.maxSize)
            if i < ends.count - 1 { #expect(size >= cdc.minSize) }
            prev = e
        }
        #expect(ends.last == data.count)
        let avg = data.count / ends.count
        #expect(avg > 8 << 10 && avg < 32 << 10, "average \(avg)")
    }

    @Test func unrolledLoopEqualsByteAtATime() throws {
        // Reference: the textbook one-byte gear loop with the same masks.
        for seed in UInt64(1)...6 {
            let cdc = try FastCDC(minSize: 256 + Int(seed % 3), avgSize: 1024 + Int(seed), maxSize: 8192 + Int(seed % 4))
            var rng = SeededRNG(seed: seed)
            let data = rng.bytes(1 << 20)
            func reference(_ d: ArraySlice<UInt8>) -> Int {
                var n = d.count
                if n <= cdc.minSize { return n }
                if n > cdc.maxSize { n = cdc.maxSize }
                let center = min(cdc.avgSize, n)
                var h: UInt64 = 0
                for i in cdc.minSize..<n {
                    h = (h << 1) &+ FastCDC.gear[Int(d[d.startIndex + i])]
                    if h & (i < center ? cdc.maskS : cdc.maskL) == 0 { return i + 1 }
                }
                return n
            }
            var pos = 0
            var ref = [Int]()
            while pos < data.count { pos += reference(data[pos...]); ref.append(pos) }
            #expect(cdc.boundaries(data) == ref, "seed \(seed)")
        }
    }

    @Test(arguments: [1, 2, 3])
    func parallelEqualsSequential(workers: Int) throws {
        for seed: UInt64 in [7, 8, 9] {
            var rng = SeededRNG(seed: seed)
            let size = 3 * (2 << 20) + Int(rng.next() % 100_000)
            let data = rng.bytes(size)
            let cdc = try FastCDC(minSize: 4096, avgSize: 16384, maxSize: 65536)
            let expected = cdc.boundaries(data)
            // Small segments force many seams.
            let streamer = ChunkStreamer(chunker: cdc, workers: workers, segmentSize: 256 << 10)
            let recs = try streamer.records(MemorySource(data))
            #expect(recs.map { Int($0.offset) + $0.length } == expected, "seed \(seed) workers \(workers)")
            var prev: Int64 = 0
            for r in recs {
                #expect(r.offset == prev)
                prev = r.offset + Int64(r.length)
                #expect(r.hash == ChunkID.of(data[Int(r.offset)..<Int(prev)]))
            }
        }
    }

    @Test func insertionMovesFewChunks() throws {
        let cdc = try FastCDC(minSize: 2048, avgSize: 8192, maxSize: 65536)
        let a = textLike(2 << 20, seed: 3)
        var b = a
        b.insert(contentsOf: Array("an edit in the middle".utf8), at: 1 << 20)
        func ids(_ d: [UInt8]) -> Set<ChunkID> { Set(try! ChunkStreamer(chunker: cdc, workers: 1).records(MemorySource(d)).map { $0.hash! }) }
        let ia = ids(a), ib = ids(b)
        #expect(ia.intersection(ib).count >= ia.count - 3)
    }

    @Test func fixedChunker() throws {
        let f = try FixedSizeChunker(size: 4096)
        let recs = try ChunkStreamer(chunker: f, workers: 2, segmentSize: 16384).records(MemorySource(Array(repeating: 7, count: 10000 + 8192 * 5)))
        #expect(recs.map(\.length).dropLast().allSatisfy { $0 == 4096 })
        #expect(recs.reduce(0) { $0 + $1.length } == 10000 + 8192 * 5)
        #expect(throws: ContentError(.invalidArgument, "")) { try FixedSizeChunker(size: 1) }
        #expect(throws: ContentError(.invalidArgument, "")) { try FastCDC(minSize: 10, avgSize: 5, maxSize: 1) }
    }

    @Test func policyPicksAverageByType() throws {
        let p = ChunkingPolicy.standard
        #expect(p.average(for: "text/plain") == 8192)
        #expect(p.average(for: "video/mp4") == 262_144)
        #expect(p.average(for: "application/octet-stream") == 16384)
        #expect(try p.chunker(for: "image/png").avgSize == 262_144)
        #expect(ContentType.guess(name: "a.c", head: []) == "text/x-c")
        #expect(ContentType.guess(name: "x", head: [0x1F, 0x8B, 8]) == "application/gzip")
    }

    @Test func emptyAndTinyInputs() throws {
        let s = ChunkStreamer(chunker: try FastCDC())
        #expect(try s.records(MemorySource([])).isEmpty)
        let one = try s.records(MemorySource([1, 2, 3]))
        #expect(one.count == 1 && one[0].length == 3)
    }

    @Test func chunkIDForms() throws {
        let id = ChunkID.of(Array("abc".utf8))
        #expect(id.hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(id.short == "ba7816bf8f01")
        #expect(ChunkID(hex: id.hex) == id)
        let cid = ContentID(id)
        #expect(cid.description.hasPrefix("stoq:") && cid.description.count == 57)
        #expect(ContentID(cid.description) == cid)
        #expect(ContentID("stoq:" + id.hex) == cid)
        #expect(ContentID("stoq:!!") == nil)
        #expect(ContentID(String(cid.description.dropLast()) + "9") == nil)
    }

    /// Seams that never re-synchronise (max-size chunks of a constant run, offset differently in each
    /// segment) and seams inside mixed data: the parallel chain list still equals the sequential one.
    @Test(arguments: [2, 3])
    func lowEntropySeamsEqualSequential(workers: Int) throws {
        var rng = SeededRNG(seed: 77)
        let data = [UInt8](repeating: 0, count: 700_000) + rng.bytes(400_000) + [UInt8](repeating: 0x5A, count: 900_123)
        let cdc = try FastCDC(minSize: 1024, avgSize: 4096, maxSize: 65536)
        let expected = cdc.boundaries(data)
        for seg in [131_072, 200_000, 1 << 20] {
            let recs = try ChunkStreamer(chunker: cdc, workers: workers, segmentSize: seg).records(MemorySource(data))
            #expect(recs.map { Int($0.offset) + $0.length } == expected, "segment \(seg) workers \(workers)")
            #expect(recs.allSatisfy { r in r.hash == ChunkID.of(data[Int(r.offset)..<(Int(r.offset) + r.length)]) })
        }
    }

    /// Files read with pread into pooled buffers (several files, one pool, more segments than buffers)
    /// give the same chunks and bytes as the in-memory source.
    @Test func fileSourceWithSharedPoolEqualsMemory() throws {
        let dir = tempDir("pool")
        let cdc = try FastCDC(minSize: 2048, avgSize: 8192, maxSize: 65536)
        let pool = SegmentBufferPool(capacity: 2)
        for seed: UInt64 in [1, 2, 3] {
            var rng = SeededRNG(seed: seed)
            let data = rng.bytes(1_500_000 + Int(seed) * 70_001)
            let path = dir + "/f\(seed)"
            try Data(data).write(to: URL(fileURLWithPath: path))
            let streamer = ChunkStreamer(chunker: cdc, workers: 2, segmentSize: 262_144, buffers: pool)
            var got = [UInt8]()
            var recs = [ChunkRecord]()
            try streamer.forEachChunk(try FileSource(path: path)) { r, raw in recs.append(r); got += raw }
            #expect(got == data, "seed \(seed)")
            #expect(recs == (try ChunkStreamer(chunker: cdc, workers: 1).records(MemorySource(data))), "seed \(seed)")
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A batch callback that throws stops the stream (no hang, no further batches), and the error arrives.
    @Test func throwingBatchStopsTheStream() throws {
        struct Stop: Error {}
        var rng = SeededRNG(seed: 5)
        let data = rng.bytes(3_000_000)
        let streamer = ChunkStreamer(chunker: try FastCDC(minSize: 2048, avgSize: 8192, maxSize: 65536), workers: 2, segmentSize: 131_072)
        var batches = 0
        #expect(throws: Stop.self) {
            try streamer.forEachBatch(MemorySource(data)) { _ in
                batches += 1
                if batches == 3 { throw Stop() }
            }
        }
        #expect(batches == 3)
    }
}
