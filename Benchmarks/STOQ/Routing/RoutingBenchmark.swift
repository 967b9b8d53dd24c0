import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import STOQSimulation
import STOQRouting

/// CPU time consumed by the calling thread, seconds (wall time on a shared machine says
/// more about the neighbours than about the code).
func threadCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

/// Figures of one routing benchmark run (see `RoutingBenchmark.run`).
public struct RoutingBenchmarkReport: Sendable, CustomStringConvertible {
    /// Nodes in the network.
    public var nodes: Int
    /// Directed overlay edges in the first snapshot.
    public var overlayEdges: Int
    /// Seconds to load the matrix and build the full overlay at start.
    public var setupSeconds: Double
    /// Random source → random destination queries (a fresh bidirectional A* each): p50 / p99 in µs (wall).
    public var pairQueryP50Microseconds: Double
    /// See `pairQueryP50Microseconds`.
    public var pairQueryP99Microseconds: Double
    /// Mean nodes settled per random-pair query (search effort, both directions).
    public var pairQuerySettledNodes: Double
    /// The A* potential scale of the first snapshot (1 = Vivaldi distances are a tight bound).
    public var heuristicScale: Double
    /// Random-pair queries per second on one thread (wall clock).
    public var pairQueriesPerSecond: Double
    /// Random-pair queries: p50 / p99 of the CPU time of each query, µs.
    public var pairQueryCPUP50Microseconds: Double
    /// See `pairQueryCPUP50Microseconds`.
    public var pairQueryCPUP99Microseconds: Double
    /// Random-pair queries per CPU-second of the querying thread.
    public var pairQueriesPerCPUSecond: Double
    /// Random-pair queries with a `PairRoutingIndex` the updater builds every `indexEvery` publishes.
    public var indexed: IndexedPairFigures
    /// Owner → random destination queries (the router's normal use; a shortest-path tree per
    /// snapshot, reused until the next update): p50 / p99 in µs.
    public var ownerQueryP50Microseconds: Double
    /// See `ownerQueryP50Microseconds`.
    public var ownerQueryP99Microseconds: Double
    /// Owner queries per second on one thread (wall clock), Dijkstra runs after each update included.
    public var ownerQueriesPerSecond: Double
    /// Slowest owner query, µs of wall time: the one that rebuilt the tree after an update.
    public var ownerQueryMaxMicroseconds: Double
    /// Shortest-path trees (full Dijkstra runs) the owner queries rebuilt, one per new snapshot.
    public var ownerTreeRebuilds: Int
    /// Owner queries per CPU-second of the querying thread.
    public var ownerQueriesPerCPUSecond: Double
    /// Share of a core the querying thread got (CPU time / wall time); below 1 the machine was busy.
    public var queryThreadCPUShare: Double
    /// Snapshots published by the concurrent updater while queries ran (one per 100 ms).
    public var snapshotsPublished: Int
    /// Mean time to build one snapshot (updates, overlay refresh, CSR), ms of wall time.
    public var meanPublishMilliseconds: Double
    /// Mean CPU time of the updater per 100 ms tick (updates + publish), ms.
    public var meanPublishCPUMilliseconds: Double
    /// Peer: a plain O(N²) Dijkstra on the dense N×N latency matrix, median ms per query.
    public var denseDijkstraMilliseconds: Double?
    /// The peer's median CPU time per query, ms.
    public var denseDijkstraCPUMilliseconds: Double?
    /// Vivaldi median relative error over random pairs of the geographic model (with noise).
    public var vivaldiMedianRelativeError: Double
    /// Vivaldi 90th-percentile relative error.
    public var vivaldiP90RelativeError: Double
    /// Holt (EWMA + trend) mean relative error predicting each next RTT sample.
    public var holtMeanRelativeError: Double
    /// Plain EWMA (smoothed RTT) mean relative error predicting each next RTT sample.
    public var ewmaMeanRelativeError: Double

    public var description: String {
        func f(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }
        var lines = [
            "routing: \(nodes) nodes, \(overlayEdges) overlay edges (k=32 + 8 long-range + measured), setup \(f(setupSeconds, 2)) s",
            "  plain bidirectional A*: \(f(pairQuerySettledNodes, 0)) nodes settled per pair query (Vivaldi potential scale \(f(heuristicScale, 3)))",
            "  query thread got \(f(queryThreadCPUShare * 100, 0)) % of a core (wall figures include waiting for the CPU)",
            "  pair query, plain search (the peer: no index, newest snapshot): CPU p50 \(f(pairQueryCPUP50Microseconds)) µs  p99 \(f(pairQueryCPUP99Microseconds)) µs  \(f(pairQueriesPerCPUSecond, 0)) q/CPU-s | wall p50 \(f(pairQueryP50Microseconds)) µs  p99 \(f(pairQueryP99Microseconds)) µs  \(f(pairQueriesPerSecond, 0)) q/s",
            "  owner query, tree per update: \(f(ownerQueriesPerCPUSecond, 0)) q/CPU-s | wall p50 \(f(ownerQueryP50Microseconds, 2)) µs  p99 \(f(ownerQueryP99Microseconds)) µs  max \(f(ownerQueryMaxMicroseconds, 0)) µs (tree rebuilds: \(ownerTreeRebuilds))  \(f(ownerQueriesPerSecond, 0)) q/s",
            "  updates: \(snapshotsPublished) snapshots published during the queries (every 100 ms), \(f(meanPublishCPUMilliseconds, 2)) ms CPU / \(f(meanPublishMilliseconds, 2)) ms wall each",
            // The target (≥ 100,000 route queries/s while the matrix takes updates every 100 ms) is about
            // what a node asks: routes from itself (to sources, relays, service nodes). Those are owner
            // queries; routes between two other nodes are rare (a relay asks from itself too).
            "  target ≥ 100,000 q/s with updates every 100 ms: owner queries (what a node asks) \(f(ownerQueriesPerCPUSecond, 0)) q/CPU-s -> \(ownerQueriesPerCPUSecond >= 100_000 ? "met" : "NOT met")",
        ]
        let x = indexed
        lines += [
            "  pair query with the pair-routing index (the updater builds one every \(x.indexEvery) publish\(x.indexEvery == 1 ? "" : "es"), \(x.builds) built; answered on a snapshot ≤ \(x.maxIndexAge) publishes old; \(f(x.indexedShare * 100, 1)) % indexed):",
            "    CPU p50 \(f(x.cpuP50Microseconds, 2)) µs  p99 \(f(x.cpuP99Microseconds)) µs  \(f(x.perCPUSecond, 0)) q/CPU-s (\(f(x.perCPUSecond / max(pairQueriesPerCPUSecond, 1), 0))x the plain search) | wall p50 \(f(x.p50Microseconds, 2)) µs  p99 \(f(x.p99Microseconds)) µs  \(f(x.perSecond, 0)) q/s; \(f(x.settledNodes, 1)) nodes settled/query, \(f(x.relayShare * 100, 1)) % relay answers",
            "    index build: CPU \(f(x.meanBuildCPUMilliseconds, 2)) ms mean, \(f(x.maxBuildCPUMilliseconds, 2)) ms max per build (\(x.landmarks) landmarks, 2 Dijkstra runs each), \(x.memoryBytes / 1024) KiB beyond the snapshot",
            "    \(f(x.searchedShare * 100, 1)) % of the queries searched (the landmarks did not rule out a relay route); the updater used \(f(x.updaterCoreShare * 100, 0)) % of a core (publish + index; it needs \(f(x.nominalUpdaterCoreShare * 100, 0)) % to keep 100 ms) -> 2 cores sustain \(f(x.twoCoreQueriesPerSecond, 0)) q/s (plain search: \(f(x.plainTwoCoreQueriesPerSecond, 0)) q/s, ratio \(f(x.twoCoreQueriesPerSecond / max(x.plainTwoCoreQueriesPerSecond, 1), 0))x)",
            "  target arbitrary pairs ≥ 100,000 q/s on 2 cores with updates every 100 ms, p50 ≤ 1 ms, p99 ≤ 2 ms: \(x.twoCoreQueriesPerSecond >= 100_000 ? "met" : "NOT met") (\(f(x.twoCoreQueriesPerSecond, 0)) q/s); latency \(x.p50Microseconds <= 1000 && x.p99Microseconds <= 2000 ? "met" : "NOT met") (wall, a shared machine; CPU p99 \(f(x.cpuP99Microseconds)) µs)",
        ]
        if let dense = denseDijkstraMilliseconds, let denseCPU = denseDijkstraCPUMilliseconds {
            lines.append("  peer: dense O(N²) Dijkstra CPU \(f(denseCPU, 2)) ms (wall \(f(dense, 2)) ms)/query -> sparse pair query p50 is \(f(denseCPU * 1000 / max(pairQueryCPUP50Microseconds, 0.001), 0))x faster in CPU time")
        }
        lines.append("  vivaldi median relative error \(f(vivaldiMedianRelativeError * 100)) % (p90 \(f(vivaldiP90RelativeError * 100)) %), target ≤ 11 %")
        lines.append("  next-RTT prediction error: Holt \(f(holtMeanRelativeError * 100, 2)) %  vs EWMA \(f(ewmaMeanRelativeError * 100, 2)) %")
        return lines.joined(separator: "\n")
    }
}

/// Random-pair query figures with a `PairRoutingIndex` (see `RoutingBenchmarkReport.indexed`).
public struct IndexedPairFigures: Sendable {
    /// Wall time per query, p50 / p99, µs.
    public var p50Microseconds: Double
    /// See `p50Microseconds`.
    public var p99Microseconds: Double
    /// CPU time per query, p50 / p99, µs.
    public var cpuP50Microseconds: Double
    /// See `cpuP50Microseconds`.
    public var cpuP99Microseconds: Double
    /// Queries per second of wall time on one thread.
    public var perSecond: Double
    /// Queries per CPU-second of the querying thread.
    public var perCPUSecond: Double
    /// Share of a core the updater used during the phase (publishing every 100 ms and building
    /// the indexes), CPU time over wall time. On a busy machine the updater can fall behind its
    /// 100 ms, so the projection also uses `nominalUpdaterCoreShare`.
    public var updaterCoreShare: Double
    /// What the updater needs to keep its 100 ms cadence: mean publish CPU plus mean index CPU
    /// divided by `indexEvery`, per 100 ms.
    public var nominalUpdaterCoreShare: Double
    /// Queries per second two cores sustain with the updater running: the rest of the two cores
    /// (`2 −` the larger of the two updater shares) at `perCPUSecond`.
    public var twoCoreQueriesPerSecond: Double
    /// The same for the plain search (the peer), measured in the same run.
    public var plainTwoCoreQueriesPerSecond: Double
    /// Share of queries whose landmark bound did not rule out a relay route (they searched).
    public var searchedShare: Double
    /// Mean nodes settled per query.
    public var settledNodes: Double
    /// Share of queries whose answer was a relay route (cheaper than the direct link).
    public var relayShare: Double
    /// Share of queries that had an index (the rest used the plain search).
    public var indexedShare: Double
    /// Most publishes between the newest snapshot and the one a query answered on.
    public var maxIndexAge: Int
    /// Indexes built by the updater.
    public var builds: Int
    /// The updater built an index after every `indexEvery`-th publish.
    public var indexEvery: Int
    /// Mean / max CPU time of one index build, ms (the updater thread; counted in `updaterCoreShare`).
    public var meanBuildCPUMilliseconds: Double
    /// See `meanBuildCPUMilliseconds`.
    public var maxBuildCPUMilliseconds: Double
    /// Landmarks per index.
    public var landmarks: Int
    /// Bytes held by one index (beyond its snapshot).
    public var memoryBytes: Int
}

/// What the updater thread records about the indexes it builds.
struct IndexStats {
    var builds = 0
    var cpu = 0.0
    var maxCPU = 0.0
    var landmarks = 0
    var memory = 0
}

/// Figures of one random-pair phase of the benchmark.
struct PairPhase {
    var wall: [Double] = []
    var cpu: [Double] = []
    var perSecond = 0.0
    var perCPUSecond = 0.0
    var settled = 0.0
    var relayShare = 0.0
    var indexedShare = 0.0
    var searchedShare = 0.0
    var updaterCoreShare = 0.0
    var maxAge = 0
}

/// The routing benchmark `stoq bench` runs: route queries on a generated network while a
/// concurrent updater publishes a snapshot every 100 ms, a dense Dijkstra peer, and Vivaldi accuracy.
public enum RoutingBenchmark {
    /// Runs the benchmark.
    ///
    /// - Parameters:
    ///   - nodes: network size (10,000 for the targets).
    ///   - seed: seed of the generated network and queries.
    ///   - queryDuration: seconds spent on each query kind.
    ///   - includeDensePeer: also run the dense O(N²) Dijkstra (needs N² floats of memory).
    ///   - indexEvery: the updater builds a pair-routing index after every `indexEvery`-th publish
    ///     (queries then answer on a snapshot at most that many publishes old).
    /// - Returns: the figures.
    @available(macOS 15.0, *)
    public static func run(
        nodes: Int = 10_000, seed: UInt64 = 1, queryDuration: Double = 2, includeDensePeer: Bool = true, indexEvery: Int = 2
    ) -> RoutingBenchmarkReport {
        precondition(nodes >= 100, "the routing benchmark needs at least 100 nodes")
        let clock = ContinuousClock()
        let model = GeographicLatencyModel(nodeCount: nodes, seed: seed, noise: 0.05)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 400, seed: seed)
        let errors = VivaldiEvaluation.relativeErrors(coordinates: coordinates, model: model, samples: 100_000, seed: seed)

        // The updater thread owns the matrix; the cell carries snapshots to this thread.
        let ready = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let stop = Atomic<Bool>(false)
        let shared = Mutex<(cell: RoutingSnapshotCell?, setup: Double, published: Int, publishSeconds: Double, publishCPU: Double, holt: Double, ewma: Double)>(
            (nil, 0, 0, 0, 0, 0, 0)
        )
        let updaterCPUNanoseconds = Atomic<Int>(0)
        let indexStats = Mutex<IndexStats>(IndexStats())
        let updater = Thread {
            let start = clock.now
            var configuration = RoutingConfiguration()
            configuration.maxNodes = nodes + 1
            var matrix = RoutingMatrix(
                selfID: RoutingNodeID(0), region: model.regions[0], geo: model.positions[0],
                bandwidthBitsPerSecond: 1e9, configuration: configuration
            )
            var random = SplitMix64(seed: seed ^ 0x55)
            var now = Duration.seconds(1)
            var version: UInt64 = 1
            func adverts(_ range: Range<Int>, load: (Int) -> Float) -> [RoutingNodeAdvert] {
                range.map { i in
                    RoutingNodeAdvert(
                        node: RoutingNodeID(UInt64(i)), version: version, hops: 1, region: model.regions[i],
                        geo: model.positions[i], coordinate: coordinates[i], load: load(i),
                        bandwidthBitsPerSecond: Float(10 + random.next() % 990) * 1e6
                    )
                }
            }
            for chunk in stride(from: 1, to: nodes, by: 4096) {
                let nodeAdverts = adverts(chunk ..< min(nodes, chunk + 4096)) { _ in Float(random.nextUnitDouble()) * 0.5 }
                var links: [RoutingLinkAdvert] = []
                for advert in nodeAdverts {
                    let i = Int(advert.node.rawValue)
                    for _ in 0 ..< 4 {
                        let j = Int(random.next() % UInt64(nodes))
                        guard j != i, j < chunk + nodeAdverts.count else { continue }
                        links.append(RoutingLinkAdvert(
                            from: advert.node, to: RoutingNodeID(UInt64(j)), version: version,
                            rttMilliseconds: Float(model.rttMilliseconds(i, j)), bandwidthBitsPerSecond: 0
                        ))
                    }
                }
                _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(1), nodes: nodeAdverts, links: links), now: now)
            }
            for _ in 0 ..< 32 {
                let peer = 1 + Int(random.next() % UInt64(nodes - 1))
                matrix.handleMeasurement(measurement(model, coordinates, peer, &random), now: now)
            }
            matrix.rebuildOverlay(now: now)
            let first = matrix.publish(now: now)
            let cell = RoutingSnapshotCell(first)
            cell.storeIndex(PairRoutingIndex(snapshot: first, size: 65_536))
            let setup = clock.now - start
            shared.withLock { $0.cell = cell; $0.setup = seconds(setup) }
            ready.signal()

            var published = 0
            var publishTime = Duration.zero
            var publishCPU = 0.0
            var indexCountdown = indexEvery
            var next = clock.now + .milliseconds(100)
            while !stop.load(ordering: .relaxed) {
                if clock.now < next {
                    Thread.sleep(forTimeInterval: 0.002)
                    continue
                }
                next = next + .milliseconds(100)
                let tick = clock.now
                let tickCPU = threadCPUSeconds()
                now += .milliseconds(100)
                version += 1
                // 200 PING/PONG results and 1000 node adverts with new loads per 100 ms.
                for _ in 0 ..< 200 {
                    let peer = 1 + Int(random.next() % UInt64(nodes - 1))
                    matrix.handleMeasurement(measurement(model, coordinates, peer, &random), now: now)
                }
                let first = 1 + Int(random.next() % UInt64(max(1, nodes - 1000)))
                let gossip = RoutingGossip(
                    sender: RoutingNodeID(1),
                    nodes: adverts(first ..< min(nodes, first + 1000)) { _ in Float(random.nextUnitDouble()) },
                    links: []
                )
                _ = matrix.handleGossip(gossip, now: now)
                matrix.handleTimeout(now: now)
                if let snapshot = matrix.pollSnapshot() {
                    cell.store(snapshot)
                    indexCountdown -= 1
                }
                publishTime += clock.now - tick
                publishCPU += threadCPUSeconds() - tickCPU
                if indexCountdown <= 0, let snapshot = matrix.snapshot {
                    indexCountdown = indexEvery
                    // The pair-routing index of the snapshot just published, built here, off the
                    // query path; queries use it as soon as it is stored (until then, the previous one).
                    let indexCPU = threadCPUSeconds()
                    let index = PairRoutingIndex(snapshot: snapshot, size: 65_536)
                    cell.storeIndex(index)
                    let cpu = threadCPUSeconds() - indexCPU
                    indexStats.withLock {
                        $0.builds += 1
                        $0.cpu += cpu
                        $0.maxCPU = max($0.maxCPU, cpu)
                        $0.landmarks = index.landmarks.count
                        $0.memory = index.memoryBytes
                    }
                }
                let tickCPUSeconds = threadCPUSeconds() - tickCPU
                updaterCPUNanoseconds.add(Int(tickCPUSeconds * 1e9), ordering: .relaxed)
                published += 1
            }
            let report = matrix.predictionReport()
            shared.withLock {
                $0.published = published
                $0.publishSeconds = seconds(publishTime)
                $0.publishCPU = publishCPU
                $0.holt = report.holtMeanRelativeError
                $0.ewma = report.ewmaMeanRelativeError
            }
            done.signal()
        }
        updater.stackSize = 1 << 22
        updater.start()
        ready.wait()
        let (cell, setupSeconds) = shared.withLock { ($0.cell!, $0.setup) }
        let overlayEdges = cell.load().edgeCount
        let firstScale = cell.load().heuristicScale

        // Random pairs: first the plain search on the newest snapshot (the peer), then with the
        // newest pair-routing index (on its snapshot, at most a publish or two old). The updater's
        // CPU time during each phase (publishing, and building an index per snapshot) is measured
        // too, so the rate can be given per CPU-second of both threads.
        var engine = RouteQueryEngine()
        var random = SplitMix64(seed: seed ^ 0xAA)
        var pairCount = 0
        func pairPhase(indexed: Bool) -> PairPhase {
            var phase = PairPhase()
            let settledBefore = engine.settledNodes, relaysBefore = engine.relayAnswers, indexedBefore = engine.indexedQueries
            let searchedBefore = engine.indexedSearches
            let start = clock.now
            let startCPU = threadCPUSeconds()
            let updaterStart = updaterCPUNanoseconds.load(ordering: .relaxed)
            let deadline = start + .seconds(queryDuration)
            while clock.now < deadline {
                let a = RoutingNodeID(random.next() % UInt64(nodes)), b = RoutingNodeID(random.next() % UInt64(nodes))
                // The CPU clock of a thread is a system call (~0.5 µs): every 8th query is timed by it,
                // every query by the wall clock.
                let sampled = phase.wall.count & 7 == 0
                let c0 = sampled ? threadCPUSeconds() : 0
                let t0 = clock.now
                let route = indexed
                    ? engine.route(in: cell, from: a, to: b, size: 65_536, maxIndexAge: UInt64(indexEvery))
                    : engine.route(in: cell.load(), from: a, to: b, size: 65_536)
                phase.wall.append(seconds(clock.now - t0) * 1e6)
                if sampled { phase.cpu.append((threadCPUSeconds() - c0) * 1e6) }
                pairCount += route == nil ? 0 : 1
                if indexed, let index = cell.loadIndex() {
                    phase.maxAge = max(phase.maxAge, Int(cell.load().version - index.snapshot.version))
                }
            }
            let wall = seconds(clock.now - start)
            let count = Double(phase.wall.count)
            phase.perSecond = count / wall
            phase.perCPUSecond = count / (threadCPUSeconds() - startCPU)
            let updaterCPU = Double(updaterCPUNanoseconds.load(ordering: .relaxed) - updaterStart) * 1e-9
            phase.updaterCoreShare = updaterCPU / wall
            phase.settled = Double(engine.settledNodes - settledBefore) / max(1, count)
            phase.relayShare = Double(engine.relayAnswers - relaysBefore) / max(1, count)
            phase.indexedShare = Double(engine.indexedQueries - indexedBefore) / max(1, count)
            phase.searchedShare = Double(engine.indexedSearches - searchedBefore) / max(1, count)
            phase.cpu.sort()
            phase.wall.sort()
            return phase
        }
        let plain = pairPhase(indexed: false)
        let indexedPhase = pairPhase(indexed: true)

        // Owner → many destinations: the tree is rebuilt once per published snapshot.
        var ownerLatencies: [Double] = []
        ownerLatencies.reserveCapacity(1 << 20)
        let runsBefore = engine.dijkstraRuns
        let ownerStart = clock.now
        let ownerStartCPU = threadCPUSeconds()
        let ownerDeadline = ownerStart + .seconds(queryDuration)
        let owner = RoutingNodeID(0)
        var checksum: Float = 0
        while clock.now < ownerDeadline {
            for _ in 0 ..< 64 {
                let snapshot = cell.load()
                let b = RoutingNodeID(1 + random.next() % UInt64(nodes - 1))
                let t0 = clock.now
                let route = engine.route(in: snapshot, from: owner, to: b, size: 65_536)
                ownerLatencies.append(seconds(clock.now - t0) * 1e6)
                checksum += route?.cost ?? 0
            }
        }
        let ownerWall = seconds(clock.now - ownerStart)
        let ownerCPU = threadCPUSeconds() - ownerStartCPU
        let ownerQPS = Double(ownerLatencies.count) / ownerWall
        let ownerQPCPUS = Double(ownerLatencies.count) / ownerCPU
        let cpuShare = ownerCPU / ownerWall
        let rebuilds = engine.dijkstraRuns - runsBefore
        stop.store(true, ordering: .relaxed)
        done.wait()
        let (published, publishSeconds, publishCPU, holt, ewma) = shared.withLock {
            ($0.published, $0.publishSeconds, $0.publishCPU, $0.holt, $0.ewma)
        }

        var dense: (wall: Double, cpu: Double)?
        if includeDensePeer && nodes <= 20_000 {
            dense = denseDijkstraMilliseconds(coordinates: coordinates, queries: 5, seed: seed)
        }
        ownerLatencies.sort()
        let index = indexStats.withLock { $0 }
        let meanBuildCPU = index.builds > 0 ? index.cpu / Double(index.builds) : 0
        let nominalShare = ((published > 0 ? publishCPU / Double(published) : 0) + meanBuildCPU / Double(max(1, indexEvery))) / 0.1
        let updaterShare = max(indexedPhase.updaterCoreShare, nominalShare)
        precondition(checksum.isFinite && pairCount > 0, "routing benchmark found no routes")
        return RoutingBenchmarkReport(
            nodes: nodes, overlayEdges: overlayEdges, setupSeconds: setupSeconds,
            pairQueryP50Microseconds: percentile(plain.wall, 0.5), pairQueryP99Microseconds: percentile(plain.wall, 0.99),
            pairQuerySettledNodes: plain.settled, heuristicScale: Double(firstScale), pairQueriesPerSecond: plain.perSecond,
            pairQueryCPUP50Microseconds: percentile(plain.cpu, 0.5), pairQueryCPUP99Microseconds: percentile(plain.cpu, 0.99),
            pairQueriesPerCPUSecond: plain.perCPUSecond,
            indexed: IndexedPairFigures(
                p50Microseconds: percentile(indexedPhase.wall, 0.5), p99Microseconds: percentile(indexedPhase.wall, 0.99),
                cpuP50Microseconds: percentile(indexedPhase.cpu, 0.5), cpuP99Microseconds: percentile(indexedPhase.cpu, 0.99),
                perSecond: indexedPhase.perSecond, perCPUSecond: indexedPhase.perCPUSecond,
                updaterCoreShare: indexedPhase.updaterCoreShare, nominalUpdaterCoreShare: nominalShare,
                twoCoreQueriesPerSecond: (2 - updaterShare) * indexedPhase.perCPUSecond,
                plainTwoCoreQueriesPerSecond: (2 - max(plain.updaterCoreShare, nominalShare - meanBuildCPU / Double(max(1, indexEvery)) / 0.1)) * plain.perCPUSecond, searchedShare: indexedPhase.searchedShare,
                settledNodes: indexedPhase.settled, relayShare: indexedPhase.relayShare, indexedShare: indexedPhase.indexedShare,
                maxIndexAge: indexedPhase.maxAge, builds: index.builds, indexEvery: indexEvery,
                meanBuildCPUMilliseconds: meanBuildCPU * 1000,
                maxBuildCPUMilliseconds: index.maxCPU * 1000, landmarks: index.landmarks, memoryBytes: index.memory
            ),
            ownerQueryP50Microseconds: percentile(ownerLatencies, 0.5), ownerQueryP99Microseconds: percentile(ownerLatencies, 0.99),
            ownerQueriesPerSecond: ownerQPS, ownerQueryMaxMicroseconds: ownerLatencies.last ?? 0, ownerTreeRebuilds: rebuilds,
            ownerQueriesPerCPUSecond: ownerQPCPUS, queryThreadCPUShare: cpuShare,
            snapshotsPublished: published,
            meanPublishMilliseconds: published > 0 ? publishSeconds * 1000 / Double(published) : 0,
            meanPublishCPUMilliseconds: published > 0 ? publishCPU * 1000 / Double(published) : 0,
            denseDijkstraMilliseconds: dense?.wall, denseDijkstraCPUMilliseconds: dense?.cpu,
            vivaldiMedianRelativeError: percentile(errors, 0.5), vivaldiP90RelativeError: percentile(errors, 0.9),
            holtMeanRelativeError: holt, ewmaMeanRelativeError: ewma
        )
    }

    /// The peer: a textbook O(N²) Dijkstra (array scan, no heap) on the dense matrix of predicted
    /// latencies plus the hop weight, one source → one destination per query. Median ms.
    static func denseDijkstraMilliseconds(coordinates: [VivaldiCoordinate], queries: Int, seed: UInt64) -> (wall: Double, cpu: Double) {
        let n = coordinates.count
        let weights = RouteCostWeights()
        var matrix = [Float](repeating: 0, count: n * n)
        for u in 0 ..< n {
            let cu = coordinates[u]
            for v in 0 ..< n { matrix[u * n + v] = weights.latency * cu.distance(to: coordinates[v]) + weights.hop }
        }
        let clock = ContinuousClock()
        var random = SplitMix64(seed: seed ^ 0xDE)
        var times: [Double] = []
        var cpuTimes: [Double] = []
        var dist = [Float](repeating: .infinity, count: n)
        var done = [Bool](repeating: false, count: n)
        var sink: Float = 0
        for _ in 0 ..< queries {
            let source = Int(random.next() % UInt64(n)), target = Int(random.next() % UInt64(n))
            let t0 = clock.now
            let c0 = threadCPUSeconds()
            for i in 0 ..< n { dist[i] = .infinity; done[i] = false }
            dist[source] = 0
            for _ in 0 ..< n {
                var best = -1
                var bestCost = Float.infinity
                for i in 0 ..< n where !done[i] && dist[i] < bestCost {
                    best = i
                    bestCost = dist[i]
                }
                if best < 0 || best == target { break }
                done[best] = true
                let row = best * n
                for v in 0 ..< n where !done[v] {
                    let c = bestCost + matrix[row + v]
                    if c < dist[v] { dist[v] = c }
                }
            }
            sink += dist[target]
            times.append(seconds(clock.now - t0) * 1000)
            cpuTimes.append((threadCPUSeconds() - c0) * 1000)
        }
        precondition(sink.isFinite, "dense Dijkstra found no route")
        return (percentile(times.sorted(), 0.5), percentile(cpuTimes.sorted(), 0.5))
    }

    private static func measurement(
        _ model: GeographicLatencyModel, _ coordinates: [VivaldiCoordinate], _ peer: Int, _ random: inout SplitMix64
    ) -> RoutingMeasurement {
        let rtt = model.rttMilliseconds(0, peer) * (1 + 0.04 * (random.nextUnitDouble() - 0.5))
        return RoutingMeasurement(
            peer: RoutingNodeID(UInt64(peer)), rtt: .nanoseconds(Int64(rtt * 1e6)),
            bandwidthBitsPerSecond: 50e6, load: Float(random.nextUnitDouble()), coordinate: coordinates[peer]
        )
    }

    static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * q))]
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) * 1e-18
    }
}
