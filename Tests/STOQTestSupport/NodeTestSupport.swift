// STOQTestSupport: what tests need to start real nodes on `[::1]` (a throwaway CA and network,
// fault-injecting providers and servers, bounded waits). A target, never a product. It sits on the
// STOQ layer and must not import Nexus or HyperMesh, so that every test target that starts nodes
// can use it; what it shares across modules is `public`.
import Foundation
import STOQContent
import STOQIdentity
import STOQNode
import STOQTransport

/// A throwaway network for real-QUIC node tests on `[::1]`: one CA, and nodes with their own
/// certificates and stores in a temporary directory that ``close()`` removes.
public final class TestNetwork: Sendable {
    public let directory: String
    public let ca: CertificateAuthority
    public let caPath: String
    /// The operator of every node of this network: the certificate of the node named "client", issued
    /// up front so that each node lists it (`--operator`), the way `stoq node` takes the `client.pem`
    /// beside its CA. STATUS and PURGE are closed to every other certificate (docs/SECURITY.md).
    public let operatorPaths: (certificate: String, key: String)
    /// The operator's node id (hex).
    public let operatorID: String

    public init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-node-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateAuthority.create(commonName: "STOQ node test CA")
        caPath = try ca.write(to: directory).certificate
        let client = try ca.issue(name: "client", dnsNames: ["localhost"], ipAddresses: ["::1"])
        operatorPaths = try client.write(to: directory, name: "client")
        operatorID = try NodeID(certificateDER: PEMFile.certificateDERs(in: PEMFile.read(operatorPaths.certificate))[0]).hex
    }

    /// Issues credentials for `name` and returns a configuration listening on an ephemeral port.
    /// Every node lists ``operatorID`` as its operator; a relay carries for every node of the network
    /// (`relayOpen`: the relay right itself is tested in AccessGrantTests and the grants journey).
    public func configuration(_ name: String, roles: [String] = ["origin"], upstream: [PeerAddress] = []) throws -> NodeConfiguration {
        let paths = name == "client" ? operatorPaths
            : try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: directory, name: name)
        var configuration = NodeConfiguration(
            name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
            ca: caPath, store: (directory as NSString).appendingPathComponent("\(name)-store"), roles: roles,
            upstream: upstream, idleTimeoutSeconds: 10)
        configuration.operators = [operatorID]
        if roles.contains("relay") { configuration.relayOpen = true }
        return configuration
    }

    /// Starts a node named `name`.
    public func node(_ name: String, roles: [String] = ["origin"], upstream: [PeerAddress] = [], services: [any NodeService] = []) async throws -> Node {
        try await Node.start(try configuration(name, roles: roles, upstream: upstream), services: services)
    }

    /// Removes the directory.
    public func close() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a node serving in the background, then closes it.
public func withServing<T: Sendable>(_ node: Node, _ body: () async throws -> T) async throws -> T {
    try await withServing(node, running: { await node.run() }, body)
}

// MARK: - Session 2 (node daemon, faults): content, fault-injecting providers, HTTP, servers

import NIOCore
import NIOPosix
import STOQEdge
import STOQSimulation
import STOQWire

extension TestNetwork {
    /// Publishes `bytes` of seeded random data into `node`'s store and returns the content id
    /// with the publisher keys (to restore it).
    public func publish(on node: Node, bytes count: Int, seed: UInt64) throws -> (id: ContentID, keys: PublisherKeys, bytes: [UInt8]) {
        var rng = SimRandom(seed: seed)
        var bytes = [UInt8]()
        bytes.reserveCapacity(count)
        while bytes.count < count {
            var z = rng.next()
            for _ in 0..<min(8, count - bytes.count) {
                bytes.append(UInt8(truncatingIfNeeded: z))
                z >>= 8
            }
        }
        let keys = try PublisherKeys(secret: Array(repeating: UInt8(truncatingIfNeeded: seed), count: 32))
        let report = try ContentPublisher(store: node.store, keys: keys).put(bytes: bytes, name: "test data")
        return (report.id, keys, bytes)
    }

    /// Credentials issued by a different CA, which this network's nodes must refuse.
    public func foreignConfiguration(_ name: String) throws -> NodeConfiguration {
        let foreign = try CertificateAuthority.create(commonName: "Some other CA")
        let dir = (directory as NSString).appendingPathComponent("foreign-\(name)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let caPath = try foreign.write(to: dir).certificate
        let paths = try foreign.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"]).write(to: dir, name: name)
        return NodeConfiguration(
            name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
            ca: caPath, store: (directory as NSString).appendingPathComponent("\(name)-store"), roles: ["client"], idleTimeoutSeconds: 10)
    }
}

/// Runs `body` while `server` answers on `node`'s endpoint (instead of the node's own server), then
/// closes the node.
public func withServing<T: Sendable>(_ node: Node, server: any StreamServer, _ body: () async throws -> T) async throws -> T {
    try await withServing(node, running: { await server.run(on: node.endpoint) }, body)
}

/// Runs `serve` in the background during `body`, then closes the node and waits for `serve` to end.
private func withServing<T: Sendable>(
    _ node: Node, running serve: @escaping @Sendable () async -> Void, _ body: () async throws -> T
) async throws -> T {
    let serving = Task { await serve() }
    do {
        let result = try await body()
        await node.close()
        await serving.value
        return result
    } catch {
        await node.close()
        await serving.value
        throw error
    }
}

/// A provider that flips a byte of every chunk it serves (a corrupt peer).
public struct CorruptingProvider: ChunkProvider {
    public let inner: any ChunkProvider
    public init(inner: any ChunkProvider) { self.inner = inner }
    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        guard var bytes = try await inner.chunk(id) else { return nil }
        if !bytes.isEmpty { bytes[bytes.count / 2] ^= 0x5a }
        return bytes
    }
}

/// Counts the requests that reach a provider, per chunk.
public final class CountingProvider: ChunkProvider, @unchecked Sendable {
    // @unchecked Sendable: `counts` is behind `lock`.
    public let inner: any ChunkProvider
    private let lock = NSLock()
    private var counts: [ChunkID: Int] = [:]
    public init(inner: any ChunkProvider) { self.inner = inner }
    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        lock.withLock { counts[id, default: 0] += 1 }
        return try await inner.chunk(id)
    }
    public var total: Int { lock.withLock { counts.values.reduce(0, +) } }
    public func count(_ id: ChunkID) -> Int { lock.withLock { counts[id] ?? 0 } }
    public var distinct: Set<ChunkID> { lock.withLock { Set(counts.keys) } }
}

/// A provider whose data-chunk requests never return until ``release()`` (a peer that stalls
/// forever); manifests (`passthrough`) are served so the fetch reaches the data phase.
public final class StallingProvider: ChunkProvider, @unchecked Sendable {
    // @unchecked Sendable: state behind `lock`.
    public let inner: any ChunkProvider
    public let passthrough: Set<ChunkID>
    private let lock = NSLock()
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var released = false
    public private(set) var stalled = 0
    public init(inner: any ChunkProvider, passthrough: Set<ChunkID>) {
        self.inner = inner
        self.passthrough = passthrough
    }
    public func chunk(_ id: ChunkID) async throws -> [UInt8]? {
        if passthrough.contains(id) { return try await inner.chunk(id) }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = lock.withLock { () -> Bool in
                if released { return true }
                stalled += 1
                waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
        return nil
    }
    /// Lets every stalled request go (so the server can shut down).
    public func release() {
        let all = lock.withLock { released = true; defer { waiters = [] }; return waiters }
        for c in all { c.resume() }
    }
    public var stalledCount: Int { lock.withLock { stalled } }
}

/// A server that announces every chunk's full length but sends only half of it, then FIN.
public struct TruncatingServer: StreamServer {
    public let provider: any ChunkProvider
    public init(provider: any ChunkProvider) { self.provider = provider }
    public func serve(stream: QUICStream, on connection: Connection) async {
        do {
            var decoder = FrameDecoder(maximumPayloadLength: 4096)
            var request: STOQMessage?
            for try await piece in stream {
                decoder.handle(bytes: piece)
                if let frame = try decoder.pollFrame() { request = try STOQMessage.decode(frame); break }
            }
            guard case .getChunk(let wire, _, _) = request, let bytes = try await provider.chunk(ChunkID(bytes: wire.bytes)!) else {
                await stream.reset(code: 1)
                return
            }
            var out = STOQMessage.chunkHeader(status: .ok, totalLength: UInt64(bytes.count), offset: 0, length: UInt64(bytes.count)).encoded()
            out.writeBytes(bytes.prefix(bytes.count / 2))
            try await stream.write(out)
            try await stream.finish()
        } catch {
            await stream.reset(code: 2)
        }
    }
}

/// The manifest chunk ids of content in a store (the root and its manifest tree), so fault
/// providers can let them through and stall or corrupt only data chunks.
public func manifestChunks(of root: ContentID, in store: any ChunkStore) async throws -> Set<ChunkID> {
    let plan = try await ContentPlan.resolve(root) { try store.read($0) }
    let data = Set(plan.dataChunks.map(\.id))
    var all = Set<ChunkID>()
    for (id, _) in plan.batch.chunks where !data.contains(id) { all.insert(id) }
    all.insert(root.manifest)
    return all
}

/// One HTTP/1.1 GET over TCP to `[::1]:port` (the admin endpoint); returns status line and body.
public func httpGet(port: Int, path: String) async throws -> (status: String, body: String) {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "::1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
        }
    let text = try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n"))
        var all = ""
        for try await piece in inbound { all += String(buffer: piece) }
        return all
    }
    let parts = text.components(separatedBy: "\r\n\r\n")
    return (parts.first?.components(separatedBy: "\r\n").first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// Waits for the first element of `stream` that satisfies `match`, failing after `seconds`
/// (a guard against a hang, not a timing assertion).
public func first<T: Sendable>(_ stream: AsyncStream<T>, within seconds: Double, where match: @escaping @Sendable (T) -> Bool) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            for await value in stream where match(value) { return value }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let value = try await group.next() ?? nil else {
            throw NodeError(.unavailable, "no matching event within \(seconds) s")
        }
        return value
    }
}

/// Waits until `condition` holds, checking every 10 ms, failing after `seconds` (waits for a state
/// to be reached; asserts nothing about how long that took).
/// A wait that used more than half of its limit is printed (`TIME LIMIT HALF USED`), so a run on a
/// loaded machine shows which limits are too tight before they fail.
public func eventually(within seconds: Double, _ condition: @Sendable () async throws -> Bool,
                file: StaticString = #fileID, line: UInt = #line) async throws {
    let start = ContinuousClock.now
    let deadline = start + .milliseconds(Int(seconds * 1000))
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw NodeError(.unavailable, "condition not reached within \(seconds) s") }
        try await Task.sleep(for: .milliseconds(10))
    }
    let used = (ContinuousClock.now - start).seconds
    if used > seconds / 2 { print("TIME LIMIT HALF USED: \(file):\(line) took \(used) s of its \(seconds) s") }
}

/// A server that accepts streams and answers none of them (not even PING) until its latch is
/// released: a peer that is connected but dead to the protocol.
public struct SilentServer: StreamServer {
    public let latch: StallingProvider
    public init(latch: StallingProvider) { self.latch = latch }
    public func serve(stream: QUICStream, on connection: Connection) async {
        _ = try? await latch.chunk(ChunkID.of([]))
        await stream.reset(code: 1)
    }
}
