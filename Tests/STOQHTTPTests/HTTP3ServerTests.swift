import Foundation
import NIOCore
import STOQIdentity
import STOQTransport
import Synchronization
import Testing

@testable import STOQHTTP

/// HTTP3Server over real QUIC on [::1], asked by a small HTTP/3 client built on the same
/// nghttp3 wrapper in client role.
@Suite(.serialized) final class HTTP3ServerTests {
    /// Serves fixed bodies: `/hello`, `/big` (2 MB in 64 KiB pieces, counting pulls), `/fail`
    /// (fails after 3 pieces), `/slow` (never ends until cancelled); everything else 404.
    final class StaticResponder: HTTPResponder {
        let big: [UInt8] = (0..<2_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let records = Mutex<[HTTPExchangeRecord]>([])
        let pulls = Mutex(0)

        func respond(to request: HTTPRequest) async -> HTTPResponse {
            switch request.target {
            case "/hello":
                let body = Array("hello over h3\n".utf8)
                return HTTPResponse(status: 200, headers: [("content-length", "\(body.count)"), ("etag", "\"h\"")], body: .bytes(body))
            case "/big":
                let big = self.big
                let offset = Counter()
                return HTTPResponse(
                    status: 200, headers: [("content-length", "\(big.count)")],
                    body: HTTPBody {
                        self.pulls.withLock { $0 += 1 }
                        return offset.value.withLock { o -> [UInt8]? in
                            guard o < big.count else { return nil }
                            let n = min(65_536, big.count - o)
                            defer { o += n }
                            return Array(big[o..<o + n])
                        }
                    })
            case "/huge":
                // 64 MiB made up as it is pulled: nothing is held, only pulls are counted.
                let served = Counter()
                return HTTPResponse(
                    status: 200, headers: [("content-length", "\(64 << 20)")],
                    body: HTTPBody {
                        self.pulls.withLock { $0 += 1 }
                        let n = served.value.withLock { c in
                            c += 1
                            return c
                        }
                        return n > 1024 ? nil : [UInt8](repeating: 0x5A, count: 65_536)
                    })
            case "/fail":
                let count = Counter()
                return HTTPResponse(
                    status: 200, headers: [("content-length", "1000000")],
                    body: HTTPBody {
                        let n = count.value.withLock { c in
                            c += 1
                            return c
                        }
                        if n > 3 { throw CocoaError(.fileReadUnknown) }
                        return [UInt8](repeating: 7, count: 10_000)
                    })
            default:
                return HTTPResponse(status: 404, headers: [("content-length", "10")], body: .bytes(Array("not found\n".utf8)))
            }
        }

        func finished(_ record: HTTPExchangeRecord) {
            records.withLock { $0.append(record) }
        }
    }

    final class Counter: Sendable {
        let value = Mutex(0)
    }

    struct Response {
        var status = 0
        var headers: [String: String] = [:]
        var body: [UInt8] = []
        var resetCode: UInt64?
    }

    /// A minimal HTTP/3 client: one connection, requests without bodies.
    actor Client {
        let connection: Connection
        private let core: HTTP3Connection
        private var responses: [Int64: Response] = [:]
        private var waiters: [Int64: CheckedContinuation<Response, Never>] = [:]
        private var writeChains: [Int64: Task<Void, Never>] = [:]
        private var streams: [Int64: QUICStream] = [:]

        init(connection: Connection) throws {
            self.connection = connection
            core = try HTTP3Connection(role: .client)
        }

        func start() async throws {
            var ids: [Int64] = []
            for _ in 0..<3 {
                let s = try await connection.openUnidirectionalStream()
                streams[s.id] = s
                ids.append(s.id)
            }
            try core.bind(control: ids[0], qpackEncoder: ids[1], qpackDecoder: ids[2])
            flush()
            let incoming = connection.incomingStreams
            Task { for await s in incoming { Task { await self.read(s) } } }
        }

        func get(_ path: String, method: String = "GET", headers: [(name: String, value: String)] = []) async throws -> Response {
            let stream = try await connection.openBidirectionalStream()
            streams[stream.id] = stream
            responses[stream.id] = Response()
            try core.submitRequest(
                stream.id, headers: [(":method", method), (":scheme", "https"), (":authority", "stoq.test"), (":path", path)] + headers)
            flush()
            let id = stream.id
            Task { await self.read(stream) }
            return await withCheckedContinuation { waiters[id] = $0 }
        }

        /// Sends a request and never reads its response.
        func requestWithoutReading(_ path: String) async throws {
            let stream = try await connection.openBidirectionalStream()
            streams[stream.id] = stream
            try core.submitRequest(stream.id, headers: [(":method", "GET"), (":scheme", "https"), (":authority", "stoq.test"), (":path", path)])
            flush()
        }

        private func read(_ stream: QUICStream) async {
            do {
                for try await buffer in stream { feed(stream.id, buffer, fin: false) }
                feed(stream.id, nil, fin: true)
            } catch let error as STOQError {
                responses[stream.id]?.resetCode = error.applicationCode
                complete(stream.id)
            } catch {}
        }

        private func feed(_ id: Int64, _ buffer: ByteBuffer?, fin: Bool) {
            try? core.handle(streamID: id, buffer: buffer, fin: fin)
            while let event = core.pollEvent() {
                switch event {
                case .headers(let sid, let fields, _):
                    for f in fields {
                        if f.name == ":status" { responses[sid]?.status = Int(f.value) ?? 0 } else { responses[sid]?.headers[f.name] = f.value }
                    }
                case .data(let sid, let bytes):
                    responses[sid]?.body += bytes
                case .endStream(let sid):
                    complete(sid)
                default:
                    break
                }
            }
            flush()
        }

        private func complete(_ id: Int64) {
            guard let w = waiters.removeValue(forKey: id), let r = responses[id] else { return }
            w.resume(returning: r)
        }

        private func flush() {
            while let w = try? core.pollWrite() {
                guard let stream = streams[w.streamID] else { continue }
                let previous = writeChains[w.streamID]
                writeChains[w.streamID] = Task {
                    await previous?.value
                    try? await stream.write(w.bytes)
                    if w.fin { try? await stream.finish() }
                }
            }
        }
    }

    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-h3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ca = try CertificateAuthority.create(commonName: "STOQ HTTP test CA")
        let leaf = try ca.issue(name: "stoq.test", dnsNames: ["localhost"], ipAddresses: ["::1"])
        try leaf.certificateChainPEM.write(to: directory.appendingPathComponent("cert.pem"), atomically: true, encoding: .utf8)
        try leaf.privateKeyPEM.write(to: directory.appendingPathComponent("key.pem"), atomically: true, encoding: .utf8)
    }

    deinit {
        try? FileManager.default.removeItem(at: directory)
    }

    private func startServer(_ responder: StaticResponder, options: HTTP3Server.Options = .init()) async throws -> (HTTP3Server, Int) {
        let server = HTTP3Server(
            configuration: HTTPListenerConfiguration(
                host: "::1", port: 0, certificatePath: directory.appendingPathComponent("cert.pem").path,
                keyPath: directory.appendingPathComponent("key.pem").path, responder: responder),
            options: options)
        return (server, try await server.start())
    }

    private func connect(_ port: Int, configuration: EndpointConfiguration = .init()) async throws -> (Endpoint, Client) {
        let tls = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil, alpn: ["h3"], verifyPeer: false)
        let endpoint = try await Endpoint.bind(host: "::1", port: 0, tls: tls, configuration: configuration)
        let connection = try await endpoint.connect(host: "::1", port: port, serverName: "stoq.test")
        let client = try Client(connection: connection)
        try await client.start()
        return (endpoint, client)
    }

    /// Bounded wait for a condition that another task makes true.
    private func eventually(_ what: String, _ condition: () -> Bool) async {
        for _ in 0..<500 where !condition() { try? await Task.sleep(for: .milliseconds(20)) }
        #expect(condition(), Comment(rawValue: what))
    }

    @Test func getHeadNotFoundAndALargeBodyPulledAsItDrains() async throws {
        let responder = StaticResponder()
        let (server, port) = try await startServer(responder)
        let (endpoint, client) = try await connect(port)

        let hello = try await client.get("/hello")
        #expect(hello.status == 200)
        #expect(String(decoding: hello.body, as: UTF8.self) == "hello over h3\n")
        #expect(hello.headers["date"] != nil)

        let head = try await client.get("/hello", method: "HEAD")
        #expect(head.status == 200)
        #expect(head.body == [])
        #expect(head.headers["content-length"] == "14")

        let missing = try await client.get("/nope")
        #expect(missing.status == 404)

        let big = try await client.get("/big")
        #expect(big.status == 200)
        #expect(big.body == responder.big, "2 MB arrive bit-exact")
        // 31 pieces of 64 KiB, then the end: every pull was asked for, none more.
        #expect(responder.pulls.withLock { $0 } == 32)

        await eventually("one record per exchange") { responder.records.withLock { $0.count } == 4 }
        let records = responder.records.withLock { $0 }
        #expect(records.map(\.request.wireProtocol) == Array(repeating: .http3, count: 4))
        #expect(records.first { $0.request.method == "HEAD" }?.bodyBytes == 0)
        #expect(records.first { $0.request.target == "/big" }?.bodyBytes == 2_000_000)
        #expect(records.first?.request.header("host") == "stoq.test", ":authority becomes host")

        await endpoint.close()
        await server.stop()
    }

    @Test func aClientThatDoesNotReadStopsTheBodyBeingPulled() async throws {
        let responder = StaticResponder()
        let (server, port) = try await startServer(responder)
        var small = EndpointConfiguration()
        small.streamReceiveWindow = 64 * 1024
        small.maxStreamReceiveWindow = 64 * 1024
        let (endpoint, client) = try await connect(port, configuration: small)
        try await client.requestWithoutReading("/huge")
        // Wait until the pulls stop (or 5 s pass): a stalled stream must stop asking for body.
        var last = -1
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(100))
            let now = responder.pulls.withLock { $0 }
            if now == last && now > 0 { break }
            last = now
        }
        let pulls = responder.pulls.withLock { $0 }
        #expect(pulls > 0)
        // The client's 64 KiB window, the transport's 1 MiB send buffer, the session's 256 KiB
        // queue and a piece or two: about 22 pieces of 64 KiB, never the 1024 of the whole body.
        #expect(pulls <= 40, "the body was pulled ahead of what the client reads")
        await endpoint.close()
        await server.stop()
    }

    @Test func aBodyThatFailsResetsItsStreamAndTheConnectionGoesOn() async throws {
        let responder = StaticResponder()
        let (server, port) = try await startServer(responder)
        let (endpoint, client) = try await connect(port)

        let failed = try await client.get("/fail")
        #expect(failed.resetCode == HTTP3ErrorCode.internalError, "reset with H3_INTERNAL_ERROR, never a clean end")
        #expect(failed.body.count < 1_000_000)

        let hello = try await client.get("/hello")
        #expect(hello.status == 200)
        await eventually("the failed exchange is reported once") {
            responder.records.withLock { $0.filter { $0.request.target == "/fail" }.count } == 1
        }
        await endpoint.close()
        await server.stop()
    }

    @Test func startRefusesIPv4AndUnreadableCertificatesWithReadableErrors() async throws {
        let responder = StaticResponder()
        let v4 = HTTP3Server(
            configuration: HTTPListenerConfiguration(
                host: "127.0.0.1", port: 0, certificatePath: directory.appendingPathComponent("cert.pem").path,
                keyPath: directory.appendingPathComponent("key.pem").path, responder: responder))
        do {
            _ = try await v4.start()
            Issue.record("an IPv4 address was accepted")
        } catch let error as HTTP3Error {
            #expect(error.code == .cannotListen)
            #expect(error.reason.contains("IPv6"), "\(error.reason)")
        }
        let noCert = HTTP3Server(
            configuration: HTTPListenerConfiguration(
                host: "::1", port: 0, certificatePath: "/nonexistent/cert.pem", keyPath: "/nonexistent/key.pem", responder: responder))
        do {
            _ = try await noCert.start()
            Issue.record("a missing certificate was accepted")
        } catch let error as HTTP3Error {
            #expect(error.reason.contains("/nonexistent/cert.pem"), "\(error.reason)")
        }
    }
}
