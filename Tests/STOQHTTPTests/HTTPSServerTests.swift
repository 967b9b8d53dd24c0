import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import STOQIdentity
import Synchronization
import XCTest
@testable import STOQHTTP

/// A counter a body's closure can share.
final class Tally: Sendable {
    private let value: Atomic<Int>
    init(_ start: Int) { value = Atomic(start) }
    /// Adds `delta`; returns the new value.
    func add(_ delta: Int) -> Int { value.add(delta, ordering: .relaxed).newValue }
}

/// A static responder whose bodies count how often they were pulled.
final class StaticTestResponder: HTTPResponder {
    let pulls = Atomic<Int>(0)
    let records = Mutex<[HTTPExchangeRecord]>([])
    let watchers = Mutex<[AsyncStream<String>.Continuation]>([])

    static let hello = Array("hello, front door\n".utf8)
    static let piece = [UInt8](repeating: 0x5A, count: 64 * 1024)

    func respond(to request: HTTPRequest) async -> HTTPResponse {
        let counted: @Sendable () -> Void = { [self] in _ = pulls.add(1, ordering: .relaxed) }
        switch request.target {
        case "/hello":
            let body = HTTPBody.bytes(Self.hello)
            return HTTPResponse(
                status: 200, headers: [("content-type", "text/plain"), ("content-length", "\(Self.hello.count)")],
                body: HTTPBody { counted(); return try await body.next() }, logInfo: HTTPLogInfo(cache: "hit", contentID: "hello")
            )
        case "/pieces":
            // 4 MiB in 64 KiB pieces, length known.
            let left = Tally(64)
            return HTTPResponse(status: 200, headers: [("content-length", "\(64 * Self.piece.count)")], body: HTTPBody {
                counted()
                return left.add(-1) >= 0 ? Self.piece : nil
            })
        case "/endless":
            // Pieces for as long as anyone pulls (up to 4 GiB), length unknown.
            let left = Tally(65536)
            return HTTPResponse(status: 200, body: HTTPBody {
                counted()
                return left.add(-1) >= 0 ? Self.piece : nil
            })
        case "/fails-midway":
            let served = Tally(0)
            return HTTPResponse(status: 200, headers: [("content-length", "\(16 * Self.piece.count)")], body: HTTPBody {
                counted()
                if served.add(1) > 2 { throw CancellationError() }
                return Self.piece
            })
        case "/not-modified":
            return HTTPResponse(status: 304, headers: [("etag", "\"v1\"")], body: HTTPBody { counted(); return Self.piece })
        default:
            return HTTPResponse(status: 404, headers: [("content-length", "10")], body: .bytes(Array("not found\n".utf8)))
        }
    }

    func finished(_ record: HTTPExchangeRecord) {
        records.withLock { $0.append(record) }
    }

    func watch(name: String) -> AsyncStream<String>? {
        guard name == "site" else { return nil }
        let (stream, continuation) = AsyncStream<String>.makeStream()
        watchers.withLock { $0.append(continuation) }
        return stream
    }

    func publish(_ message: String) { watchers.withLock { for w in $0 { w.yield(message) } } }
    var watcherCount: Int { watchers.withLock { $0.count } }
    var pullCount: Int { pulls.load(ordering: .relaxed) }

    /// Waits (bounded) until `count` exchanges were reported.
    func waitForRecords(_ count: Int) async -> [HTTPExchangeRecord] {
        for _ in 0..<500 {
            let now = records.withLock { $0 }
            if now.count >= count { return now }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return records.withLock { $0 }
    }
}

final class HTTPSServerTests: XCTestCase {
    private var directory = ""
    private var certPath = ""
    private var keyPath = ""
    private var caPath = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "stoq-https-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // A STOQ node certificate as `stoq certs issue` makes it: P-256, no IP SAN.
        let ca = try CertificateAuthority.create(commonName: "HTTPS test CA")
        caPath = try ca.write(to: directory).certificate
        let node = try ca.issue(name: "edge", dnsNames: ["localhost"])
        (certPath, keyPath) = try node.write(to: directory, name: "edge")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func startServer(
        _ responder: StaticTestResponder, http3Port: Int? = nil, limits: HTTPSServer.Limits = HTTPSServer.Limits()
    ) async throws -> (HTTPSServer, HTTPSTestClient) {
        let server = HTTPSServer(
            configuration: HTTPListenerConfiguration(host: "::1", port: 0, certificatePath: certPath, keyPath: keyPath, responder: responder),
            http3Port: http3Port, limits: limits
        )
        let port = try await server.start()
        return (server, HTTPSTestClient(port: port, caPath: caPath))
    }

    func testHTTP1AndHTTP2ServeTheBodyWithDateAndAltSvc() async throws {
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder, http3Port: 9443)
        for version in [HTTPSTestClient.Version.http1, .http2] {
            let response = try await client.fetch(version, path: "/hello")
            XCTAssertEqual(response.status, 200, "\(version)")
            XCTAssertTrue(response.complete)
            XCTAssertEqual(response.body, StaticTestResponder.hello)
            XCTAssertEqual(response.header("alt-svc"), "h3=\":9443\"; ma=86400")
            XCTAssertNotNil(response.header("date"))
            XCTAssertTrue(response.header("date")?.hasSuffix(" GMT") ?? false)
            XCTAssertEqual(response.header("content-length"), "\(StaticTestResponder.hello.count)")
        }
        let records = await responder.waitForRecords(2)
        XCTAssertEqual(records.map(\.request.wireProtocol), [.http1, .http2])
        XCTAssertEqual(records.map(\.bodyBytes), [StaticTestResponder.hello.count, StaticTestResponder.hello.count])
        XCTAssertEqual(records.first?.logInfo.contentID, "hello")
        XCTAssertTrue(records.allSatisfy { $0.request.client.hasPrefix("[::1]:") && $0.duration >= 0 })
        await server.stop()
    }

    func testAltSvcAnnouncesTheBoundPortByDefault() async throws {
        let (server, client) = try await startServer(StaticTestResponder())
        let response = try await client.fetch(.http2, path: "/missing")
        XCTAssertEqual(response.status, 404)
        XCTAssertEqual(response.header("alt-svc"), "h3=\":\(client.port)\"; ma=86400")
        await server.stop()
    }

    func testLargeBodyArrivesWholeOverBothVersions() async throws {
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder)
        for version in [HTTPSTestClient.Version.http1, .http2] {
            let response = try await client.fetch(version, path: "/pieces")
            XCTAssertTrue(response.complete)
            XCTAssertEqual(response.body.count, 64 * StaticTestResponder.piece.count)
            XCTAssertTrue(response.body.allSatisfy { $0 == 0x5A })
        }
        await server.stop()
    }

    func testHeadAndNotModifiedNeverReadTheBody() async throws {
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder)
        for version in [HTTPSTestClient.Version.http1, .http2] {
            let head = try await client.fetch(version, method: .HEAD, path: "/hello")
            XCTAssertEqual(head.status, 200)
            XCTAssertTrue(head.complete)
            XCTAssertEqual(head.body, [])
            XCTAssertEqual(head.header("content-length"), "\(StaticTestResponder.hello.count)")
            let notModified = try await client.fetch(version, path: "/not-modified")
            XCTAssertEqual(notModified.status, 304)
            XCTAssertTrue(notModified.complete)
            XCTAssertEqual(notModified.body, [])
        }
        XCTAssertEqual(responder.pullCount, 0, "HEAD and 304 must not pull the body")
        let records = await responder.waitForRecords(4)
        XCTAssertEqual(records.map(\.bodyBytes), [0, 0, 0, 0])
        await server.stop()
    }

    func testAnErrorMidBodyNeverLooksLikeAWholeBody() async throws {
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder)
        for version in [HTTPSTestClient.Version.http1, .http2] {
            let response = try await client.fetch(version, path: "/fails-midway")
            XCTAssertEqual(response.status, 200)
            XCTAssertFalse(response.complete, "\(version): the body failed, the client must see an incomplete response")
            XCTAssertLessThan(response.body.count, 16 * StaticTestResponder.piece.count)
        }
        let records = await responder.waitForRecords(2)
        XCTAssertEqual(records.count, 2, "finished(_:) once per exchange")
        XCTAssertTrue(records.allSatisfy { $0.bodyBytes == 2 * StaticTestResponder.piece.count })
        await server.stop()
    }

    func testAStalledReaderStopsThePull() async throws {
        for version in [HTTPSTestClient.Version.http1, .http2] {
            let responder = StaticTestResponder()
            let (server, client) = try await startServer(responder)
            let (response, channel) = try await client.request(version, path: "/endless", stallAfterHead: true)
            XCTAssertEqual(response.status, 200)
            // The client reads nothing more. Whatever the socket buffers and the HTTP/2 window
            // take, the server must stop pulling: 4 GiB are on offer, far less may be pulled.
            var last = -1
            for _ in 0..<50 {
                try await Task.sleep(for: .milliseconds(100))
                let now = responder.pullCount
                if now == last { break }
                last = now
            }
            XCTAssertLessThan(responder.pullCount * StaticTestResponder.piece.count, 64 * 1024 * 1024, "\(version): pulled without a reader")
            try? await channel.close().get()
            let records = await responder.waitForRecords(1)
            XCTAssertEqual(records.count, 1)
            await server.stop()
        }
    }

    func testAReaderStalledForTheIdleTimeoutIsDisconnected() async throws {
        for version in [HTTPSTestClient.Version.http1, .http2] {
            var limits = HTTPSServer.Limits()
            limits.idleTimeout = .milliseconds(500)
            let responder = StaticTestResponder()
            let (server, client) = try await startServer(responder, limits: limits)
            let (response, channel) = try await client.request(version, path: "/endless", stallAfterHead: true)
            XCTAssertEqual(response.status, 200)
            // The client never reads again and never closes: the server must end the exchange.
            let records = await responder.waitForRecords(1)
            XCTAssertEqual(records.count, 1, "\(version): a stalled reader must not hold its exchange forever")
            XCTAssertLessThan(records.first?.bodyBytes ?? .max, 64 * 1024 * 1024)
            try? await channel.close().get()
            await server.stop()
        }
    }

    func testStopClosesIdleConnectionsWithoutWaitingForTheGrace() async throws {
        var limits = HTTPSServer.Limits()
        limits.shutdownGrace = .seconds(120)
        let (server, client) = try await startServer(StaticTestResponder(), limits: limits)
        let sinks = [ByteSink(), ByteSink()]
        for (sink, alpn) in zip(sinks, ["http/1.1", "h2"]) {
            let channel = try await client.connect(alpn: alpn) { try $0.pipeline.syncOperations.addHandler(sink) }
            if alpn == "http/1.1" {
                try await channel.writeAndFlush(channel.allocator.buffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).get()
                let answered = await sink.wait { bytes, _ in String(decoding: bytes, as: UTF8.self).contains("hello, front door") }
                XCTAssertTrue(answered)
            }
        }
        let stopping = Task { await server.stop() }
        for sink in sinks {
            let closed = await sink.wait(seconds: 15) { _, closed in closed }
            XCTAssertTrue(closed, "an idle keep-alive connection is closed when the server stops, not after the grace")
        }
        await stopping.value
    }

    func testKeepAliveServesSeveralRequestsAndTheLastOneSaysClose() async throws {
        var limits = HTTPSServer.Limits()
        limits.maxRequestsPerConnection = 3
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder, limits: limits)
        let sink = ByteSink()
        let channel = try await client.connect(alpn: "http/1.1") { try $0.pipeline.syncOperations.addHandler(sink) }
        let request = "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
        try await channel.writeAndFlush(channel.allocator.buffer(string: request + request + request + request)).get()
        let closed = await sink.wait { _, closed in closed }
        XCTAssertTrue(closed, "the connection closes after its third request")
        let text = String(decoding: sink.bytes, as: UTF8.self)
        XCTAssertEqual(text.components(separatedBy: "HTTP/1.1 200 OK").count - 1, 3)
        XCTAssertEqual(text.lowercased().components(separatedBy: "connection: close").count - 1, 1)
        await server.stop()
    }

    func testOversizedHeadersAreRefused() async throws {
        var limits = HTTPSServer.Limits()
        limits.maxHeaderBytes = 1024
        let (server, client) = try await startServer(StaticTestResponder(), limits: limits)
        let response = try await client.fetch(.http1, path: "/hello", headers: [("x-junk", String(repeating: "a", count: 900)), ("x-more", String(repeating: "b", count: 900))])
        XCTAssertTrue([400, 431].contains(response.status), "got \(response.status)")
        await server.stop()
    }

    func testConnectionsBeyondTheBoundAreClosed() async throws {
        var limits = HTTPSServer.Limits()
        limits.maxConnections = 2
        let (server, client) = try await startServer(StaticTestResponder(), limits: limits)
        let held = [ByteSink(), ByteSink()]
        var channels: [any Channel] = []
        for sink in held {
            let channel = try await client.connect(alpn: "http/1.1") { try $0.pipeline.syncOperations.addHandler(sink) }
            try await channel.writeAndFlush(channel.allocator.buffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).get()
            let answered = await sink.wait { bytes, _ in String(decoding: bytes, as: UTF8.self).contains("hello, front door") }
            XCTAssertTrue(answered)
            channels.append(channel)
        }
        XCTAssertEqual(server.connectionCount, 2)
        let third = ByteSink()
        let refused = try? await client.connect(alpn: "http/1.1") { try $0.pipeline.syncOperations.addHandler(third) }
        if let refused {
            refused.writeAndFlush(refused.allocator.buffer(string: "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), promise: nil)
            let closed = await third.wait { _, closed in closed }
            XCTAssertTrue(closed)
            XCTAssertFalse(String(decoding: third.bytes, as: UTF8.self).contains("hello"))
        }
        for channel in channels { try? await channel.close().get() }
        await server.stop()
    }

    func testIdleConnectionsAreClosed() async throws {
        var limits = HTTPSServer.Limits()
        limits.idleTimeout = .milliseconds(300)
        let (server, client) = try await startServer(StaticTestResponder(), limits: limits)
        let sink = ByteSink()
        _ = try await client.connect(alpn: "h2") { try $0.pipeline.syncOperations.addHandler(sink) }
        let closed = await sink.wait(seconds: 15) { _, closed in closed }
        XCTAssertTrue(closed)
        await server.stop()
    }

    func testStartRefusesIPv4AndUnreadableCertificates() async throws {
        let responder = StaticTestResponder()
        let v4 = HTTPSServer(configuration: HTTPListenerConfiguration(host: "127.0.0.1", port: 0, certificatePath: certPath, keyPath: keyPath, responder: responder))
        do {
            _ = try await v4.start()
            XCTFail("an IPv4 address must be refused")
        } catch let error as HTTPSServerError {
            XCTAssertEqual(error.code, .notIPv6)
            XCTAssertTrue(error.reason.contains("IPv6"))
        }
        let noCert = HTTPSServer(configuration: HTTPListenerConfiguration(host: "::1", port: 0, certificatePath: directory + "/absent.pem", keyPath: keyPath, responder: responder))
        do {
            _ = try await noCert.start()
            XCTFail("a missing certificate must be refused")
        } catch let error as HTTPSServerError {
            XCTAssertEqual(error.code, .certificate)
            XCTAssertTrue(error.reason.contains("absent.pem"))
        }
        let wrongKey = try CertificateAuthority.create().issue(name: "other").write(to: directory, name: "other").key
        let mismatched = HTTPSServer(configuration: HTTPListenerConfiguration(host: "::1", port: 0, certificatePath: certPath, keyPath: wrongKey, responder: responder))
        do {
            _ = try await mismatched.start()
            XCTFail("a key of another certificate must be refused")
        } catch let error as HTTPSServerError {
            XCTAssertEqual(error.code, .certificate)
        }
    }

    // MARK: WebSocket

    private func webSocketRequest(_ path: String) -> String {
        "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    /// A masked client frame.
    private func clientFrame(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    /// Server frames after the 101 head: (opcode, payload).
    private func serverFrames(_ bytes: [UInt8]) -> [(UInt8, [UInt8])] {
        let text = bytes
        guard let end = (0..<max(0, text.count - 3)).first(where: { text[$0] == 13 && text[$0 + 1] == 10 && text[$0 + 2] == 13 && text[$0 + 3] == 10 }) else { return [] }
        var i = end + 4
        var frames: [(UInt8, [UInt8])] = []
        while i + 2 <= bytes.count {
            let opcode = bytes[i] & 0x0F
            var length = Int(bytes[i + 1] & 0x7F)
            var start = i + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { break }
                length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
                start += 2
            }
            guard start + length <= bytes.count else { break }
            frames.append((opcode, Array(bytes[start..<start + length])))
            i = start + length
        }
        return frames
    }

    func testWebSocketPushesEachVersionAnswersPingAndClosesCleanly() async throws {
        let responder = StaticTestResponder()
        let (server, client) = try await startServer(responder)
        let sink = ByteSink()
        let channel = try await client.connect(alpn: "http/1.1") { try $0.pipeline.syncOperations.addHandler(sink) }
        try await channel.writeAndFlush(channel.allocator.buffer(string: webSocketRequest("/ws/name/site"))).get()
        let upgraded = await sink.wait { bytes, _ in String(decoding: bytes, as: UTF8.self).hasPrefix("HTTP/1.1 101") }
        XCTAssertTrue(upgraded, String(decoding: sink.bytes, as: UTF8.self))
        XCTAssertTrue(String(decoding: sink.bytes, as: UTF8.self).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        XCTAssertEqual(responder.watcherCount, 1)

        responder.publish(#"{"name":"site","version":2,"content":"abc"}"#)
        responder.publish(#"{"name":"site","version":3,"content":"def"}"#)
        let pushed = await sink.wait { bytes, _ in self.serverFrames(bytes).count >= 2 }
        XCTAssertTrue(pushed)
        let frames = serverFrames(sink.bytes)
        XCTAssertEqual(frames.map(\.0), [0x1, 0x1])
        XCTAssertEqual(frames.map { String(decoding: $0.1, as: UTF8.self) }, [#"{"name":"site","version":2,"content":"abc"}"#, #"{"name":"site","version":3,"content":"def"}"#])

        try await channel.writeAndFlush(channel.allocator.buffer(bytes: clientFrame(opcode: 0x9, payload: Array("are you there".utf8)))).get()
        let ponged = await sink.wait { bytes, _ in self.serverFrames(bytes).contains { $0.0 == 0xA } }
        XCTAssertTrue(ponged)
        XCTAssertEqual(serverFrames(sink.bytes).first { $0.0 == 0xA }?.1, Array("are you there".utf8))

        try await channel.writeAndFlush(channel.allocator.buffer(bytes: clientFrame(opcode: 0x8, payload: [0x03, 0xE8]))).get()
        let closed = await sink.wait { _, closed in closed }
        XCTAssertTrue(closed)
        XCTAssertEqual(serverFrames(sink.bytes).last.map { [$0.0] + $0.1 }, [0x8, 0x03, 0xE8], "the close frame is echoed")
        await server.stop()
    }

    func testWebSocketForAnUnknownNameIs404() async throws {
        let (server, client) = try await startServer(StaticTestResponder())
        let sink = ByteSink()
        let channel = try await client.connect(alpn: "http/1.1") { try $0.pipeline.syncOperations.addHandler(sink) }
        try await channel.writeAndFlush(channel.allocator.buffer(string: webSocketRequest("/ws/name/nobody"))).get()
        let answered = await sink.wait { bytes, _ in String(decoding: bytes, as: UTF8.self).contains("\r\n\r\n") }
        XCTAssertTrue(answered)
        XCTAssertTrue(String(decoding: sink.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 404"), String(decoding: sink.bytes, as: UTF8.self))
        try? await channel.close().get()
        await server.stop()
    }

    func testWatchedNameParsing() {
        XCTAssertEqual(HTTPSWebSocket.watchedName(target: "/ws/name/site"), "site")
        XCTAssertEqual(HTTPSWebSocket.watchedName(target: "/ws/name/my%20site?x=1"), "my site")
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/"))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/a/b"))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/a%2Fb"))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/%zz"))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/%0a"))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/ws/name/" + String(repeating: "n", count: 300)))
        XCTAssertNil(HTTPSWebSocket.watchedName(target: "/stoq/abc"))
    }

    func testDateFormat() {
        XCTAssertEqual(HTTPSDate.string(secondsSinceEpoch: 784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT")
    }
}
