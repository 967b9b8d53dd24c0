import Foundation
import NIOCore
import STOQContent
import STOQNode
import STOQSimulation
import STOQSwarm
import STOQTestSupport
import STOQTransport
import STOQWire
import Testing

/// Bad peers and bad luck over real QUIC on [::1] (issue 4, "Bad input and faults"): every fetch
/// either completes bit-identical from the honest sources or fails with an error that says what
/// happened, and what was verified stays verified.
@Suite(.serialized) struct FaultTests {
    /// Two origins holding the same content (convergent encryption: same chunk ids), and a client.
    struct Setup {
        let network: TestNetwork
        let honest: Node
        let other: Node
        let client: Node
        let content: (id: ContentID, keys: PublisherKeys, bytes: [UInt8])

        init(bytes: Int = 3 << 20, seed: UInt64) async throws {
            network = try TestNetwork()
            honest = try await network.node("honest")
            other = try await network.node("other")
            client = try await network.node("client", roles: ["client"])
            content = try network.publish(on: honest, bytes: bytes, seed: seed)
            _ = try ContentPublisher(store: other.store, keys: content.keys).put(bytes: content.bytes, name: "copy")
        }

        func restored() throws -> [UInt8] {
            try ContentReader(store: client.store, keys: content.keys).readFile(content.id)
        }

        func close() async {
            await client.close()
            network.close()
        }
    }

    @Test func corruptPeerIsBannedAndTheFetchCompletesFromTheHonestOne() async throws {
        let s = try await Setup(seed: 1)
        let liar = ChunkServer(provider: CorruptingProvider(inner: StoreChunkProvider(store: s.other.store)))
        let report = try await withServing(s.honest) {
            try await withServing(s.other, server: liar) {
                let bad = try await s.client.peers.client(for: s.other.address)
                let good = try await s.client.peers.client(for: s.honest.address)
                return try await ContentFetcher(store: s.client.store, sources: [bad, good]).fetch(s.content.id)
            }
        }
        #expect(try s.restored() == s.content.bytes)
        let liarReport = try #require(report.sources.first { $0.name == s.other.address.description })
        #expect(liarReport.state.hasPrefix("banned"), "state: \(liarReport.state)")
        #expect(liarReport.chunks == 0)
        #expect(s.client.metrics.render().contains("stoq_received_faults_total{kind=\"corrupt\"}"))
        await s.close()
    }

    @Test func truncatedChunksAreRefusedAndFetchedElsewhere() async throws {
        let s = try await Setup(seed: 2)
        let report = try await withServing(s.honest) {
            try await withServing(s.other, server: TruncatingServer(provider: StoreChunkProvider(store: s.other.store))) {
                let bad = try await s.client.peers.client(for: s.other.address)
                // The truncating peer alone: a clear error naming the truncation.
                let some = try #require(s.honest.store.pins().first).id.manifest
                await #expect {
                    _ = try await bad.fetchChunk(some)
                } throws: { error in
                    (error as? NodeError)?.code == .protocolViolation && "\(error)".contains("truncated")
                }
                let good = try await s.client.peers.client(for: s.honest.address)
                return try await ContentFetcher(store: s.client.store, sources: [bad, good]).fetch(s.content.id)
            }
        }
        #expect(try s.restored() == s.content.bytes)
        #expect(report.sources.first { $0.name == s.other.address.description }?.chunks == 0)
        #expect(s.client.metrics.render().contains("stoq_received_faults_total{kind=\"truncated\"}"))
        await s.close()
    }

    @Test func aPeerThatStallsForeverLosesItsRequestsToOthers() async throws {
        let s = try await Setup(seed: 3)
        let manifests = try await manifestChunks(of: s.content.id, in: s.other.store)
        let staller = StallingProvider(inner: StoreChunkProvider(store: s.other.store), passthrough: manifests)
        let report = try await withServing(s.honest) {
            try await withServing(s.other, server: ChunkServer(provider: staller)) {
                defer { staller.release() }  // let the stuck responses end so the server can close
                let slow = try await s.client.peers.client(for: s.other.address)
                let good = try await s.client.peers.client(for: s.honest.address)
                return try await ContentFetcher(store: s.client.store, sources: [slow, good]).fetch(s.content.id)
            }
        }
        #expect(try s.restored() == s.content.bytes)
        #expect(staller.stalledCount > 0, "the stalling peer was asked for data")
        let slowReport = try #require(report.sources.first { $0.name == s.other.address.description })
        #expect(slowReport.chunks == 0)
        // Its requests moved either on its stall timeout (a failover is reported) or, when the honest
        // source was quicker, to the endgame. The 500 ms p99 target is measured by the benchmark
        // (`stoq bench-swarm --real`); here the bound only has to show the move was driven by the
        // stall timer and not by a connection timeout (30 s idle): half of that holds on any machine.
        if let failover = report.failovers.first(where: { $0.source == s.other.address.description }) {
            #expect(failover.seconds < 15, "requests moved after \(failover.seconds) s: that is a connection timeout, not the stall timer")
        }
        await s.close()
    }

    @Test func aHealthDownEventMovesASourcesRequestsAtOnce() async throws {
        let s = try await Setup(seed: 4)
        let manifests = try await manifestChunks(of: s.content.id, in: s.other.store)
        let staller = StallingProvider(inner: StoreChunkProvider(store: s.other.store), passthrough: manifests)
        let (changes, announce) = AsyncStream<PeerHealthChange>.makeStream()
        let notes = NoteLog()
        let report = try await withServing(s.honest) {
            try await withServing(s.other, server: ChunkServer(provider: staller)) {
                defer { staller.release() }
                let slow = try await s.client.peers.client(for: s.other.address)
                let good = try await s.client.peers.client(for: s.honest.address)
                let other = s.other.address
                let once = KillOnce()
                let fetcher = ContentFetcher(
                    store: s.client.store, sources: [slow, good],
                    configuration: { var c = SwarmConfiguration(); c.maxStallTimeout = 10_000_000_000; c.minStallTimeout = 10_000_000_000; return c }(),
                    // The stall timeouts are long, so only the health event can move the stalled requests early.
                    onProgress: { _ in if once.first() { announce.yield(PeerHealthChange(peer: other, isUp: false)) } },
                    onEvent: { notes.add($0) },
                    healthChanges: changes)
                return try await fetcher.fetch(s.content.id)
            }
        }
        #expect(try s.restored() == s.content.bytes)
        let slowReport = try #require(report.sources.first { $0.name == s.other.address.description })
        #expect(slowReport.state == "down")
        #expect(notes.all.contains { $0.contains("is down (health probes unanswered)") })
        await s.close()
    }

    @Test func aSourceThatStopsAnsweringProbesIsMarkedDownAndLosesItsRequests() async throws {
        let s = try await Setup(seed: 10)
        var config = try s.network.configuration("prober", roles: ["client"])
        config.health = HealthSettings(intervalMilliseconds: 200, timeoutMilliseconds: 100, failureThreshold: 3)
        let prober = try await Node.start(config)
        // The silent peer completes handshakes but answers nothing, not even PING.
        let latch = StallingProvider(inner: StoreChunkProvider(store: s.other.store), passthrough: [])
        let notes = NoteLog()
        let report = try await withServing(s.honest) {
            try await withServing(s.other, server: SilentServer(latch: latch)) {
                defer { latch.release() }
                return try await withServing(prober) {
                    // No stall timeouts and no endgame: only the health event can free the silent
                    // source's requests, so the fetch completing shows it arrived.
                    var swarm = SwarmConfiguration()
                    swarm.minStallTimeout = 600_000_000_000
                    swarm.maxStallTimeout = 600_000_000_000
                    swarm.endgame = false
                    return try await prober.fetch(s.content.id, from: [s.honest.address, s.other.address], configuration: swarm, onEvent: { notes.add($0) })
                }
            }
        }
        let silent = try #require(report.sources.first { $0.name == s.other.address.description })
        #expect(silent.state == "down" && silent.chunks == 0, "\(silent)")
        #expect(notes.all.contains { $0.contains("is down (health probes unanswered)") }, "\(notes.all)")
        #expect(try ContentReader(store: prober.store, keys: s.content.keys).readFile(s.content.id) == s.content.bytes)
        await s.close()
    }

    @Test func unknownContentIsAClearNotFound() async throws {
        let s = try await Setup(bytes: 64 << 10, seed: 5)
        try await withServing(s.honest) {
            let peer = try await s.client.peers.client(for: s.honest.address)
            let unknown = ContentID(ChunkID.of(Array("no such content".utf8)))
            await #expect {
                _ = try await ContentFetcher(store: s.client.store, sources: [peer]).fetch(unknown)
            } throws: { error in
                (error as? NodeError)?.code == .notFound && "\(error)".contains("none of the 1 sources holds content \(unknown)")
            }
        }
        await s.close()
    }

    @Test func peersWithAForeignCertificateAreRefusedBothWays() async throws {
        let s = try await Setup(bytes: 64 << 10, seed: 6)
        let stranger = try await Node.start(try s.network.foreignConfiguration("stranger"))
        try await withServing(s.honest) {
            // The stranger dials the network's node: refused during the handshake.
            await #expect(throws: STOQError.self) {
                try await stranger.peers.client(for: s.honest.address).ping()
            }
            // A member keeps being served.
            let member = try await s.client.peers.client(for: s.honest.address)
            try await member.ping()
        }
        _ = try await withServing(stranger) {
            // A member dials the stranger: its certificate does not chain to our CA.
            await #expect(throws: STOQError.self) {
                try await s.client.peers.client(for: stranger.address).ping()
            }
        }
        await s.close()
    }

    @Test func malformedFramesResetTheirStreamAndTheServerKeepsServing() async throws {
        let s = try await Setup(bytes: 64 << 10, seed: 7)
        try await withServing(s.honest) {
            let peer = try await s.client.peers.client(for: s.honest.address)
            var garbage: [[UInt8]] = [
                [0x06, 0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],  // GET_CHUNK claiming an exabyte-long payload
                [0x3e, 0x01, 0x00],  // an unknown STOQ frame type
                [0x06, 0x05, 0x01, 0x02],  // FIN inside a frame
                [0x06, 0x03, 0x01, 0x02, 0x03],  // GET_CHUNK whose payload is not a chunk id
            ]
            var rng = SimRandom(seed: 0x57_0a_f0)
            for _ in 0..<8 { garbage.append((0..<Int(rng.next() % 64 + 1)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
            for bytes in garbage {
                let stream = try await peer.connection.openBidirectionalStream()
                try await stream.write(bytes)
                try await stream.finish()
                // Either the stream is reset, or (for garbage that happens to parse) an error answer.
                do {
                    let answer = try await stream.readAll(limit: 1 << 20)
                    var decoder = FrameDecoder(maximumPayloadLength: 1 << 20)
                    decoder.handle(bytes: answer)
                    let frame = try decoder.pollFrame()
                    #expect(frame.map { [STOQMessage.Types.error, STOQMessage.Types.chunkHeader, STOQMessage.Types.pong].contains($0.type) } ?? false,
                            "seed 0x570af0: unexpected answer to \(bytes)")
                } catch let error as STOQError {
                    #expect(error.code == .streamReset, "seed 0x570af0: \(error)")
                }
            }
            // The same connection still works.
            try await peer.ping()
            let chunk = try await peer.fetchChunk(s.content.id.manifest)
            #expect(ChunkID.of(chunk) == s.content.id.manifest)
            #expect(s.honest.metrics.render().contains("stoq_requests_total{type=\"malformed\"}"))
        }
        await s.close()
    }

    @Test func aFullDiskStopsTheFetchClearlyAndTheResumeSkipsVerifiedChunks() async throws {
        let s = try await Setup(bytes: 3 << 20, seed: 8)
        let data = try await dataChunks(of: s.content.id, in: s.honest.store)
        #expect(data.count >= 4, "need several data chunks, got \(data.count)")
        let counting = CountingProvider(inner: StoreChunkProvider(store: s.honest.store))
        try await withServing(s.honest, server: ChunkServer(provider: counting)) {
            let peer = try await s.client.peers.client(for: s.honest.address)
            // 1. The disk fills after about half the content.
            s.client.store.failWritesAfterBytes = (3 << 20) / 2
            await #expect {
                _ = try await ContentFetcher(store: s.client.store, sources: [peer]).fetch(s.content.id)
            } throws: { error in
                (error as? NodeError)?.code == .storeFailed && "\(error)".contains("No space left") && "\(error)".contains("resumes")
            }
            // Nothing verified is lost: what was written is recorded and reads back verified.
            let kept = try data.filter { try s.client.store.contains($0) }
            #expect(!kept.isEmpty && kept.count < data.count, "kept \(kept.count) of \(data.count)")
            for id in kept { #expect(ChunkID.of(try s.client.store.read(id)) == id) }

            // 2. Space again: the resumed fetch asks only for the chunks it lacks.
            s.client.store.failWritesAfterBytes = nil
            let before = Dictionary(uniqueKeysWithValues: data.map { ($0, counting.count($0)) })
            let report = try await ContentFetcher(store: s.client.store, sources: [peer]).fetch(s.content.id)
            #expect(report.chunksAlreadyPresent == kept.count)
            for id in kept { #expect(counting.count(id) == before[id], "chunk \(id.short) was downloaded again") }
            for id in data where !kept.contains(id) { #expect(counting.count(id) > before[id]!) }
        }
        #expect(try s.restored() == s.content.bytes)
        await s.close()
    }

    @Test func aFetchInterruptedByItsOnlySourceResumesFromAnother() async throws {
        let s = try await Setup(bytes: 3 << 20, seed: 9)
        let data = try await dataChunks(of: s.content.id, in: s.honest.store)
        let counting = CountingProvider(inner: StoreChunkProvider(store: s.other.store))
        // The first source dies once a third of the chunks arrived.
        let serving = Task { await s.honest.run() }
        let peer = try await s.client.peers.client(for: s.honest.address)
        let killed = KillOnce()
        let honest = s.honest
        await #expect(throws: NodeError.self) {
            _ = try await ContentFetcher(
                store: s.client.store, sources: [peer],
                onProgress: { p in
                    if p.chunksDone * 3 >= p.chunkCount, killed.first() { Task { await honest.close() } }
                }
            ).fetch(s.content.id)
        }
        await serving.value
        let kept = try data.filter { try s.client.store.contains($0) }
        #expect(kept.count * 3 >= data.count && kept.count < data.count, "kept \(kept.count) of \(data.count)")
        try await withServing(s.other, server: ChunkServer(provider: counting)) {
            let second = try await s.client.peers.client(for: s.other.address)
            let report = try await ContentFetcher(store: s.client.store, sources: [second]).fetch(s.content.id)
            #expect(report.chunksAlreadyPresent == kept.count)
            #expect(counting.distinct.isDisjoint(with: kept), "verified chunks were downloaded again")
        }
        #expect(try s.restored() == s.content.bytes)
        await s.close()
    }
}

/// The data chunk ids of content in a store.
func dataChunks(of root: ContentID, in store: any ChunkStore) async throws -> [ChunkID] {
    try await ContentPlan.resolve(root) { try store.read($0) }.dataChunks.map(\.id)
}

/// Notes from a fetcher, collected across tasks.
///
/// `@unchecked Sendable`: state behind `lock`.
final class NoteLog: @unchecked Sendable {
    private let lock = NSLock()
    private var notes: [String] = []
    func add(_ note: String) { lock.withLock { notes.append(note) } }
    var all: [String] { lock.withLock { notes } }
}

/// True the first time only.
///
/// `@unchecked Sendable`: state behind `lock`.
final class KillOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func first() -> Bool { lock.withLock { defer { done = true }; return !done } }
}
