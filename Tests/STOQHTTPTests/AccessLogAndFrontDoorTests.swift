import Foundation
import STOQHTTP
import Synchronization
import XCTest

final class AccessLogTests: XCTestCase {
    func record(target: String = "/stoq/abc?x=1", agent: String? = "curl/8", status: Int = 206, bytes: Int = 100) -> HTTPExchangeRecord {
        var headers: [(name: String, value: String)] = [("Referer", "https://x.test/\"q\"")]
        if let agent { headers.append(("User-Agent", agent)) }
        let request = HTTPRequest(method: "GET", target: target, headers: headers, wireProtocol: .http3, client: "[::1]:5000")
        return HTTPExchangeRecord(request: request, status: status, bodyBytes: bytes, duration: 0.25,
                                  logInfo: HTTPLogInfo(cache: "miss", contentID: "stoq:abc", cacheOutcome: { "hit" }))
    }

    let time = Date(timeIntervalSince1970: 1_796_613_543.5)  // 2026-12-07T03:19:03.5Z

    func testCombinedLine() {
        let line = AccessLog.line(record(), format: .combined, at: time)
        XCTAssertEqual(line, "[::1]:5000 - - [07/Dec/2026:03:19:03 +0000] \"GET /stoq/abc?x=1 HTTP/3\" 206 100 \"https://x.test/\\x22q\\x22\" \"curl/8\" duration=0.250000 cache=hit proto=h3 content=stoq:abc")
    }

    func testCombinedLineEscapesHostileText() {
        let line = AccessLog.line(record(target: "/a\"b\n c", agent: nil, bytes: 0), format: .combined, at: time)
        XCTAssertTrue(line.contains("\"GET /a\\x22b\\x0a c HTTP/3\" 206 - "), line)
        XCTAssertTrue(line.contains("\"-\" duration="), line)
        XCTAssertFalse(line.contains("\n"))
    }

    func testJSONLine() throws {
        let line = AccessLog.line(record(target: "/name/é\u{1}"), format: .json, at: time)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["time"] as? String, "2026-12-07T03:19:03.500Z")
        XCTAssertEqual(object["client"] as? String, "[::1]:5000")
        XCTAssertEqual(object["method"] as? String, "GET")
        XCTAssertEqual(object["path"] as? String, "/name/é\u{1}")
        XCTAssertEqual(object["status"] as? Int, 206)
        XCTAssertEqual(object["bytes"] as? Int, 100)
        XCTAssertEqual(object["duration"] as? Double, 0.25)
        XCTAssertEqual(object["cache"] as? String, "hit")
        XCTAssertEqual(object["protocol"] as? String, "h3")
        XCTAssertEqual(object["content"] as? String, "stoq:abc")
        XCTAssertEqual(object["user_agent"] as? String, "curl/8")
    }

    func testWritesOneLinePerExchangeToAFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try AccessLog(path: dir + "/access.log", format: .json)
        for _ in 0..<3 { log.write(record()) }
        log.flush()
        let text = try String(contentsOfFile: dir + "/access.log", encoding: .utf8)
        XCTAssertEqual(text.split(separator: "\n").count, 3)
        XCTAssertThrowsError(try AccessLog(path: dir + "/missing/dir/log", format: .combined)) {
            XCTAssertTrue("\($0)".contains("cannot open the access log"), "\($0)")
        }
    }
}

/// A listener that binds nothing: it answers `start()` with what its closure makes of the port it was given.
final class FakeListener: HTTPListener {
    let requested: Int
    let answer: @Sendable (Int) throws -> Int
    init(_ c: HTTPListenerConfiguration, answer: @escaping @Sendable (Int) throws -> Int) {
        requested = c.port
        self.answer = answer
    }
    func start() async throws -> Int { try answer(requested) }
    func stop() async {}
}

/// Shared mutable state for the fakes.
final class Box<T: Sendable>: Sendable {
    let value: Mutex<T>
    init(_ v: T) { value = Mutex(v) }
    func update<R>(_ f: (inout T) -> R) -> R { value.withLock { f(&$0) } }
}

final class FrontDoorTests: XCTestCase {
    struct Refused: Error {}

    func configuration(port: Int) -> HTTPListenerConfiguration {
        HTTPListenerConfiguration(host: "::1", port: port, certificatePath: "c", keyPath: "k",
                                  responder: ContentResponder(source: MemorySource(store: .init(), key: nil)))
    }

    func testServersShareThePortTheFirstPicked() async throws {
        let ports = Box<[Int]>([])
        let first: HTTPListenerFactory = { c in FakeListener(c) { p in ports.update { $0.append(p) }; return p == 0 ? 40001 : p } }
        let second: HTTPListenerFactory = { c in FakeListener(c) { p in ports.update { $0.append(p) }; return p } }
        let door = HTTPFrontDoor(configuration: configuration(port: 0), servers: [first, second])
        let bound = try await door.start()
        XCTAssertEqual(bound, 40001)
        XCTAssertEqual(ports.update { $0 }, [0, 40001])
        await door.stop()
    }

    func testRetriesAnotherPortWhenTheSecondCannotBindIt() async throws {
        let attempts = Box(0)
        let first: HTTPListenerFactory = { c in FakeListener(c) { _ in 40000 + attempts.update { $0 += 1; return $0 } } }
        let second: HTTPListenerFactory = { c in FakeListener(c) { p in if p == 40001 { throw Refused() }; return p } }
        let door = HTTPFrontDoor(configuration: configuration(port: 0), servers: [first, second])
        let bound = try await door.start()
        XCTAssertEqual(bound, 40002)
    }

    func testNoServersIsAClearError() async {
        let door = HTTPFrontDoor(configuration: configuration(port: 0), servers: [])
        do {
            _ = try await door.start()
            XCTFail("started without servers")
        } catch {
            XCTAssertTrue("\(error)".contains("no HTTP protocol servers"), "\(error)")
        }
    }
}
