import STOQContent
import Testing
@testable import STOQEdge

@Test func windowGrowsWithSequentialReadsAndResetsOnRandomAccess() {
    let ids = (0..<100).map { chunk($0) }
    var p = Prefetcher(chunks: ids, configuration: .init(initialWindow: 2, maximumWindow: 8))
    #expect(p.handleRead(index: 0) == [1, 2])
    #expect(p.window == 2)
    #expect(p.handleRead(index: 1) == [3, 4, 5])          // window 4: 2...5, 2 already asked
    #expect(p.handleRead(index: 2) == [6, 7, 8, 9, 10])   // window 8: 3...10
    #expect(p.handleRead(index: 3) == [11])               // capped at 8
    #expect(p.window == 8)
    #expect(p.handleRead(index: 50) == [])                // random access: no read-ahead
    #expect(p.window == 0)
    #expect(p.randomAccesses == 1)
    #expect(p.handleRead(index: 51) == [52, 53])          // sequential again: restarts small
    #expect(p.handleRead(index: 52) == [54, 55, 56])  // window 4: 53...56
    #expect(p.sequentialHits == 6)
}

@Test func readAheadStopsAtTheEndAndForgottenChunksComeBack() {
    let ids = (0..<5).map { chunk($0) }
    var p = Prefetcher(chunks: ids, configuration: .init(initialWindow: 4, maximumWindow: 16))
    #expect(p.handleRead(index: 0) == [1, 2, 3, 4])
    p.forget(3)
    #expect(p.handleRead(index: 1) == [3])
    #expect(p.handleRead(index: 4) == [])
    #expect(p.handleRead(index: 9) == [])
}

@Test func readsByChunkID() {
    let ids = (0..<10).map { chunk($0) }
    var p = Prefetcher(chunks: ids)
    #expect(p.handleRead(id: ids[0]) == [ids[1], ids[2]])
    #expect(p.handleRead(id: ids[1]) == [ids[3], ids[4], ids[5]])
    #expect(p.handleRead(id: chunk(999)) == [])
}
