import Crypto
import Foundation
import Testing
import TestVectorSupport
import STOQIdentity
@testable import STOQContent

/// The content-tree test vectors of `docs/PROTOCOL.md` (`docs/test-vectors/content-tree.json`),
/// recomputed from the committed input files with the project's own publisher, so the document
/// cannot drift from the code. The test also re-derives every key, nonce and id the way the
/// document describes (HMAC, HKDF, ChaCha20-Poly1305, SHA-256) instead of calling the code that
/// made them, so it checks the description as well as the bytes.
///
/// `STOQ_WRITE_VECTORS=1` rewrites the JSON file instead of comparing (after a deliberate format
/// change; say so in the commit).
@Suite struct TestVectorTests {
    /// `docs/test-vectors`.
    static let directory = TestVectors.directory

    /// The fixed publisher secret of the vectors: SHA-256("stoq test vector publisher").
    static let secret = Array(SHA256.hash(data: Array("stoq test vector publisher".utf8)))
    /// The chunking the vectors use: small chunks and a fanout of 2, so a 6000-byte file makes a
    /// manifest tree of three levels.
    static let policy = ChunkingPolicy(averages: [:], defaultAverage: 1024, minSize: 256, maxSize: 2048, level: 2)
    static let fanout = 2
    /// The inputs and the modes they are put with (git does not keep modes exactly).
    static let inputs: [(path: String, kind: String, mode: UInt32)] = [
        ("data.bin", "file", 0o755),
        ("docs", "directory", 0o750),
        ("docs/notes.md", "file", 0o600),
        ("empty", "file", 0o644),
        ("hello.txt", "file", 0o644),
    ]

    @Test func contentTreeVectorsMatchTheCode() throws {
        let computed = try Self.compute()
        if TestVectors.rewriting {
            try TestVectors.write(computed, to: "content-tree.json")
            return
        }
        let committed = try TestVectors.read(ContentTreeVectors.self, from: "content-tree.json")
        // Field by field, so a failure says which part of the format changed (without dumping
        // kilobytes of hex).
        #expect(committed.comment == computed.comment)
        #expect(committed.publisher == computed.publisher, "publisher keys: \(differences(committed.publisher, computed.publisher))")
        #expect(committed.chunking == computed.chunking, "chunking: \(differences(committed.chunking, computed.chunking))")
        #expect(committed.inputs == computed.inputs, "the inputs differ: restore docs/test-vectors/content-tree/")
        #expect(committed.contentId == computed.contentId, "the content id changed; after a deliberate format change STOQ_WRITE_VECTORS=1 rewrites the vectors")
        #expect(committed.contentIdHex == computed.contentIdHex)
        #expect(committed.manifests.count == computed.manifests.count)
        for (a, b) in zip(committed.manifests, computed.manifests) {
            #expect(a == b, "manifest \(b.path) (\(b.kind) at \(b.offset ?? 0)) differs in \(differences(a, b))")
        }
        #expect(committed.chunks.count == computed.chunks.count)
        for (a, b) in zip(committed.chunks, computed.chunks) {
            // A compressed chunk also depends on libzstd's output (Debian 12: libzstd 1.5.4, level 1).
            #expect(a == b, "chunk \(b.path)@\(b.offset) (compressed: \(b.compressed)) differs in \(differences(a, b))")
        }
        #expect(committed.haveOrder == computed.haveOrder, "the HAVE order changed")
    }

    /// The names of the stored properties in which `a` and `b` differ.
    func differences<T>(_ a: T, _ b: T) -> [String] {
        zip(Mirror(reflecting: a).children, Mirror(reflecting: b).children).compactMap { x, y in
            String(describing: x.value) == String(describing: y.value) ? nil : (x.label ?? "?")
        }
    }

    /// Puts the committed inputs with the fixed key and describes what was stored.
    static func compute() throws -> ContentTreeVectors {
        let source = directory + "/content-tree"
        let work = tempDir("vectors")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let root = work + "/content-tree"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        var described = [ContentTreeVectors.Input]()
        for input in creationOrder(Self.inputs) {
            let target = root + "/" + input.path
            if input.kind == "directory" {
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            } else {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: source + "/" + input.path))
                try bytes.write(to: URL(fileURLWithPath: target))
            }
        }
        for input in Self.inputs {
            let target = root + "/" + input.path
            guard chmod(target, mode_t(input.mode)) == 0 else { throw ContentError(.io, "chmod \(target)") }
            var entry = ContentTreeVectors.Input(path: input.path, kind: input.kind, mode: "0" + String(input.mode, radix: 8))
            if input.kind == "file" {
                let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: target)))
                entry.size = UInt64(bytes.count)
                entry.sha256 = Hex.encode(Array(SHA256.hash(data: bytes)))
            }
            described.append(entry)
        }

        let keys = try PublisherKeys(secret: secret)
        let store = MemoryChunkStore()
        let publisher = ContentPublisher(store: store, keys: keys, policy: policy, fanout: fanout, workers: 1)
        let report = try publisher.put(path: root, name: "vectors")

        // The read key as the document derives it: HKDF-SHA256, no salt, info "stoq read key v1".
        let readKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret), info: Array("stoq read key v1".utf8), outputByteCount: 32)
        let readKeyBytes = readKey.withUnsafeBytes { Array($0) }
        #expect(readKeyBytes == keys.readKey.withUnsafeBytes { Array($0) })

        var walker = Walker(store: store, secret: secret, readKey: readKey)
        try walker.directory(report.id.manifest, path: "")
        let haveOrder = try walker.haveOrder(root: report.id.manifest)

        return ContentTreeVectors(
            comment: "STOQ content-tree test vectors: see docs/PROTOCOL.md, section Test vectors. Recomputed by Tests/STOQContentTests/TestVectorTests.swift.",
            publisher: .init(secret: Hex.encode(secret), readKey: Hex.encode(readKeyBytes)),
            chunking: .init(algorithm: "FastCDC", minSize: policy.minSize, avgSize: policy.defaultAverage, maxSize: policy.maxSize,
                            level: policy.level, manifestFanout: fanout, zstdLevel: 1),
            inputs: described,
            contentId: report.id.description,
            contentIdHex: report.id.manifest.hex,
            manifests: walker.manifests,
            chunks: walker.chunks,
            haveOrder: haveOrder.map(\.hex)
        )
    }

    /// Parents before children.
    static func creationOrder(_ list: [(path: String, kind: String, mode: UInt32)]) -> [(path: String, kind: String, mode: UInt32)] {
        list.sorted { $0.path.split(separator: "/").count < $1.path.split(separator: "/").count }
    }
}

/// Reads a stored tree the way an independent implementation following `docs/PROTOCOL.md` would,
/// checking each derivation, and lists what it finds.
struct Walker {
    let store: MemoryChunkStore
    let secret: [UInt8]
    let readKey: SymmetricKey
    var manifests = [ContentTreeVectors.Manifest]()
    var chunks = [ContentTreeVectors.Chunk]()

    init(store: MemoryChunkStore, secret: [UInt8], readKey: SymmetricKey) {
        self.store = store
        self.secret = secret
        self.readKey = readKey
    }

    /// Reads a chunk and checks that its id is the SHA-256 of its bytes.
    func read(_ id: ChunkID) throws -> [UInt8] {
        let bytes = try store.read(id)
        #expect(Hex.encode(Array(SHA256.hash(data: bytes))) == id.hex)
        return bytes
    }

    mutating func directory(_ id: ChunkID, path: String) throws {
        let bytes = try read(id)
        guard case .directory(let d) = try AnyManifest.decode(bytes) else { throw ContentError(.malformed, "\(path) is not a directory") }
        manifests.append(.init(id: id.hex, kind: "directory", path: path, offset: nil, size: nil, bytes: Hex.encode(bytes)))
        for e in d.entries {
            let child = path.isEmpty ? e.name : path + "/" + e.name
            switch e.kind {
            case .directory: try directory(e.id.manifest, path: child)
            case .file: try file(e.id.manifest, path: child, base: 0)
            case .symlink: continue  // a link names no chunk (the vector tree has none)
            }
        }
    }

    mutating func file(_ id: ChunkID, path: String, base: UInt64) throws {
        let bytes = try read(id)
        guard case .file(let m) = try AnyManifest.decode(bytes) else { throw ContentError(.malformed, "\(path) is not a file") }
        manifests.append(.init(id: id.hex, kind: m.kind == .leaf ? "file-leaf" : "file-node", path: path, offset: base, size: m.totalSize, bytes: Hex.encode(bytes)))
        switch m.kind {
        case .node:
            for e in m.entries { try file(e.id, path: path, base: base + e.offset) }
        case .leaf:
            let keys = try openKeyTable(m.sealedKeys, count: m.entries.count)
            for (e, key) in zip(m.entries, keys) {
                let stored = try read(e.id)
                let message = try openChunk(stored, key: key)
                let plain: [UInt8]
                switch message.first {
                case 0: plain = Array(message.dropFirst())
                case 1: plain = try Zstd.decompress(Array(message.dropFirst()), maxSize: Int(e.size))
                default: throw ContentError(.malformed, "chunk flag \(String(describing: message.first))")
                }
                #expect(UInt64(plain.count) == e.size)
                let plainHash = Array(SHA256.hash(data: plain))
                // The chunk key: HMAC-SHA256(publisher secret, SHA-256(plaintext)).
                #expect(Array(HMAC<SHA256>.authenticationCode(for: plainHash, using: SymmetricKey(data: secret))) == key)
                chunks.append(.init(id: e.id.hex, path: path, offset: base + e.offset, size: e.size, plaintextSha256: Hex.encode(plainHash),
                                    key: Hex.encode(key), compressed: message.first == 1, stored: Hex.encode(stored)))
            }
        }
    }

    /// A key table: nonce (12) ‖ ChaCha20-Poly1305 ciphertext ‖ tag (16) under the read key, no
    /// associated data; the nonce is the first 12 bytes of HMAC-SHA256(read key, keys).
    func openKeyTable(_ sealed: [UInt8], count: Int) throws -> [[UInt8]] {
        #expect(sealed.count == 12 + 32 * count + 16)
        let plain = Array(try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: sealed), using: readKey))
        #expect(Array(HMAC<SHA256>.authenticationCode(for: plain, using: readKey).prefix(12)) == Array(sealed.prefix(12)))
        return (0..<count).map { Array(plain[($0 * 32)..<($0 * 32 + 32)]) }
    }

    /// A data chunk: ChaCha20-Poly1305 ciphertext ‖ tag (16) under the chunk key, nonce 12 zero
    /// bytes, no associated data; the plaintext is flag (1 byte) ‖ body.
    func openChunk(_ stored: [UInt8], key: [UInt8]) throws -> [UInt8] {
        let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12)),
                                           ciphertext: stored.dropLast(16), tag: stored.suffix(16))
        return Array(try ChaChaPoly.open(box, using: SymmetricKey(data: key)))
    }

    /// The HAVE bit order as `docs/PROTOCOL.md` states it: a depth-first walk from the root with a
    /// stack (children pushed in entry order, so visited last to first), each manifest once; a
    /// leaf's chunks in entry order; each data chunk at its first occurrence.
    func haveOrder(root: ChunkID) throws -> [ChunkID] {
        var stack = [root]
        var seenManifests = Set<ChunkID>()
        var seenData = Set<ChunkID>()
        var order = [ChunkID]()
        while let id = stack.popLast() {
            guard seenManifests.insert(id).inserted else { continue }
            switch try AnyManifest.decode(store.read(id)) {
            case .directory(let d): stack += d.entries.map(\.id.manifest)
            case .file(let f) where f.kind == .node: stack += f.entries.map(\.id)
            case .file(let f):
                for e in f.entries where seenData.insert(e.id).inserted { order.append(e.id) }
            }
        }
        return order
    }
}

/// The JSON of `docs/test-vectors/content-tree.json` (snake_case keys; hex is lowercase).
struct ContentTreeVectors: Codable, Equatable {
    struct Publisher: Codable, Equatable {
        /// The 32 bytes of `publisher.key`.
        var secret: String
        /// HKDF-SHA256(secret, info "stoq read key v1").
        var readKey: String
    }
    struct Chunking: Codable, Equatable {
        var algorithm: String
        var minSize: Int
        var avgSize: Int
        var maxSize: Int
        var level: Int
        var manifestFanout: Int
        var zstdLevel: Int
    }
    struct Input: Codable, Equatable {
        var path: String
        var kind: String
        var mode: String
        var size: UInt64?
        var sha256: String?
    }
    struct Manifest: Codable, Equatable {
        var id: String
        var kind: String
        var path: String
        /// File manifests: the first byte of the file they cover, and how many bytes.
        var offset: UInt64?
        var size: UInt64?
        var bytes: String
    }
    struct Chunk: Codable, Equatable {
        var id: String
        var path: String
        var offset: UInt64
        var size: UInt64
        var plaintextSha256: String
        var key: String
        var compressed: Bool
        var stored: String
    }
    var comment: String
    var publisher: Publisher
    var chunking: Chunking
    var inputs: [Input]
    var contentId: String
    var contentIdHex: String
    /// Depth-first, entries in order (a directory before its entries, a node before its children).
    var manifests: [Manifest]
    /// Every data chunk in file order, files in the same walk.
    var chunks: [Chunk]
    /// The data chunk ids in HAVE bit order.
    var haveOrder: [String]
}
