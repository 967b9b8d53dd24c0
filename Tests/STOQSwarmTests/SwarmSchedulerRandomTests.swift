import STOQContent
import STOQSimulation
import STOQWire
import Testing
@testable import STOQSwarm

/// Seeded random event sequences against the scheduler, checking its invariants after every step.
struct SwarmSchedulerRandomTests {
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
    func invariantsHoldUnderRandomEvents(seed: UInt64) throws {
        var random = SimRandom(seed: seed)
        let chunkCount = 40
        let chunks = (0 ..< chunkCount).map { SwarmChunk(index: $0, id: ChunkID.of(Array("r\($0)".utf8)), size: 1000 + $0) }
        let present = (0 ..< chunkCount).filter { _ in random.nextUnitDouble() < 0.2 }
        var configuration = SwarmConfiguration()
        configuration.seed = seed
        var scheduler = SwarmScheduler(chunks: chunks, present: present, configuration: configuration)
        var haves: [SourceID: ChunkBitfield?] = [:]
        var outstanding: [RequestID: (SourceID, Int)] = [:]
        var presentSet = Set(present)
        var finished = presentSet.count == chunkCount
        var now: UInt64 = 0
        var banned = Set<SourceID>()
        var unusable = Set<SourceID>()

        func check(_ actions: [SwarmAction]) {
            for action in actions {
                #expect(!finished, "seed \(seed): action \(action) after the end")
                switch action {
                case .request(let id, let source, let chunk):
                    #expect(!presentSet.contains(chunk), "seed \(seed): requested present chunk \(chunk)")
                    #expect(!banned.contains(source) && !unusable.contains(source), "seed \(seed): request to unusable \(source)")
                    if let have = haves[source] ?? nil { #expect(have[chunk], "seed \(seed): \(source) lacks \(chunk)") }
                    #expect(outstanding[id] == nil)
                    outstanding[id] = (source, chunk)
                case .cancel(let id, _, _):
                    #expect(outstanding.removeValue(forKey: id) != nil, "seed \(seed): cancel of unknown \(id)")
                case .sourceBanned(let source, _):
                    banned.insert(source)
                case .completed:
                    #expect(presentSet.count == chunkCount, "seed \(seed): completed early")
                    finished = true
                case .failed(let error):
                    #expect(!error.chunkIndices.isEmpty)
                    finished = true
                }
            }
            #expect(scheduler.progress.outstandingRequests == outstanding.count, "seed \(seed)")
            #expect(scheduler.holderCountsAreConsistent, "seed \(seed)")
            #expect(scheduler.progress.bytesDone == presentSet.reduce(0) { $0 + chunks[$1].size }, "seed \(seed)")
        }
        func drain() -> [SwarmAction] {
            var actions: [SwarmAction] = []
            while let action = scheduler.pollAction() { actions.append(action) }
            return actions
        }

        for number in 0 ..< 5 {
            var have: ChunkBitfield?
            if number > 0 {
                var bits = ChunkBitfield(count: chunkCount)
                for index in 0 ..< chunkCount where random.nextUnitDouble() < 0.7 { bits[index] = true }
                have = bits
            }
            haves[SourceID(number)] = have
            // Source 0 holds everything; in odd seeds it is an edge that caches part and fills the rest.
            var cached: ChunkBitfield?
            if number == 0, seed % 2 == 1 {
                var bits = ChunkBitfield(count: chunkCount)
                for index in 0 ..< chunkCount where random.nextUnitDouble() < 0.4 { bits[index] = true }
                cached = bits
            }
            scheduler.handleSourceAdded(SourceID(number), have: have, cached: cached, now: now)
            check(drain())
        }
        for _ in 0 ..< 3000 where !finished {
            now += UInt64(random.nextIndex(30_000_000))
            let ids = outstanding.keys.sorted()
            let roll = random.nextIndex(100)
            if roll < 50, !ids.isEmpty {
                let id = ids[random.nextIndex(ids.count)]
                let chunk = outstanding[id]!.1
                scheduler.handleProgress(id, bytes: 100, now: now)
                if random.nextIndex(3) == 0 {
                    outstanding[id] = nil
                    let verified = random.nextIndex(60) != 0
                    if verified {
                        presentSet.insert(chunk)
                        // Other copies are cancelled by the scheduler (checked in `check`).
                    }
                    scheduler.handleResponse(id, verified: verified, now: now)
                }
            } else if roll < 58, !ids.isEmpty {
                let id = ids[random.nextIndex(ids.count)]
                outstanding[id] = nil
                scheduler.handleFailure(id, random.nextIndex(2) == 0 ? .notFound : .error("reset"), now: now)
            } else if roll < 63 {
                let source = SourceID(random.nextIndex(5))
                unusable.insert(source)
                scheduler.handleSourceDown(source, now: now)
            } else if roll < 70 {
                let source = SourceID(random.nextIndex(5))
                unusable.remove(source)
                scheduler.handleSourceUp(source, now: now)
            } else if roll < 71 {
                let source = SourceID(random.nextIndex(5))
                scheduler.handleSourceRemoved(source, now: now)
                unusable.insert(source)
            } else {
                scheduler.handleTimeout(now: now)
            }
            // Down or removed sources come back only through the calls above; re-derive from the scheduler.
            for number in 0 ..< 5 {
                let source = SourceID(number)
                switch scheduler.state(of: source) {
                case .down, .removed, .banned: unusable.insert(source)
                default: unusable.remove(source)
                }
            }
            let actions = drain()
            // States were re-derived after the step; requests issued by this step went to usable sources.
            check(actions)
        }
        #expect(finished || !outstanding.isEmpty || scheduler.pollTimeout() != nil || scheduler.progress.sources.allSatisfy { $0.state != .active },
                "seed \(seed): stuck with nothing outstanding and nothing scheduled")
    }
}
