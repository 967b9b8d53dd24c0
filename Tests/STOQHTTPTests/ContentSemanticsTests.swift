import STOQContent
import STOQHTTP
import XCTest

/// The sans-IO rules: targets and paths, ranges, conditionals, media types, listings.
final class ContentSemanticsTests: XCTestCase {
    let id = ContentID(ChunkID.of(Array("x".utf8)))

    func route(_ target: String) -> ContentRoute? { try? ContentRoute.parse(target: target).get() }
    func status(_ target: String) -> Int? {
        if case .failure(let p) = ContentRoute.parse(target: target) { return p.status }
        return nil
    }

    func testContentIDsInBase32AndHexWithPaths() {
        let base32 = String(id.description.dropFirst(5))
        XCTAssertEqual(route("/stoq/\(id)"), .content(id: id, idText: id.description, path: [], trailingSlash: false))
        XCTAssertEqual(route("/stoq/\(base32)/"), .content(id: id, idText: base32, path: [], trailingSlash: true))
        XCTAssertEqual(route("/stoq/\(id.manifest.hex)/a/b.html?x=1#top"),
                       .content(id: id, idText: id.manifest.hex, path: ["a", "b.html"], trailingSlash: false))
        XCTAssertEqual(route("/stoq/stoq%3A\(base32)/dir/"), .content(id: id, idText: id.description, path: ["dir"], trailingSlash: true))
        XCTAssertEqual(route("https://edge.test:8443/stoq/\(base32)/x"), .content(id: id, idText: base32, path: ["x"], trailingSlash: false))
        XCTAssertEqual(status("/stoq/notanid"), 400)
        XCTAssertEqual(status("/stoq/\(base32.dropLast())"), 400)
    }

    func testPercentDecodingAndDotSegments() {
        let hex = id.manifest.hex
        XCTAssertEqual(route("/stoq/\(hex)/a%20b/%C3%A9t%C3%A9.txt")?.path, ["a b", "été.txt"])
        XCTAssertEqual(route("/stoq/\(hex)/./a//b/.")?.path, ["a", "b"])
        XCTAssertEqual(route("/name/my%20site/index.html"), .name("my site", path: ["index.html"], trailingSlash: false))
        XCTAssertEqual(route("/name/team%2Fsite/"), .name("team/site", path: [], trailingSlash: true))
    }

    func testNothingEscapesTheContent() {
        let hex = id.manifest.hex
        for target in ["/stoq/\(hex)/../x", "/stoq/\(hex)/a/../../x", "/stoq/\(hex)/%2e%2e/x", "/stoq/\(hex)/%2E%2E",
                       "/stoq/\(hex)/a%2Fb", "/stoq/\(hex)/a%00b", "/stoq/\(hex)/%zz", "/stoq/\(hex)/%C3", "/name/%0Abad", "relative"] {
            XCTAssertEqual(status(target), 400, target)
        }
        XCTAssertEqual(status("/"), 404)
        XCTAssertEqual(status("/stoq"), 404)
        XCTAssertEqual(status("/etc/passwd"), 404)
        XCTAssertEqual(status("/" + String(repeating: "a", count: 9000)), 400)
    }

    func testRanges() {
        XCTAssertEqual(RangeDecision.evaluate(nil, size: 100), .whole)
        XCTAssertEqual(RangeDecision.evaluate("bytes=0-9", size: 100), .partial(first: 0, last: 9))
        XCTAssertEqual(RangeDecision.evaluate("bytes=90-", size: 100), .partial(first: 90, last: 99))
        XCTAssertEqual(RangeDecision.evaluate("bytes=90-1000", size: 100), .partial(first: 90, last: 99))
        XCTAssertEqual(RangeDecision.evaluate("bytes=-10", size: 100), .partial(first: 90, last: 99))
        XCTAssertEqual(RangeDecision.evaluate("bytes=-1000", size: 100), .partial(first: 0, last: 99))
        XCTAssertEqual(RangeDecision.evaluate(" Bytes=5-5 ", size: 100), .partial(first: 5, last: 5))
        XCTAssertEqual(RangeDecision.evaluate("bytes=100-", size: 100), .unsatisfiable)
        XCTAssertEqual(RangeDecision.evaluate("bytes=99999999999999999999999-", size: 100), .unsatisfiable)
        XCTAssertEqual(RangeDecision.evaluate("bytes=-0", size: 100), .unsatisfiable)
        XCTAssertEqual(RangeDecision.evaluate("bytes=0-1,5-6", size: 100), .whole)
        XCTAssertEqual(RangeDecision.evaluate("bytes=5-1", size: 100), .whole)
        XCTAssertEqual(RangeDecision.evaluate("bytes=a-b", size: 100), .whole)
        XCTAssertEqual(RangeDecision.evaluate("items=0-1", size: 100), .whole)
        XCTAssertEqual(RangeDecision.evaluate("bytes=0-1", size: 0), .whole)
        XCTAssertEqual(RangeDecision.evaluate("bytes=0-18446744073709551615", size: 100), .partial(first: 0, last: 99))
    }

    func testConditionals() {
        let etag = "\"abc\""
        XCTAssertTrue(Conditional.noneMatchHits("\"abc\"", etag: etag))
        XCTAssertTrue(Conditional.noneMatchHits("\"x\", W/\"abc\"", etag: etag))
        XCTAssertTrue(Conditional.noneMatchHits("*", etag: etag))
        XCTAssertFalse(Conditional.noneMatchHits("\"abd\"", etag: etag))
        XCTAssertFalse(Conditional.noneMatchHits(nil, etag: etag))
        XCTAssertTrue(Conditional.ifRangeAllows(nil, etag: etag))
        XCTAssertTrue(Conditional.ifRangeAllows("\"abc\"", etag: etag))
        XCTAssertFalse(Conditional.ifRangeAllows("W/\"abc\"", etag: etag))
        XCTAssertFalse(Conditional.ifRangeAllows("\"old\"", etag: etag))
        XCTAssertFalse(Conditional.ifRangeAllows("Tue, 15 Nov 1994 08:12:31 GMT", etag: etag))
    }

    func testMediaTypes() {
        XCTAssertEqual(MediaType.of(manifestType: "image/png", fileName: "x.txt"), "image/png")
        XCTAssertEqual(MediaType.of(manifestType: "text/plain", fileName: "app.js"), "text/javascript; charset=utf-8")
        XCTAssertEqual(MediaType.of(manifestType: "application/octet-stream", fileName: "movie.webm"), "video/webm")
        XCTAssertEqual(MediaType.of(manifestType: "", fileName: nil), "application/octet-stream")
        XCTAssertEqual(MediaType.of(manifestType: "text/html", fileName: "index.html"), "text/html; charset=utf-8")
    }

    func testETagsAndCacheControl() {
        let plain = CachePolicy.etag(file: id, version: nil)
        XCTAssertEqual(plain, "\"\(id.description.dropFirst(5))\"")
        XCTAssertEqual(CachePolicy.etag(file: id, version: 7), "\"\(id.description.dropFirst(5))-v7\"")
        XCTAssertEqual(CachePolicy.name(maxAge: 42), "public, max-age=42")
    }

    func testListingEscapesNames() throws {
        let entry = DirectoryManifest.Entry(name: "<script>\"x\".html", mode: 0o644, kind: .file, id: id, size: 3)
        let html = DirectoryListing.html(title: "/d/", base: "/stoq/x/d/", isRoot: false, entries: [entry])
        XCTAssertFalse(html.contains("<script>"))
        XCTAssertTrue(html.contains("href=\"/stoq/x/d/%3Cscript%3E%22x%22.html\""))
        XCTAssertTrue(html.contains("href=\"/stoq/x/\">../"))
    }

    func testFrontDoorAddresses() throws {
        XCTAssertTrue(try HTTPFrontDoor.parseAddress("[::1]:8443") == ("::1", 8443))
        XCTAssertTrue(try HTTPFrontDoor.parseAddress("[::]:0") == ("::", 0))
        for bad in ["127.0.0.1:8443", "[::ffff:127.0.0.1]:80", "[::1]", "[::1]:99999", "localhost:80"] {
            XCTAssertThrowsError(try HTTPFrontDoor.parseAddress(bad), bad) { error in
                XCTAssertTrue("\(error)".contains("--http"), "\(error)")
            }
        }
        XCTAssertThrowsError(try HTTPFrontDoor.parseAddress("10.0.0.1:80")) { XCTAssertTrue("\($0)".contains("IPv6-only")) }
    }

    func testLinksResolveInsideTheContentOnly() {
        XCTAssertEqual(LinkResolution.resolve("v2", in: []), ["v2"])
        XCTAssertEqual(LinkResolution.resolve("../b/./c", in: ["a"]), ["b", "c"])
        XCTAssertEqual(LinkResolution.resolve("..", in: ["a"]), [])
        XCTAssertNil(LinkResolution.resolve("../..", in: ["a"]))
        XCTAssertNil(LinkResolution.resolve("/etc/passwd", in: ["a"]))
    }

    func testAbsenceCacheForgetsAfterItsLifetimeAndStaysBounded() {
        var cache = AbsenceCache(lifetime: .seconds(5), capacity: 3)
        cache.handleAbsent("a", now: 0)
        XCTAssertTrue(cache.isAbsent("a", now: 4_999_999_999))
        XCTAssertFalse(cache.isAbsent("a", now: 5_000_000_000))
        for key in ["b", "c", "d"] { cache.handleAbsent(key, now: 1) }
        XCTAssertFalse(cache.isAbsent("a", now: 2), "the oldest key beyond the capacity is forgotten")
        XCTAssertTrue(cache.isAbsent("d", now: 2))
        cache.handlePresent("d")
        XCTAssertFalse(cache.isAbsent("d", now: 2))
    }
}
