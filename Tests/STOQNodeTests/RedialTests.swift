import Foundation
import STOQContent
@testable import STOQExchange
@testable import STOQNode
import STOQSwarm
import STOQTestSupport
import Testing

/// A fetch survives its sources' connections closing (issue 11 §9): a fetch source is a peer
/// address in a ``PeerSet``, so a closed connection is dialled again with backoff, the source is
/// down (not gone) meanwhile, and only a source unreachable for the whole retry window stops
/// counting. Real QUIC on [::1], no health probing, so the re-dial alone brings a source back.
@Suite(.serialized) struct RedialTests {
    /// An origin serving `bytes` of content slowly enough (2 MB/s) that a fault lands mid-fetch,
    /// and a client node whose peer set the fetch dials through.
    struct Setup {
        let network: TestNetwork
        let origin: Node
        let originConfiguration: NodeConfiguration
        let client: Node
        let content: (id: ContentID, keys: PublisherKeys, bytes: [UInt8])

        init(bytes: Int = 3 << 20, seed: UInt64) async throws {
            network = try TestNetwork()
            var configuration = try network.configuration("origin")
            configuration.rateLimitBytesPerSecond = 2_000_000
            originConfiguration = configuration
            origin = try await Node.start(configuration)
            client = try await network.node("client", roles: ["client"])
            content = try network.publish(on: origin, bytes: bytes, seed: seed)
        }

        func restored() throws -> [UInt8] {
            try ContentReader(store: client.store, keys: content.keys).readFile(content.id)
        }

        func close() async {
            await client.close()
            network.close()
        }
    }

    /// A short retry window and quick re-dials, so the tests stay short.
    static func swarm(retrySeconds: UInt64) -> SwarmConfiguration {
        var swarm = SwarmConfiguration()
        swarm.downSourceLimit = retrySeconds * 1_000_000_000
        swarm.redialBackoff = 200_000_000
        swarm.maxRedialBackoff = 1_000_000_000
        return swarm
    }

    @Test func theOnlySourcesConnectionClosesMidFetchAndTheFetchCompletesAfterARedial() async throws {
        let s = try await Setup(seed: 31)
        let notes = NoteLog()
        let once = KillOnce()
        let peers = s.client.peers
        let address = s.origin.address
        let report = try await withServing(s.origin) {
            try await ContentFetcher.fetch(
                s.content.id, from: [address], peers: peers, health: nil, store: s.client.store,
                configuration: Self.swarm(retrySeconds: 60),
                onProgress: { p in
                    // The connection closes under the fetch (as after an idle timeout in a partition).
                    if p.chunksDone * 3 >= p.chunkCount, once.first() { Task { await peers.drop(address) } }
                },
                onEvent: { notes.add($0) })
        }
        #expect(try s.restored() == s.content.bytes)
        #expect(notes.all.contains { $0.contains("lost its connection") }, "\(notes.all)")
        #expect(notes.all.contains { $0.contains("is reachable again") }, "\(notes.all)")
        let source = try #require(report.sources.first)
        #expect(source.name == address.description, "the source kept its name: \(source.name)")
        await s.close()
    }

    @Test func aSourceRestartedOnItsAddressIsDialledAgainAndFinishesTheFetch() async throws {
        let s = try await Setup(seed: 32)
        // The same node (same certificate, so the same node id) comes back on the same address
        // with a copy of the content, 2 s after it went away.
        let again = {
            var c = s.originConfiguration
            c.listen = s.origin.address
            c.store = (s.network.directory as NSString).appendingPathComponent("origin-again-store")
            return c
        }()
        let restarted = Restarted()
        let notes = NoteLog()
        let once = KillOnce()
        let origin = s.origin
        let content = s.content
        let serving = Task { await origin.run() }
        let report = try await ContentFetcher.fetch(
            s.content.id, from: [s.origin.address], peers: s.client.peers, health: nil, store: s.client.store,
            configuration: Self.swarm(retrySeconds: 60),
            onProgress: { p in
                guard p.chunksDone * 3 >= p.chunkCount, once.first() else { return }
                Task {
                    await origin.close()
                    try? await Task.sleep(for: .seconds(2))
                    do {
                        let node = try await Node.start(again)
                        _ = try ContentPublisher(store: node.store, keys: content.keys).put(bytes: content.bytes, name: "copy")
                        restarted.set(node, serving: Task { await node.run() })
                    } catch {
                        notes.add("restart failed: \(error)")
                    }
                }
            },
            onEvent: { notes.add($0) })
        await serving.value
        await restarted.close()
        #expect(try s.restored() == s.content.bytes)
        #expect(notes.all.contains { $0.contains("lost its connection") }, "\(notes.all)")
        #expect(notes.all.contains { $0.contains("is reachable again") }, "\(notes.all)")
        #expect(report.sources.count == 1 && report.sources[0].chunks > 0, "\(report.sources)")
        await s.close()
    }

    @Test func aSourceThatNeverComesBackFailsTheFetchAfterTheRetryWindowNamingIt() async throws {
        let s = try await Setup(seed: 33)
        let notes = NoteLog()
        let once = KillOnce()
        let origin = s.origin
        let serving = Task { await origin.run() }
        let started = ContinuousClock.now
        let failure = await #expect(throws: NodeError.self) {
            _ = try await ContentFetcher.fetch(
                s.content.id, from: [s.origin.address], peers: s.client.peers, health: nil, store: s.client.store,
                configuration: Self.swarm(retrySeconds: 3),
                onProgress: { p in
                    if p.chunksDone * 3 >= p.chunkCount, once.first() { Task { await origin.close() } }
                },
                onEvent: { notes.add($0) })
        }
        await serving.value
        let took = ContinuousClock.now - started
        let message = "\(failure.map { "\($0)" } ?? "")"
        print("after \(took): \(message)")
        #expect(failure?.code == .unavailable)
        #expect(message.contains(s.origin.address.description), "the error names the peer: \(message)")
        #expect(message.contains("connection lost") && message.contains("dialled again"), "the error says what was tried: \(message)")
        // It waited for the window instead of failing at once; the default window (120 s) would
        // have waited far longer than this bound, which only a stuck fetch reaches.
        #expect(took < .seconds(100), "the fetch took \(took) with a 3 s retry window")
        #expect(notes.all.contains { $0.contains("lost its connection") }, "\(notes.all)")
        // What was verified before the peer went away is kept for a resume.
        let kept = try await dataChunks(of: s.content.id, in: s.client.store).filter { try s.client.store.contains($0) }
        #expect(!kept.isEmpty)
        await s.close()
    }

    @Test func redialsBackOffDoublingToTheCeilingAndStopAfterTheWindow() {
        var swarm = SwarmConfiguration()
        swarm.redialBackoff = 1_000_000_000
        swarm.maxRedialBackoff = 15_000_000_000
        swarm.downSourceLimit = 120_000_000_000
        var redials = SourceRedials(configuration: swarm)
        let a = SourceID("a")
        let s: UInt64 = 1_000_000_000
        var now: UInt64 = 10 * s
        var delays = [UInt64]()
        guard var delay = redials.lost(a, error: "idle timeout", now: now) else {
            Issue.record("no first dial")
            return
        }
        #expect(redials.lost(a, error: "again", now: now) == nil, "one dial at a time")
        while true {
            delays.append(delay / s)
            now += delay
            guard let next = redials.failed(a, error: "handshake timed out", now: now) else { break }
            delay = next
        }
        #expect(Array(delays.prefix(6)) == [1, 2, 4, 8, 15, 15], "\(delays)")
        #expect(now == 130 * s, "the last dial ends the 120 s window: \(now / s)")
        #expect(!redials.isDialing(a))
        #expect(redials.summary(now: now).contains("unreachable for 120 s"), "\(redials.summary(now: now))")

        // Back up, then lost again without delivering: the backoff does not start over...
        var b = SourceRedials(configuration: swarm)
        _ = b.lost(a, error: "x", now: 0)
        _ = b.failed(a, error: "y", now: s)
        #expect(b.succeeded(a, now: 3 * s)?.attempts == 2)
        #expect(b.lost(a, error: "x", now: 4 * s) == 2 * s)
        // ...until the source delivers a chunk.
        #expect(b.succeeded(a, now: 6 * s) != nil)
        b.delivered(a)
        #expect(b.lost(a, error: "x", now: 7 * s) == s)
    }
}

/// The node a test restarted, closed at the end.
///
/// `@unchecked Sendable`: state behind `lock`.
final class Restarted: @unchecked Sendable {
    private let lock = NSLock()
    private var node: Node?
    private var serving: Task<Void, Never>?
    func set(_ node: Node, serving: Task<Void, Never>) { lock.withLock { self.node = node; self.serving = serving } }
    func close() async {
        let (node, serving) = lock.withLock { (self.node, self.serving) }
        await node?.close()
        await serving?.value
    }
}
