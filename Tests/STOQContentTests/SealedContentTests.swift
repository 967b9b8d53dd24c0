import Crypto
import Foundation
import Testing
@testable import STOQContent

/// Issue 15 items 2 and 3: sealed private content (encrypted manifests behind a clear chunk index)
/// and content keys wrapped for one reader (``ReaderKeyEnvelope``, version 2 tickets).
@Suite struct SealedContentTests {
    /// A small tree with names and a type that must not reach the store in the clear.
    func tree() throws -> String {
        let dir = tempDir("stoq-sealed-src")
        try FileManager.default.createDirectory(atPath: dir + "/quarterly-plans", withIntermediateDirectories: true)
        try Data(textLike(70_000, seed: 5)).write(to: URL(fileURLWithPath: dir + "/quarterly-plans/merger-memo.txt"))
        try Data("hello sealed world\n".utf8).write(to: URL(fileURLWithPath: dir + "/top-secret-notes.md"))
        try Data().write(to: URL(fileURLWithPath: dir + "/empty-marker"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link-to-memo", withDestinationPath: "quarterly-plans/merger-memo.txt")
        return dir
    }

    /// Every byte under a directory (chunk files, index database, keyrings), concatenated.
    func allBytes(under dir: String) throws -> [UInt8] {
        var out = [UInt8]()
        let e = FileManager.default.enumerator(atPath: dir)!
        while let rel = e.nextObject() as? String {
            var isDir: ObjCBool = false
            let p = dir + "/" + rel
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue else { continue }
            out += (try? Data(contentsOf: URL(fileURLWithPath: p))).map { Array($0) } ?? []
        }
        return out
    }

    func contains(_ hay: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard hay.count >= n.count else { return false }
        for i in 0...(hay.count - n.count) where hay[i] == n[0] && Array(hay[i..<(i + n.count)]) == n { return true }
        return false
    }

    @Test func aSealedPutStoresNoNamesAndReadsBackWithItsKey() throws {
        let source = try tree()
        let storeDir = tempDir("stoq-sealed-store")
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: storeDir) }
        let store = try DiskChunkStore(directory: storeDir)
        let keys = PublisherKeys.random()
        let key = PublicKeyring.newKey()
        let report = try ContentPublisher(store: store, keys: keys).putSealed(path: source, contentKey: key)
        // The root is a sealed index: chunk ids and sizes in the clear, nothing else.
        let root = try SealedIndex.decode(store.read(report.id.manifest))
        #expect(root.sealedRoot.count == SealedIndex.sealedRootLength)
        #expect(root.entries.allSatisfy { $0.kind == .chunk })
        #expect(root.entries.count >= 6, "data chunks and the sealed manifests of both directories and three files")
        let stored = try allBytes(under: storeDir)
        for name in ["quarterly-plans", "merger-memo", "top-secret-notes", "empty-marker", "link-to-memo", "text/markdown", "text/plain", "STQD", "STQM"] {
            #expect(!contains(stored, name), "the store holds \(name) in the clear")
        }
        // The reader with the content key gets the files back, links and modes included.
        let out = tempDir("stoq-sealed-out") + "/restored"
        defer { try? FileManager.default.removeItem(atPath: Posix.parent(out)) }
        let r = try ContentReader(store: store, readKey: key).restore(report.id, to: out)
        #expect(r.files == 3 && r.links == 1 && r.directories == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/quarterly-plans/merger-memo.txt")) == Data(textLike(70_000, seed: 5)))
        #expect(try String(contentsOfFile: out + "/top-secret-notes.md", encoding: .utf8) == "hello sealed world\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/link-to-memo") == "quarterly-plans/merger-memo.txt")
        // Another key, or the publisher's read key, opens nothing.
        #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: store, readKey: PublicKeyring.newKey()).plainSize(report.id) }
        #expect(throws: ContentError(.decryptionFailed, "")) { try ContentReader(store: store, keys: keys).plainSize(report.id) }
        #expect(try ContentReader(store: store, readKey: key).plainSize(report.id) == 70_000 + 19)
    }

    @Test func aSealedStoreVerifiesAndRebuildsItsIndex() throws {
        let source = try tree()
        let storeDir = tempDir("stoq-sealed-rebuild")
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: storeDir) }
        let key = PublicKeyring.newKey()
        let id: ContentID
        do {
            let store = try DiskChunkStore(directory: storeDir)
            id = try ContentPublisher(store: store, keys: .random()).putSealed(path: source, contentKey: key).id
            let report = try store.verify(repair: false)
            #expect(report.isClean && report.orphaned.isEmpty, "\(report)")
        }
        // The index lost: rebuilt from the chunk files, the sealed index pinned again as a root,
        // nothing orphaned (the index names every chunk), and the content still reads.
        try FileManager.default.removeItem(atPath: storeDir + "/meta.sqlite")
        let store = try DiskChunkStore(directory: storeDir)
        #expect(store.rebuilt != nil)
        #expect(try store.pins().map(\.id) == [id])
        let report = try store.verify(repair: true)
        #expect(report.orphaned.isEmpty && report.quarantinedFiles == 0, "\(report)")
        #expect(try ContentReader(store: store, readKey: key).plainSize(id) == 70_000 + 19)
    }

    @Test func aSealedFileReadsAndSealsDeterministically() throws {
        let store = MemoryChunkStore()
        let publisher = ContentPublisher(store: store, keys: .random(), fanout: 2)
        let bytes = textLike(200_000, seed: 9)
        let key = PublicKeyring.newKey()
        let a = try publisher.putSealed(bytes: bytes, contentKey: key, contentType: "text/plain")
        #expect(try ContentReader(store: store, readKey: key).readFile(a.id) == bytes)
        // The same bytes and key give the same id (the seals are synthetic-IV); another key another id.
        #expect(try publisher.putSealed(bytes: bytes, contentKey: key).id == a.id)
        let b = try publisher.putSealed(bytes: bytes, contentKey: PublicKeyring.newKey())
        #expect(b.id != a.id)
        #expect(b.newChunks == 0, "data chunks deduplicate across keys")
    }

    @Test func manifestsInTheClearStillRead() throws {
        // Public/shared content (manifests in the clear) read with a content key, as before.
        let store = MemoryChunkStore()
        let publisher = ContentPublisher(store: store, keys: .random())
        let key = PublicKeyring.newKey()
        let bytes = textLike(50_000, seed: 3)
        let open = try publisher.put(bytes: bytes, name: "public", readKey: key)
        #expect(try ContentReader(store: store, readKey: key).readFile(open.id) == bytes)
    }

    @Test func sealedIndexCodecIsStrict() throws {
        let entries: [SealedIndex.Entry] = [
            .init(kind: .chunk, id: ChunkID.of([1]), size: 100), .init(kind: .index, id: ChunkID.of([2]), size: 2000),
        ]
        let index = SealedIndex(entries: entries, sealedRoot: [UInt8](repeating: 9, count: 60))
        let bytes = index.encode()
        #expect(bytes.count == 4 + 1 + 4 + 32 + 2 * 37 + 4 + 60)
        #expect(try SealedIndex.decode(bytes) == index)
        SealedIndex.fuzz(bytes)
        var trailing = bytes; trailing.append(0)
        #expect(throws: ContentError.self) { try SealedIndex.decode(trailing) }
        var badRoot = bytes; badRoot[10] ^= 1
        #expect(throws: ContentError.self) { try SealedIndex.decode(badRoot) }
        var badKind = bytes; badKind[41] = 3
        #expect(throws: ContentError.self) { try SealedIndex.decode(badKind) }
        let repeated = SealedIndex(entries: [entries[0], entries[0]], sealedRoot: []).encode()
        #expect(throws: ContentError.self) { try SealedIndex.decode(repeated) }
        var hugeCount = bytes; hugeCount[5...8] = [0xff, 0xff, 0xff, 0xff]
        #expect(throws: ContentError.self) { try SealedIndex.decode(hugeCount) }
        for cut in [0, 4, 9, 41, 60, bytes.count - 1] {
            #expect(throws: ContentError.self) { try SealedIndex.decode(Array(bytes.prefix(cut))) }
        }
    }

    @Test func envelopeRoundTripsForItsReaderOnly() throws {
        let reader = Curve25519.KeyAgreement.PrivateKey()
        let other = Curve25519.KeyAgreement.PrivateKey()
        let content = ContentID(ChunkID.of([7]))
        let key = PublicKeyring.newKey()
        let envelope = try ReaderKeyEnvelope.seal(contentKey: key, content: content, for: reader.publicKey)
        let bytes = envelope.encode()
        #expect(bytes.count == ReaderKeyEnvelope.length)
        let decoded = try ReaderKeyEnvelope.decode(bytes)
        #expect(decoded == envelope)
        #expect(try decoded.open(with: reader) == key)
        ReaderKeyEnvelope.fuzz(bytes)
        // Another reader: refused by id, and by the cryptography once the id is forged.
        #expect(throws: ContentError(.decryptionFailed, "")) { try decoded.open(with: other) }
        var forged = decoded
        forged.reader = ReaderKeyEnvelope.readerID(other.publicKey)
        #expect(throws: ContentError(.decryptionFailed, "")) { try forged.open(with: other) }
        // Any altered byte (content, reader, encapsulated key, sealed key) fails to open.
        for i in 1..<bytes.count {
            var t = bytes
            t[i] ^= 0x01
            let e = try ReaderKeyEnvelope.decode(t)
            #expect(throws: ContentError.self) { try e.open(with: reader) }
        }
        #expect(throws: ContentError.self) { try ReaderKeyEnvelope.decode(Array(bytes.dropLast())) }
        var v2 = bytes; v2[0] = 2
        #expect(throws: ContentError(.unsupportedVersion, "")) { try ReaderKeyEnvelope.decode(v2) }
        #expect(throws: ContentError.self) { try ReaderKeyEnvelope.seal(contentKey: [1], content: content, for: reader.publicKey) }
    }

    @Test func readerKeyTextAndFiles() throws {
        let dir = tempDir("stoq-reader-key")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sub/reader.key"
        let (key, created) = try ReaderKey.loadOrCreate(path: path)
        #expect(created)
        let again = try ReaderKey.loadOrCreate(path: path)
        #expect(!again.created && again.key.rawRepresentation == key.rawRepresentation)
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
        let text = ReaderKey.text(key.publicKey)
        #expect(text.hasPrefix("stoqreader1") && text.count == 11 + 52)
        #expect(try ReaderKey.parsePublic(" " + text + "\n").rawRepresentation == key.publicKey.rawRepresentation)
        try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/me.pub"))
        #expect(try ReaderKey.loadPublic(path: dir + "/me.pub").rawRepresentation == key.publicKey.rawRepresentation)
        #expect(try ReaderKey.loadPublic(path: path).rawRepresentation == key.publicKey.rawRepresentation)
        #expect(throws: ContentError.self) { try ReaderKey.parsePublic("stoqreader1abc") }
    }

    @Test func versionTwoTicketsCarryTheWrappedKey() throws {
        let reader = Curve25519.KeyAgreement.PrivateKey()
        let v1 = ShareTicketTests.vector()
        let key = PublicKeyring.newKey()
        let envelope = try ReaderKeyEnvelope.seal(contentKey: key, content: v1.content, for: reader.publicKey)
        var ticket = ShareTicket(content: v1.content, wrappedKey: envelope, caFingerprint: v1.caFingerprint, providers: v1.providers, bootstrap: v1.bootstrap)
        let bytes = try ticket.encoded()
        #expect(bytes[0] == 2 && bytes.count == 171 + 113)
        let decoded = try ShareTicket(text: ticket.text())
        #expect(decoded == ticket && decoded.readKey.isEmpty)
        #expect(try decoded.wrappedKey?.open(with: reader) == key)
        ShareTicket.fuzz(bytes)
        // A full version 2 ticket still fits the text bound.
        ticket.providers = (1...8).map { i in .init(nodeID: [UInt8](repeating: UInt8(i), count: 32), address: .init(host: "fd00::\(i)", port: 4433)!) }
        #expect(try ticket.text().count <= ShareTicket.maximumTextLength)
        #expect(try ShareTicket(text: ticket.text()) == ticket)
        // An envelope for another content is refused (a ticket cannot be re-pointed).
        let elsewhere = try ReaderKeyEnvelope.seal(contentKey: key, content: ContentID(ChunkID.of([1])), for: reader.publicKey)
        let moved = ShareTicket(content: v1.content, wrappedKey: elsewhere, caFingerprint: v1.caFingerprint, providers: v1.providers)
        #expect(throws: ContentError.self) { try moved.encoded() }
        // Version 1 tickets read as before.
        #expect(try ShareTicket(text: ShareTicketTests.vectorText) == v1)
    }
}
