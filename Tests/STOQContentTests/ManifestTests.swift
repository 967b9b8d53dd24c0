import Testing
@testable import STOQContent

@Suite struct ManifestTests {
    func sampleFile(_ rng: inout SeededRNG, count: Int) -> FileManifest {
        var entries = [FileManifest.Entry]()
        var off: UInt64 = 0
        for _ in 0..<count {
            let size = UInt64(1 + rng.next() % 100_000)
            entries.append(.init(id: ChunkID(bytes: rng.bytes(32))!, offset: off, size: size))
            off += size
        }
        return FileManifest(kind: .leaf, contentType: "text/plain", totalSize: off, entries: entries,
                            sealedKeys: count == 0 ? [] : rng.bytes(28 + 32 * count))
    }

    @Test func seededRoundTrips() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededRNG(seed: seed)
        for _ in 0..<50 {
            let m = sampleFile(&rng, count: Int(rng.next() % 200))
            #expect(try FileManifest.decode(m.encode()) == m, "seed \(seed)")
        }
        let d = try DirectoryManifest(entries: [
            .init(name: "b.txt", mode: 0o644, kind: .file, id: ContentID(ChunkID.of([1])), size: 10),
            .init(name: "a", mode: 0o755, kind: .directory, id: ContentID(ChunkID.of([2])), size: 20),
            .init(name: "ünïcode", mode: 0o600, kind: .file, id: ContentID(ChunkID.of([3])), size: 0),
        ])
        #expect(d.entries.map(\.name) == ["a", "b.txt", "ünïcode"])
        #expect(try DirectoryManifest.decode(d.encode()) == d)
        #expect(try AnyManifest.decode(d.encode()) == .directory(d))
    }

    @Test func truncatedAndForgedManifestsAreRejected() throws {
        var rng = SeededRNG(seed: 42)
        let m = sampleFile(&rng, count: 10)
        let bytes = m.encode()
        for cut in [0, 3, 4, 5, 20, bytes.count / 2, bytes.count - 1] {
            #expect(throws: ContentError(.malformed, "")) { try FileManifest.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: ContentError(.malformed, "")) { try FileManifest.decode(bytes + [0]) }
        // Forged entry id: the Merkle root no longer matches.
        var forged = bytes
        let firstEntry = 4 + 1 + 1 + 1 + 10 + 8 + 4 + 32
        forged[firstEntry] ^= 0xFF
        do {
            _ = try FileManifest.decode(forged)
            Issue.record("forged manifest decoded")
        } catch let e as ContentError {
            #expect(e.code == .malformed && e.reason.contains("Merkle"))
        }
        // Forged size: entries no longer add up.
        var sized = bytes
        sized[firstEntry + 32 + 8 + 3] ^= 1
        #expect(throws: ContentError(.malformed, "")) { try FileManifest.decode(sized) }
        // Future version.
        var v = bytes
        v[4] = 2
        #expect(throws: ContentError(.unsupportedVersion, "")) { try FileManifest.decode(v) }
        // A huge declared count is bounded before allocation.
        var huge = bytes
        huge[4 + 1 + 1 + 1 + 10 + 8] = 0xFF
        #expect(throws: ContentError(.malformed, "")) { try FileManifest.decode(huge) }
    }

    @Test func directoryNamesAreValidated() throws {
        for bad in ["", ".", "..", "a/b", "../x", "a\u{0}b", String(repeating: "x", count: 256)] {
            #expect(throws: ContentError(.invalidName, "")) {
                try DirectoryManifest(entries: [.init(name: bad, mode: 0o644, kind: .file, id: ContentID(ChunkID.of([1])), size: 1)])
            }
        }
        // A forged encoding with "../evil" is refused by the decoder too.
        let ok = try DirectoryManifest(entries: [.init(name: "..aevil", mode: 0o644, kind: .file, id: ContentID(ChunkID.of([1])), size: 1)])
        var bytes = ok.encode()
        let nameAt = 4 + 1 + 4 + 32 + 2
        bytes.replaceSubrange(nameAt..<(nameAt + 7), with: Array("../evil".utf8))
        #expect(throws: ContentError(.invalidName, "")) { try DirectoryManifest.decode(bytes) }
    }

    @Test func fuzzGarbage() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededRNG(seed: seed)
        var r2 = SeededRNG(seed: 1)
        let valid = sampleFile(&r2, count: 5).encode()
        for i in 0..<5000 {
            switch i % 3 {
            case 0: AnyManifest.fuzz(rng.bytes(Int(rng.next() % 600)))
            case 1:
                var b = valid
                for _ in 0..<(1 + rng.next() % 4) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                AnyManifest.fuzz(b)
            default:
                AnyManifest.fuzz(Array("STQD".utf8) + [1] + rng.bytes(Int(rng.next() % 300)))
            }
        }
        print("fuzzGarbage seed \(seed): no crash")
    }
}
