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

    @Test func linkEntriesNeedVersionTwoAndRoundTrip() throws {
        let file = DirectoryManifest.Entry(name: "a.txt", mode: 0o644, kind: .file, id: ContentID(ChunkID.of([1])), size: 10)
        // Without links: version 1, the bytes older readers know.
        let plain = try DirectoryManifest(entries: [file])
        #expect(plain.version == 1 && plain.encode()[4] == 1)
        let d = try DirectoryManifest(entries: [
            file,
            .init(name: "up", linkTo: "../../etc/passwd"),
            .init(name: "abs", linkTo: "/usr/lib/x86_64-linux-gnu/libc.so.6", mode: 0o777),
            .init(name: "sub", mode: 0o700, kind: .directory, id: ContentID(ChunkID.of([2])), size: 0),
        ])
        let bytes = d.encode()
        #expect(bytes[4] == 2)
        let back = try DirectoryManifest.decode(bytes)
        #expect(back == d)
        #expect(back.entries.first { $0.name == "up" }?.target == "../../etc/passwd")
        // A link names no chunk: nothing to fetch, no edge.
        #expect(AnyManifest.directory(back).children == [ChunkID.of([1]), ChunkID.of([2])])
        // A link in a version 1 manifest, and a version 2 manifest without links, are refused.
        var v1 = bytes
        v1[4] = 1
        #expect(throws: ContentError(.malformed, "")) { try DirectoryManifest.decode(v1) }
        var v2 = plain.encode()
        v2[4] = 2
        #expect(throws: ContentError(.malformed, "")) { try DirectoryManifest.decode(v2) }
        var v3 = bytes
        v3[4] = 3
        #expect(throws: ContentError(.unsupportedVersion, "")) { try DirectoryManifest.decode(v3) }
        // A changed target no longer matches the Merkle root.
        var forged = bytes
        let passwd = Array("passwd".utf8)
        let at = try #require((0...(forged.count - passwd.count)).first { Array(forged[$0..<($0 + passwd.count)]) == passwd })
        forged[at] = UInt8(ascii: "q")
        #expect(throws: ContentError.self) { try DirectoryManifest.decode(forged) }
        // Bad targets are refused on both sides.
        for bad in ["", "a\u{0}b", String(repeating: "x", count: 4096)] {
            #expect(throws: ContentError.self) { try DirectoryManifest(entries: [.init(name: "l", linkTo: bad)]) }
        }
        // A link entry's name is checked like any other: "../evil" never decodes.
        let ok = try DirectoryManifest(entries: [.init(name: "..aevil", linkTo: "/tmp")])
        var escape = ok.encode()
        let nameAt = 4 + 1 + 4 + 32 + 2
        escape.replaceSubrange(nameAt..<(nameAt + 7), with: Array("../evil".utf8))
        #expect(throws: ContentError(.invalidName, "")) { try DirectoryManifest.decode(escape) }
        // Truncations of a version 2 manifest fail cleanly.
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: ContentError.self) { try DirectoryManifest.decode(Array(bytes.prefix(cut))) }
        }
    }

    @Test func fuzzGarbage() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededRNG(seed: seed)
        var r2 = SeededRNG(seed: 1)
        let valid = sampleFile(&r2, count: 5).encode()
        let withLink = (try? DirectoryManifest(entries: [
            .init(name: "f", mode: 0o644, kind: .file, id: ContentID(ChunkID.of([9])), size: 3), .init(name: "l", linkTo: "../f"),
        ]).encode()) ?? []
        for i in 0..<5000 {
            switch i % 3 {
            case 0: AnyManifest.fuzz(rng.bytes(Int(rng.next() % 600)))
            case 1:
                var b = valid
                for _ in 0..<(1 + rng.next() % 4) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                AnyManifest.fuzz(b)
            default:
                AnyManifest.fuzz(Array("STQD".utf8) + [UInt8(1 + i % 2)] + rng.bytes(Int(rng.next() % 300)))
                var b = withLink
                for _ in 0..<(1 + rng.next() % 4) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                AnyManifest.fuzz(b)
            }
        }
        print("fuzzGarbage seed \(seed): no crash")
    }
}
