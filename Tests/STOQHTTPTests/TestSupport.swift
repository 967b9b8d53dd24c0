import Crypto
import Foundation
import STOQContent
import STOQHTTP
import Synchronization
import XCTest

/// A content source over a memory store, counting what it is asked for.
final class MemorySource: HTTPContentSource {
    let store: MemoryChunkStore
    let key: SymmetricKey?
    let names: Mutex<[String: NameBinding]> = Mutex([:])
    let requests: Mutex<[ChunkID]> = Mutex([])
    let changes: Mutex<AsyncStream<String>.Continuation?> = Mutex(nil)
    /// Chunks held back until released (streaming tests).
    let gate: Gate?
    let delay: Duration?
    /// Chunks that report as fetched from upstream (cache misses).
    let remote: Set<ChunkID>

    init(store: MemoryChunkStore, key: SymmetricKey?, gate: Gate? = nil, delay: Duration? = nil, remote: Set<ChunkID> = []) {
        self.store = store
        self.key = key
        self.gate = gate
        self.delay = delay
        self.remote = remote
    }

    func chunk(_ id: ChunkID, reader: ObjectIdentifier?) async throws -> SourcedChunk? {
        requests.withLock { $0.append(id) }
        if let gate { await gate.pass(id) }
        if let delay { try await Task.sleep(for: delay) }
        guard (try? store.contains(id)) == true else { return nil }
        return SourcedChunk(bytes: try store.read(id), fromCache: !remote.contains(id))
    }

    func readKey(for content: ContentID) async -> SymmetricKey? { key }

    func resolve(name: String) async throws -> NameBinding? { names.withLock { $0[name] } }

    func nameChanges() async -> AsyncStream<String>? {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        changes.withLock { $0 = continuation }
        return stream
    }

    var requested: [ChunkID] { requests.withLock { $0 } }
}

/// Holds back the chunks named, until opened.
actor Gate {
    private var open = false
    private let blocked: Set<ChunkID>
    private var waiters: [CheckedContinuation<Void, Never>] = []
    init(blocked: Set<ChunkID>) { self.blocked = blocked }
    func pass(_ id: ChunkID) async {
        guard !open, blocked.contains(id) else { return }
        await withCheckedContinuation { waiters.append($0) }
    }
    func release() {
        open = true
        for w in waiters { w.resume() }
        waiters = []
    }
    var waiting: Int { waiters.count }
}

/// The tiny driver that stands in for a protocol server: one request in, the whole exchange out.
struct Exchange {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    var record: HTTPExchangeRecord

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

func drive(_ responder: ContentResponder, _ target: String, headers: [(name: String, value: String)] = []) async throws -> Exchange {
    try await drive(responder, "GET", target, headers: headers)
}

func drive(_ responder: ContentResponder, _ method: String, _ target: String,
           headers: [(name: String, value: String)] = [], proto: HTTPWireProtocol = .http2) async throws -> Exchange {
    let request = HTTPRequest(method: method, target: target, headers: headers, wireProtocol: proto, client: "[::1]:50000")
    let start = ContinuousClock.now
    let response = await responder.respond(to: request)
    var body: [UInt8] = []
    if method != "HEAD" && response.status != 304 {
        while let piece = try await response.body.next() { body += piece }
    }
    let elapsed = ContinuousClock.now - start
    let record = HTTPExchangeRecord(request: request, status: response.status, bodyBytes: body.count,
                                    duration: Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds), logInfo: response.logInfo)
    responder.finished(record)
    return Exchange(status: response.status, headers: response.headers, body: body, record: record)
}

/// Deterministic pseudo-random bytes (SplitMix64).
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out = [UInt8]()
    out.reserveCapacity(count + 8)
    while out.count < count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        withUnsafeBytes(of: z) { out += $0 }
    }
    return Array(out.prefix(count))
}

/// A throwaway directory.
func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "stoqhttp-\(UInt64.random(in: 0...UInt64.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
