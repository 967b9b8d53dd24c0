import Crypto
import Foundation
import STOQContent
import STOQHTTP
import XCTest

/// The responder over a memory store, through the in-test driver (``drive(_:_:_:headers:proto:)``).
final class ContentResponderTests: XCTestCase {
    /// 300 KB of incompressible bytes, put with a fan-out of 3: a manifest tree three levels deep.
    struct Fixture {
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let data = pseudoRandomBytes(300_000, seed: 12)
        let id: ContentID
        init() throws {
            id = try ContentPublisher(store: store, keys: keys, fanout: 3, workers: 1).put(bytes: data, name: "data.bin").id
        }
        func source(gate: Gate? = nil, delay: Duration? = nil, key: SymmetricKey?? = nil, remote: Set<ChunkID> = []) -> MemorySource {
            MemorySource(store: store, key: key ?? keys.readKey, gate: gate, delay: delay, remote: remote)
        }
        /// The file's data chunks in order, with their offsets and sizes.
        func dataChunks() throws -> [(id: ChunkID, offset: UInt64, size: UInt64)] {
            var out: [(ChunkID, UInt64, UInt64)] = []
            func walk(_ m: FileManifest, base: UInt64) throws {
                for e in m.entries {
                    if m.kind == .leaf { out.append((e.id, base + e.offset, e.size)) } else {
                        try walk(FileManifest.decode(store.read(e.id)), base: base + e.offset)
                    }
                }
            }
            guard case .file(let root) = try AnyManifest.decode(store.read(id.manifest)) else { throw HTTPProblem(0, "not a file") }
            try walk(root, base: 0)
            return out
        }
    }

    func testWholeFileWithHeaders() async throws {
        let f = try Fixture()
        XCTAssertGreaterThan(try f.dataChunks().count, 9, "the fixture needs a manifest tree")
        let responder = ContentResponder(source: f.source())
        let r = try await drive(responder, "/stoq/\(f.id)")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, f.data)
        XCTAssertEqual(r.header("content-length"), "300000")
        XCTAssertEqual(r.header("content-type"), "application/octet-stream")
        XCTAssertEqual(r.header("cache-control"), "public, max-age=31536000, immutable")
        XCTAssertEqual(r.header("etag"), CachePolicy.etag(file: f.id, version: nil))
        XCTAssertEqual(r.header("accept-ranges"), "bytes")
        XCTAssertEqual(r.record.logInfo.contentID, f.id.description)
        XCTAssertEqual(r.record.logInfo.finalCache, "hit")
        // The hex form names the same file.
        let hex = try await drive(responder, "/stoq/\(f.id.manifest.hex)")
        XCTAssertEqual(hex.body, f.data)
    }

    func testRangesFetchOnlyTheChunksTheyCover() async throws {
        let f = try Fixture()
        let chunks = try f.dataChunks()
        var random = SystemRandomNumberGenerator()
        for _ in 0..<25 {
            let a = UInt64.random(in: 0..<300_000, using: &random)
            let b = UInt64.random(in: a..<min(300_000, a + 40_000), using: &random)
            let source = f.source()
            let r = try await drive(ContentResponder(source: source), "/stoq/\(f.id)", headers: [("Range", "bytes=\(a)-\(b)")])
            XCTAssertEqual(r.status, 206)
            XCTAssertEqual(r.body, Array(f.data[Int(a)...Int(b)]), "bytes=\(a)-\(b)")
            XCTAssertEqual(r.header("content-range"), "bytes \(a)-\(b)/300000")
            XCTAssertEqual(r.header("content-length"), "\(b - a + 1)")
            let covering = Set(chunks.filter { $0.offset <= b && $0.offset + $0.size > a }.map(\.id))
            let dataFetched = Set(source.requested).intersection(Set(chunks.map(\.id)))
            XCTAssertEqual(dataFetched, covering, "bytes=\(a)-\(b) fetched chunks outside the range")
        }
        let suffix = try await drive(ContentResponder(source: f.source()), "/stoq/\(f.id)", headers: [("range", "bytes=-100")])
        XCTAssertEqual(suffix.status, 206)
        XCTAssertEqual(suffix.body, Array(f.data.suffix(100)))
        let open = try await drive(ContentResponder(source: f.source()), "/stoq/\(f.id)", headers: [("range", "bytes=299990-")])
        XCTAssertEqual(open.body, Array(f.data.suffix(10)))
    }

    func testUnsatisfiableAndMultipleRanges() async throws {
        let f = try Fixture()
        let responder = ContentResponder(source: f.source())
        let beyond = try await drive(responder, "/stoq/\(f.id)", headers: [("range", "bytes=300000-")])
        XCTAssertEqual(beyond.status, 416)
        XCTAssertEqual(beyond.header("content-range"), "bytes */300000")
        let many = try await drive(responder, "/stoq/\(f.id)", headers: [("range", "bytes=0-1,10-20")])
        XCTAssertEqual(many.status, 200)
        XCTAssertEqual(many.body, f.data)
    }

    func testConditionalRequests() async throws {
        let f = try Fixture()
        let source = f.source()
        let responder = ContentResponder(source: source)
        let etag = CachePolicy.etag(file: f.id, version: nil)
        let before = source.requested.count
        let notModified = try await drive(responder, "/stoq/\(f.id)", headers: [("if-none-match", "\"other\", \(etag)")])
        XCTAssertEqual(notModified.status, 304)
        XCTAssertEqual(notModified.header("etag"), etag)
        let data = Set(try f.dataChunks().map(\.id))
        XCTAssertTrue(Set(source.requested.dropFirst(before)).isDisjoint(with: data), "a 304 reads manifests only")
        let modified = try await drive(responder, "/stoq/\(f.id)", headers: [("if-none-match", "\"other\"")])
        XCTAssertEqual(modified.status, 200)
        let sameRange = try await drive(responder, "/stoq/\(f.id)", headers: [("range", "bytes=0-9"), ("if-range", etag)])
        XCTAssertEqual(sameRange.status, 206)
        XCTAssertEqual(sameRange.body.count, 10)
        let changed = try await drive(responder, "/stoq/\(f.id)", headers: [("range", "bytes=0-9"), ("if-range", "\"old\"")])
        XCTAssertEqual(changed.status, 200)
        XCTAssertEqual(changed.body, f.data)
    }

    func testHeadFetchesNoDataAndOtherMethodsAre405() async throws {
        let f = try Fixture()
        let source = f.source()
        let responder = ContentResponder(source: source)
        let head = try await drive(responder, "HEAD", "/stoq/\(f.id)")
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.header("content-length"), "300000")
        XCTAssertTrue(Set(source.requested).isDisjoint(with: Set(try f.dataChunks().map(\.id))), "HEAD read a data chunk")
        XCTAssertTrue(source.requested.contains(f.id.manifest))
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let r = try await drive(responder, method, "/stoq/\(f.id)")
            XCTAssertEqual(r.status, 405)
            XCTAssertEqual(r.header("allow"), "GET, HEAD")
        }
    }

    func testErrorsHaveShortBodies() async throws {
        let f = try Fixture()
        let responder = ContentResponder(source: f.source())
        let unknown = ContentID(ChunkID.of(Array("nothing".utf8)))
        let missing = try await drive(responder, "/stoq/\(unknown)")
        XCTAssertEqual(missing.status, 404)
        XCTAssertTrue(String(decoding: missing.body, as: UTF8.self).contains("neither this node nor its upstream"))
        XCTAssertLessThan(missing.body.count, 300)
        do { let s = try await drive(responder, "/stoq/garbage").status; XCTAssertEqual(s, 400) }
        do { let s = try await drive(responder, "/stoq/\(f.id)/inside").status; XCTAssertEqual(s, 404) }
        do { let s = try await drive(responder, "/name/nobody").status; XCTAssertEqual(s, 404) }
    }

    func testUnknownIdsAndNamesAreAskedForOncePerInterval() async throws {
        let f = try Fixture()
        let source = f.source()
        let clock = Box<UInt64>(0)
        let responder = ContentResponder(source: source, absences: AbsenceCache(lifetime: .seconds(5)), now: { clock.update { $0 } })
        let unknown = ContentID(ChunkID.of(Array("nothing".utf8)))
        for _ in 0..<3 {
            do { let s = try await drive(responder, "/stoq/\(unknown)").status; XCTAssertEqual(s, 404) }
            do { let s = try await drive(responder, "/name/nobody").status; XCTAssertEqual(s, 404) }
        }
        XCTAssertEqual(source.requested.filter { $0 == unknown.manifest }.count, 1)
        clock.update { $0 = 6_000_000_000 }
        do { let s = try await drive(responder, "/stoq/\(unknown.manifest.hex)").status; XCTAssertEqual(s, 404) }
        XCTAssertEqual(source.requested.filter { $0 == unknown.manifest }.count, 2)
        // Known content is not affected.
        do { let s = try await drive(responder, "/stoq/\(f.id)").status; XCTAssertEqual(s, 200) }
    }

    func testPrivateContentIs403() async throws {
        let f = try Fixture()
        let none = try await drive(ContentResponder(source: f.source(key: .some(nil))), "/stoq/\(f.id)")
        XCTAssertEqual(none.status, 403)
        let wrong = try await drive(ContentResponder(source: f.source(key: PublisherKeys.random().readKey)), "/stoq/\(f.id)")
        XCTAssertEqual(wrong.status, 403)
        let other = ContentResponder(source: f.source(key: PublisherKeys.random().readKey))
        let head = try await drive(other, "HEAD", "/stoq/\(f.id)")
        XCTAssertEqual(head.status, 403, "HEAD must answer as GET would")
        let etag = CachePolicy.etag(file: f.id, version: nil)
        let conditional = try await drive(other, "/stoq/\(f.id)", headers: [("if-none-match", etag)])
        XCTAssertEqual(conditional.status, 403, "a 304 must not be given for content this node cannot read")
        XCTAssertTrue(String(decoding: wrong.body, as: UTF8.self).contains("private"))
    }

    func testDirectoriesIndexListingAndPaths() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/site/sub dir", withIntermediateDirectories: true)
        try Data("<h1>hi</h1>".utf8).write(to: URL(fileURLWithPath: dir + "/site/index.html"))
        try Data("console.log(1)".utf8).write(to: URL(fileURLWithPath: dir + "/site/app.js"))
        try Data("deep".utf8).write(to: URL(fileURLWithPath: dir + "/site/sub dir/a&b.txt"))
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let id = try ContentPublisher(store: store, keys: keys, workers: 1).put(path: dir + "/site").id
        let responder = ContentResponder(source: MemorySource(store: store, key: keys.readKey))
        for target in ["/stoq/\(id)", "/stoq/\(id)/", "/stoq/\(id)/index.html"] {
            let r = try await drive(responder, target)
            XCTAssertEqual(r.status, 200, target)
            XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "<h1>hi</h1>", target)
            XCTAssertEqual(r.header("content-type"), "text/html; charset=utf-8")
        }
        let script = try await drive(responder, "/stoq/\(id)/app.js")
        XCTAssertEqual(script.header("content-type"), "text/javascript; charset=utf-8")
        let listing = try await drive(responder, "/stoq/\(id)/sub%20dir/")
        XCTAssertEqual(listing.status, 200)
        let html = String(decoding: listing.body, as: UTF8.self)
        XCTAssertTrue(html.contains("href=\"/stoq/\(ContentRoute.percentEncode(id.description))/sub%20dir/a%26b.txt\""), html)
        XCTAssertTrue(html.contains("a&amp;b.txt"))
        let deep = try await drive(responder, "/stoq/\(id)/sub%20dir/a%26b.txt")
        XCTAssertEqual(String(decoding: deep.body, as: UTF8.self), "deep")
        do { let s = try await drive(responder, "/stoq/\(id)/nope.html").status; XCTAssertEqual(s, 404) }
        do { let s = try await drive(responder, "/stoq/\(id)/sub%20dir/../../x").status; XCTAssertEqual(s, 400) }
        do { let s = try await drive(responder, "/stoq/\(id)/index.html/more").status; XCTAssertEqual(s, 404) }
    }

    func testRelativeLinksAreFollowedInsideTheContentOnly() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/site/v2", withIntermediateDirectories: true)
        try Data("two".utf8).write(to: URL(fileURLWithPath: dir + "/site/v2/page.html"))
        try fm.createSymbolicLink(atPath: dir + "/site/latest", withDestinationPath: "v2")
        try fm.createSymbolicLink(atPath: dir + "/site/v2/self.html", withDestinationPath: "../latest/page.html")
        try fm.createSymbolicLink(atPath: dir + "/site/out", withDestinationPath: "../../etc")
        try fm.createSymbolicLink(atPath: dir + "/site/abs", withDestinationPath: "/etc/passwd")
        try fm.createSymbolicLink(atPath: dir + "/site/loop", withDestinationPath: "loop")
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let id = try ContentPublisher(store: store, keys: keys, workers: 1).put(path: dir + "/site").id
        let responder = ContentResponder(source: MemorySource(store: store, key: keys.readKey))
        for target in ["/stoq/\(id)/latest/page.html", "/stoq/\(id)/v2/self.html", "/stoq/\(id)/latest/self.html"] {
            let r = try await drive(responder, target)
            XCTAssertEqual(r.status, 200, target)
            XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "two", target)
        }
        for target in ["/stoq/\(id)/out", "/stoq/\(id)/out/passwd", "/stoq/\(id)/abs", "/stoq/\(id)/loop"] {
            let r = try await drive(responder, target)
            XCTAssertEqual(r.status, 404, target)
        }
    }

    func testNamesCarryVersionAndRemainingTTL() async throws {
        let f = try Fixture()
        let source = f.source()
        source.names.withLock { $0["site"] = NameBinding(name: "site", content: f.id, version: 3, maxAge: 42) }
        let r = try await drive(ContentResponder(source: source), "/name/site")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, f.data)
        XCTAssertEqual(r.header("cache-control"), "public, max-age=42")
        XCTAssertEqual(r.header("etag"), CachePolicy.etag(file: f.id, version: 3))
        XCTAssertEqual(r.record.logInfo.contentID, f.id.description)
    }

    func testFirstByteLeavesBeforeLaterChunksArrive() async throws {
        let f = try Fixture()
        let chunks = try f.dataChunks()
        // Every manifest and the first data chunk pass; the others wait until the gate opens.
        let gate = Gate(blocked: Set(chunks.dropFirst().map(\.id)))
        let responder = ContentResponder(source: f.source(gate: gate))
        let response = await responder.respond(to: HTTPRequest(method: "GET", target: "/stoq/\(f.id)", headers: [], wireProtocol: .http3, client: "c"))
        XCTAssertEqual(response.status, 200)
        let first = try await response.body.next()
        XCTAssertEqual(first, Array(f.data.prefix(Int(chunks[0].size))))
        await gate.release()
        var rest: [UInt8] = []
        while let piece = try await response.body.next() { rest += piece }
        XCTAssertEqual(first! + rest, f.data)
    }

    func testASlowReaderHoldsBackTheFetch() async throws {
        let store = MemoryChunkStore()
        let keys = PublisherKeys.random()
        let data = pseudoRandomBytes(4_000_000, seed: 5)
        let id = try ContentPublisher(store: store, keys: keys, workers: 1).put(bytes: data, name: "big.bin").id
        let source = MemorySource(store: store, key: keys.readKey)
        let responder = ContentResponder(source: source)
        let response = await responder.respond(to: HTTPRequest(method: "GET", target: "/stoq/\(id)", headers: [], wireProtocol: .http2, client: "c"))
        _ = try await response.body.next()
        try await Task.sleep(for: .milliseconds(100))  // let started fetches land (not a timing assertion)
        let asked = source.requested.count
        XCTAssertLessThanOrEqual(asked, 40, "one piece read, \(asked) chunks fetched: the fetch ran ahead of the reader")
        var total = 0
        while let piece = try await response.body.next() { total += piece.count }
        XCTAssertGreaterThan(source.requested.count, 100)
        XCTAssertGreaterThan(total, 3_900_000)
    }

    func testConcurrentMissesOfOneChunkFetchItOnce() async throws {
        let f = try Fixture()
        let source = f.source(delay: .milliseconds(20))
        let responder = ContentResponder(source: source)
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<6 { group.addTask { try await drive(responder, "/stoq/\(f.id)", headers: [("range", "bytes=0-999")]).body } }
            for try await body in group { XCTAssertEqual(body, Array(f.data.prefix(1000))) }
        }
        let counts = Dictionary(source.requested.map { ($0, 1) }, uniquingKeysWith: +)
        XCTAssertEqual(counts.values.max(), 1, "a chunk was fetched more than once: \(counts.values.sorted())")
        let (started, joined) = await responder.coalescing
        XCTAssertGreaterThan(joined, 0)
        XCTAssertEqual(started, counts.count)
    }

    func testCacheMissIsLoggedWhenAnyChunkCameFromUpstream() async throws {
        let f = try Fixture()
        let chunks = try f.dataChunks()
        let r = try await drive(ContentResponder(source: f.source(remote: [chunks[5].id])), "/stoq/\(f.id)")
        XCTAssertEqual(r.record.logInfo.finalCache, "miss")
        let part = try await drive(ContentResponder(source: f.source(remote: [chunks[5].id])), "/stoq/\(f.id)", headers: [("range", "bytes=0-10")])
        XCTAssertEqual(part.record.logInfo.finalCache, "hit")
    }

    func testMissingChunkIsAStatusNotATruncatedBody() async throws {
        let f = try Fixture()
        let chunks = try f.dataChunks()
        f.store.corrupt(chunks[0].id, with: nil)
        let r = try await drive(ContentResponder(source: f.source()), "/stoq/\(f.id)")
        XCTAssertEqual(r.status, 502)
    }

    func testWatchPushesNewVersions() async throws {
        let f = try Fixture()
        let source = f.source()
        source.names.withLock { $0["site"] = NameBinding(name: "site", content: f.id, version: 1, maxAge: 60) }
        let responder = ContentResponder(source: source)
        XCTAssertNil(responder.watch(name: "bad\u{1}name"))
        guard let stream = responder.watch(name: "site") else { return XCTFail("no watch") }
        // Wait (bounded) for the watcher to subscribe.
        for _ in 0..<200 where source.changes.withLock({ $0 == nil }) { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        let other = ContentID(ChunkID.of(Array("v2".utf8)))
        source.names.withLock { $0["site"] = NameBinding(name: "site", content: other, version: 2, maxAge: 60) }
        _ = source.changes.withLock { $0?.yield("other") }
        _ = source.changes.withLock { $0?.yield("site") }
        var iterator = stream.makeAsyncIterator()
        let message = await iterator.next()
        XCTAssertEqual(message, "{\"name\":\"site\",\"version\":2,\"content\":\"\(other)\"}")
        source.changes.withLock { $0?.finish() }
    }
}
