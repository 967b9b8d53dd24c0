import DequeModule
import STOQContent
import STOQSimulation
import STOQWire

/// Runs a ``SwarmScheduler`` against simulated sources under `STOQSimulation`'s virtual clock.
///
/// Topology: one client node, one relay node that stands for the client's access link (its
/// link to the client has the receiver's rate, so all sources share it), and one node per
/// source. A source serves its requests in order, paced at its own rate in segments; the
/// last segment of a chunk carries the SHA-256 id of the bytes the source holds (a corrupt
/// source holds different bytes, so the id differs) and the client verifies it against the
/// manifest's id before reporting the chunk. Deterministic from the scenario's seed.
public enum SwarmSimulation {
    /// How a simulated source behaves.
    public enum Behavior: Hashable, Sendable {
        /// Serves every request it can at its rate.
        case honest
        /// Accepts requests and never sends a byte.
        case stallForever
        /// Serves this many bytes in total, then sends nothing more (a hung peer).
        case stallAfter(bytes: Int)
        /// Serves bytes that do not hash to the chunk id.
        case corrupt
        /// Answers not-found for these chunk indices.
        case notFound(Set<Int>)
    }

    /// One simulated source.
    public struct SourceSpec: Hashable, Sendable {
        /// Its serving rate in bytes per second.
        public var rateBytesPerSecond: Double
        /// One-way latency between it and the client.
        public var oneWayLatency: SimDuration
        /// How it behaves.
        public var behavior: Behavior
        /// Its HAVE bitfield (nil: it has everything).
        public var have: ChunkBitfield?
        /// Kill the node at this virtual time after the start (nil: never).
        public var killAt: SimDuration?

        /// Creates a source description.
        public init(rateBytesPerSecond: Double, oneWayLatency: SimDuration = .milliseconds(10), behavior: Behavior = .honest, have: ChunkBitfield? = nil, killAt: SimDuration? = nil) {
            self.rateBytesPerSecond = rateBytesPerSecond
            self.oneWayLatency = oneWayLatency
            self.behavior = behavior
            self.have = have
            self.killAt = killAt
        }
    }

    /// A period during which some sources cannot reach the client nor be reached by it (every
    /// message between them is lost, in both directions, including those in flight when it
    /// starts); the sources keep running and the rest of the network is unaffected.
    public struct Partition: Hashable, Sendable {
        /// The sources cut off (indices into ``Scenario/sources``).
        public var sources: [Int]
        /// When the partition starts, after the start of the run.
        public var start: SimDuration
        /// How long it lasts.
        public var duration: SimDuration

        /// Creates a partition of `sources` from `start` for `duration`.
        public init(sources: [Int], start: SimDuration, duration: SimDuration) {
            self.sources = sources
            self.start = start
            self.duration = duration
        }
    }

    /// A whole run.
    public struct Scenario: Sendable {
        /// Chunks in the content.
        public var chunkCount: Int
        /// Bytes per chunk (the last chunk may be given a different size with `lastChunkSize`).
        public var chunkSize: Int
        /// Size of the last chunk (nil: `chunkSize`).
        public var lastChunkSize: Int?
        /// Bytes a source sends per segment (the runtime's progress granularity).
        public var segmentSize: Int = 32 << 10
        /// The sources, in order; source `i` is `SourceID(i)`.
        public var sources: [SourceSpec]
        /// The client's receive rate in bytes per second shared by all sources (nil: unlimited).
        public var receiverRateBytesPerSecond: Double?
        /// Chunks already present (resume).
        public var present: [Int] = []
        /// When set, a killed source is also reported down by health probing this long after it
        /// died; a partitioned source is reported down this long after the partition starts and
        /// up again this long after it heals.
        public var healthDetectionDelay: SimDuration?
        /// Periods during which sources are cut off from the client.
        public var partitions: [Partition] = []
        /// The scheduler's tuning (its seed is replaced by one derived from `seed`).
        public var configuration = SwarmConfiguration()
        /// The seed of the run.
        public var seed: UInt64
        /// Give up after this much virtual time.
        public var deadline: SimDuration = .seconds(600)

        /// Creates a scenario.
        public init(chunkCount: Int, chunkSize: Int, sources: [SourceSpec], receiverRateBytesPerSecond: Double? = nil, seed: UInt64) {
            self.chunkCount = chunkCount
            self.chunkSize = chunkSize
            self.sources = sources
            self.receiverRateBytesPerSecond = receiverRateBytesPerSecond
            self.seed = seed
        }
    }

    /// What happened in a run.
    public struct Result: Sendable {
        /// The seed of the run (print it when a check fails).
        public var seed: UInt64
        /// Whether `.completed` was emitted.
        public var completed: Bool
        /// The failure, if `.failed` was emitted.
        public var failure: SwarmError?
        /// Virtual time from the start to completion or failure (or the deadline).
        public var duration: SimDuration
        /// The scheduler's final progress.
        public var progress: SwarmProgress
        /// Chunks the client verified (each counted once).
        public var verifiedChunks: Int
        /// Chunks that arrived and did not verify.
        public var rejectedChunks: Int
        /// Requests the scheduler issued for chunks present at the start (must be zero).
        public var requestsForPresentChunks: Int
        /// Requests issued in total.
        public var requestsIssued: Int
        /// Cancels issued in total.
        public var cancelsIssued: Int
        /// Per killed source: time from its death until the last of its outstanding requests
        /// was issued to another source.
        public var failoverTimes: [SimDuration]
        /// Bytes the client had to fetch (total minus present).
        public var bytesToFetch: Int
        /// `bytesToFetch / duration`, bytes per second.
        public var goodputBytesPerSecond: Double { duration.nanoseconds == 0 ? 0 : Double(bytesToFetch) / duration.seconds }
        /// Verified bytes per source, in source order.
        public var bytesPerSource: [Int] { progress.sources.map(\.bytesDelivered) }
    }

    /// The messages of the simulated protocol.
    public enum Message: Sendable {
        /// Client → source: send chunk `chunk` under request number `request`.
        case get(request: UInt64, chunk: Int)
        /// Client → source: stop serving `request`.
        case cancel(request: UInt64)
        /// Source → relay → client: `bytes` bytes of `request`; the last segment carries the
        /// id of the bytes the source holds.
        case data(request: UInt64, source: Int, bytes: Int, digest: ChunkID?)
        /// Source → relay → client: the source does not have the chunk.
        case notFound(request: UInt64, source: Int)
    }

    /// A node of the simulated network: the client, the relay or a source.
    public struct Node: SimulatedNode {
        fileprivate var client: ClientState?
        fileprivate var source: SourceState?
        fileprivate var relayTarget: SimNodeID?
        fileprivate var outbox: Deque<SimTransmit<Message>> = []

        /// Relays, serves or (on the client) feeds the scheduler.
        public mutating func handle(message: Message, from: SimNodeID, now: SimInstant) {
            if let target = relayTarget {
                let size: Int
                if case .data(_, _, let bytes, _) = message { size = bytes + 40 } else { size = 40 }
                outbox.append(SimTransmit(to: target, message: message, size: size))
            } else if client != nil {
                client!.handle(message, now: now.nanoseconds)
            } else if source != nil {
                source!.handle(message, now: now.nanoseconds, outbox: &outbox)
            }
        }

        /// The client's scheduler timer or a source's pacing timer.
        public mutating func handleTimeout(now: SimInstant) {
            if client != nil { client!.scheduler.handleTimeout(now: now.nanoseconds) }
            if source != nil { source!.handleTimeout(now: now.nanoseconds, outbox: &outbox) }
        }

        /// Takes the scheduler's actions (client) and sends what is queued.
        public mutating func pollTransmit(now: SimInstant) -> SimTransmit<Message>? {
            if client != nil { client!.drain(now: now.nanoseconds, outbox: &outbox) }
            return outbox.popFirst()
        }

        /// The scheduler's deadline (client) or the next paced segment (source).
        public func pollTimeout() -> SimInstant? {
            if let client { return client.scheduler.pollTimeout().map { SimInstant(nanoseconds: $0) } }
            if let source { return source.pollTimeout().map { SimInstant(nanoseconds: $0) } }
            return nil
        }
    }

    fileprivate struct ClientState {
        var scheduler: SwarmScheduler
        var chunkIDs: [ChunkID]
        var sourceBase: Int
        var presentAtStart: Set<Int>
        var verified: Set<Int> = []
        var rejected = 0
        var requestsForPresent = 0
        var requestsIssued = 0
        var cancelsIssued = 0
        var finishedAt: UInt64?
        var failure: SwarmError?
        var completed = false
        /// Per kill: the kill time and the chunks still waiting to run elsewhere.
        var failoverWatches: [(killedAt: UInt64, source: SourceID, waiting: Set<Int>, last: UInt64)] = []

        mutating func handle(_ message: Message, now: UInt64) {
            switch message {
            case .data(let raw, _, let bytes, let digest):
                let id = RequestID(rawValue: raw)
                guard let (_, chunk) = scheduler.request(id) else { return }
                scheduler.handleProgress(id, bytes: bytes, now: now)
                if let digest {
                    let ok = digest == chunkIDs[chunk]
                    if ok { verified.insert(chunk) } else { rejected += 1 }
                    scheduler.handleResponse(id, verified: ok, now: now)
                }
            case .notFound(let raw, _):
                scheduler.handleFailure(RequestID(rawValue: raw), .notFound, now: now)
            case .get, .cancel:
                break
            }
        }

        mutating func watchKill(of source: SourceID, now: UInt64) {
            var waiting = Set<Int>()
            for (_, chunk) in scheduler.outstandingRequests(of: source) where !scheduler.sources(fetching: chunk).contains(where: { $0 != source }) {
                waiting.insert(chunk)
            }
            failoverWatches.append((now, source, waiting, now))
        }

        mutating func drain(now: UInt64, outbox: inout Deque<SimTransmit<Message>>) {
            // A chunk whose last bytes were already on the wire when its source died needs no failover.
            for index in failoverWatches.indices where !failoverWatches[index].waiting.isEmpty {
                failoverWatches[index].waiting = failoverWatches[index].waiting.filter { !scheduler.isPresent($0) }
            }
            while let action = scheduler.pollAction() {
                switch action {
                case .request(let id, let source, let chunk):
                    requestsIssued += 1
                    if presentAtStart.contains(chunk) { requestsForPresent += 1 }
                    for index in failoverWatches.indices where failoverWatches[index].source != source && failoverWatches[index].waiting.remove(chunk) != nil {
                        failoverWatches[index].last = now
                    }
                    outbox.append(SimTransmit(to: node(of: source), message: .get(request: id.rawValue, chunk: chunk), size: 60))
                case .cancel(let id, let source, _):
                    cancelsIssued += 1
                    outbox.append(SimTransmit(to: node(of: source), message: .cancel(request: id.rawValue), size: 40))
                case .sourceBanned:
                    break
                case .completed:
                    completed = true
                    finishedAt = now
                case .failed(let error):
                    failure = error
                    finishedAt = now
                }
            }
        }

        func node(of source: SourceID) -> SimNodeID {
            SimNodeID(sourceBase + Int(source.rawValue.dropFirst())!)
        }
    }

    fileprivate struct SourceState {
        var number: Int
        var spec: SourceSpec
        var chunkSizes: [Int]
        var chunkIDs: [ChunkID]
        var segmentSize: Int
        var relay: SimNodeID
        var queue: Deque<(request: UInt64, chunk: Int, sent: Int)> = []
        var nextSendAt: UInt64 = 0
        var totalSent = 0

        var stalled: Bool {
            switch spec.behavior {
            case .stallForever: true
            case .stallAfter(let bytes): totalSent >= bytes
            default: false
            }
        }

        mutating func handle(_ message: Message, now: UInt64, outbox: inout Deque<SimTransmit<Message>>) {
            switch message {
            case .get(let request, let chunk):
                if case .notFound(let missing) = spec.behavior, missing.contains(chunk) {
                    outbox.append(SimTransmit(to: relay, message: .notFound(request: request, source: number), size: 40))
                    return
                }
                if let have = spec.have, chunk >= have.count || !have[chunk] {
                    outbox.append(SimTransmit(to: relay, message: .notFound(request: request, source: number), size: 40))
                    return
                }
                if queue.isEmpty { nextSendAt = max(nextSendAt, now) }
                queue.append((request, chunk, 0))
            case .cancel(let request):
                queue.removeAll { $0.request == request }
            case .data, .notFound:
                break
            }
        }

        func pollTimeout() -> UInt64? {
            queue.isEmpty || stalled ? nil : nextSendAt
        }

        mutating func handleTimeout(now: UInt64, outbox: inout Deque<SimTransmit<Message>>) {
            guard !queue.isEmpty, !stalled, now >= nextSendAt else { return }
            var head = queue[0]
            let size = chunkSizes[head.chunk]
            let bytes = min(segmentSize, size - head.sent)
            head.sent += bytes
            totalSent += bytes
            var digest: ChunkID?
            if head.sent >= size {
                digest = spec.behavior == .corrupt ? ChunkID.of(Array("corrupt copy of \(chunkIDs[head.chunk].hex)".utf8)) : chunkIDs[head.chunk]
                queue.removeFirst()
            } else {
                queue[0] = head
            }
            outbox.append(SimTransmit(to: relay, message: .data(request: head.request, source: number, bytes: bytes, digest: digest), size: bytes + 40))
            nextSendAt = now + UInt64(Double(bytes) / spec.rateBytesPerSecond * 1e9)
        }
    }

    /// The id of chunk `index` of the synthetic content of `seed`.
    public static func chunkID(seed: UInt64, index: Int) -> ChunkID {
        ChunkID.of(Array("stoq swarm simulation \(seed) chunk \(index)".utf8))
    }

    /// Runs `scenario` to completion, failure or its deadline.
    public static func run(_ scenario: Scenario) -> Result {
        let clientNode = SimNodeID(0)
        let relayNode = SimNodeID(1)
        let sourceBase = 2
        var sizes = Array(repeating: scenario.chunkSize, count: scenario.chunkCount)
        if let last = scenario.lastChunkSize, !sizes.isEmpty { sizes[sizes.count - 1] = last }
        let ids = (0 ..< scenario.chunkCount).map { chunkID(seed: scenario.seed, index: $0) }
        let chunks = (0 ..< scenario.chunkCount).map { SwarmChunk(index: $0, id: ids[$0], size: sizes[$0]) }
        var configuration = scenario.configuration
        configuration.seed = scenario.seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        var scheduler = SwarmScheduler(chunks: chunks, present: scenario.present, configuration: configuration)
        for (number, spec) in scenario.sources.enumerated() {
            scheduler.handleSourceAdded(SourceID(number), have: spec.have, now: 0)
        }
        var nodes: [Node] = []
        nodes.append(Node(client: ClientState(scheduler: scheduler, chunkIDs: ids, sourceBase: sourceBase, presentAtStart: Set(scenario.present))))
        nodes.append(Node(relayTarget: clientNode))
        for (number, spec) in scenario.sources.enumerated() {
            nodes.append(Node(source: SourceState(number: number, spec: spec, chunkSizes: sizes, chunkIDs: ids, segmentSize: scenario.segmentSize, relay: relayNode)))
        }
        var simulator = Simulator(nodes: nodes, seed: scenario.seed, link: SimLink(latency: .zero))
        if let rate = scenario.receiverRateBytesPerSecond {
            simulator.setLink(from: relayNode, to: clientNode, SimLink(latency: .zero, bandwidthBitsPerSecond: UInt64(rate * 8), maxQueueDelay: .seconds(3600)))
        }
        for (number, spec) in scenario.sources.enumerated() {
            let node = SimNodeID(sourceBase + number)
            simulator.setLink(from: clientNode, to: node, SimLink(latency: spec.oneWayLatency))
            simulator.setLink(from: node, to: relayNode, SimLink(latency: spec.oneWayLatency))
            if let killAt = spec.killAt {
                let detection = scenario.healthDetectionDelay
                simulator.schedule(at: .zero + killAt) { sim in
                    sim.kill(node)
                    sim.withNode(clientNode) { client, now in client.client!.watchKill(of: SourceID(number), now: now.nanoseconds) }
                }
                if let detection {
                    simulator.schedule(at: .zero + killAt + detection) { sim in
                        sim.withNode(clientNode) { client, now in client.client!.scheduler.handleSourceDown(SourceID(number), now: now.nanoseconds) }
                    }
                }
            }
        }
        // Partitions: at every boundary the cuts are rebuilt from the partitions active then.
        let boundaries = Set(scenario.partitions.flatMap { [$0.start, $0.start + $0.duration] }).sorted()
        for boundary in boundaries {
            let active = scenario.partitions.filter { $0.start <= boundary && boundary < $0.start + $0.duration }
            simulator.schedule(at: .zero + boundary) { sim in
                sim.heal()
                for partition in active {
                    sim.cut([clientNode, relayNode], partition.sources.map { SimNodeID(sourceBase + $0) })
                }
            }
        }
        if let detection = scenario.healthDetectionDelay {
            for partition in scenario.partitions {
                simulator.schedule(at: .zero + partition.start + detection) { sim in
                    sim.withNode(clientNode) { client, now in
                        for source in partition.sources { client.client!.scheduler.handleSourceDown(SourceID(source), now: now.nanoseconds) }
                    }
                }
                simulator.schedule(at: .zero + partition.start + partition.duration + detection) { sim in
                    sim.withNode(clientNode) { client, now in
                        for source in partition.sources { client.client!.scheduler.handleSourceUp(SourceID(source), now: now.nanoseconds) }
                    }
                }
            }
        }
        // Kick the client so its first requests go out through the simulator.
        simulator.withNode(clientNode) { _, _ in }
        let deadline = SimInstant.zero + scenario.deadline
        while simulator.now < deadline, simulator[clientNode].client!.finishedAt == nil {
            guard let next = simulator.nextEventTime, next <= deadline else { break }
            simulator.step()
        }
        let client = simulator[clientNode].client!
        let end = client.finishedAt.map { SimInstant(nanoseconds: $0) } ?? simulator.now
        let toFetch = zip(chunks, 0...).filter { !Set(scenario.present).contains($0.1) }.reduce(0) { $0 + $1.0.size }
        return Result(
            seed: scenario.seed,
            completed: client.completed,
            failure: client.failure,
            duration: end - .zero,
            progress: client.scheduler.progress,
            verifiedChunks: client.verified.count,
            rejectedChunks: client.rejected,
            requestsForPresentChunks: client.requestsForPresent,
            requestsIssued: client.requestsIssued,
            cancelsIssued: client.cancelsIssued,
            failoverTimes: client.failoverWatches.map { watch in
                // A chunk never reissued counts as failing over at the end of the run (pessimistic).
                SimDuration(nanoseconds: (watch.waiting.isEmpty ? watch.last : end.nanoseconds) - watch.killedAt)
            },
            bytesToFetch: toFetch)
    }
}
