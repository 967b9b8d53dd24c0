// A small static HTTPS server for the pytest suite in Tests/HTTP: HTTPSServer in front of a
// directory, with a test responder (ETag, If-None-Match, one Range, HEAD, 404) and a watchable
// name. It stands in for `stoq node --http` until that is wired, and stays useful for testing the
// listener alone. Not a product: nothing ships it.
//
//   stoq-https-testserver --make-certs DIR            writes DIR/ca.pem, DIR/node.pem, DIR/node.key
//   stoq-https-testserver --root DIR --cert C --key K [--port N] [--h3-port N] [--max-connections N]
//
// Prints `LISTENING <port>` once bound, serves until stdin closes or SIGTERM.
import Crypto
import Foundation
import STOQHTTP
import STOQIdentity

/// Serves files under a root directory.
struct DirectoryResponder: HTTPResponder {
    let root: URL
    let log: FileHandle?

    func respond(to request: HTTPRequest) async -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else {
            return HTTPResponse(status: 405, headers: [("allow", "GET, HEAD"), ("content-length", "0")])
        }
        var path = request.target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        if path.hasPrefix("/delay/") {
            // The same file, 1.5 s later: keeps a page's load event pending (the Chromium test).
            try? await Task.sleep(for: .milliseconds(1500))
            path = String(path.dropFirst("/delay".count))
        }
        if path == "/slow-error" {
            // Sends a head promising 1 MiB, then fails mid-body.
            let sent = Counter()
            return HTTPResponse(status: 200, headers: [("content-length", "1048576")], body: HTTPBody {
                if sent.bump() > 2 { throw CancellationError() }
                return [UInt8](repeating: 0x61, count: 65536)
            })
        }
        guard let relative = path.removingPercentEncoding, !relative.split(separator: "/").contains(".."),
              case let file = root.appendingPathComponent(String(relative.dropFirst())),
              let data = FileManager.default.contents(atPath: file.path), !file.hasDirectoryPath
        else {
            return HTTPResponse(status: 404, headers: [("content-type", "text/plain"), ("content-length", "10")], body: .bytes(Array("not found\n".utf8)))
        }
        let bytes = [UInt8](data)
        let etag = "\"" + SHA256.hash(data: bytes).prefix(12).map { String(format: "%02x", $0) }.joined() + "\""
        var headers: [(name: String, value: String)] = [("etag", etag), ("accept-ranges", "bytes"), ("content-type", type(of: file.pathExtension))]
        if request.header("if-none-match") == etag {
            return HTTPResponse(status: 304, headers: headers, body: HTTPBody { fatalError("a 304 body was read") })
        }
        var range = 0..<bytes.count
        var status = 200
        if let value = request.header("range"), value.hasPrefix("bytes="), !value.contains(",") {
            let parts = value.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2, let first = Int(parts[0]) {
                let last = Int(parts[1]).map { min($0, bytes.count - 1) } ?? bytes.count - 1
                guard first < bytes.count, first <= last else {
                    return HTTPResponse(status: 416, headers: [("content-range", "bytes */\(bytes.count)"), ("content-length", "0")])
                }
                range = first..<(last + 1)
                status = 206
                headers.append(("content-range", "bytes \(first)-\(last)/\(bytes.count)"))
            }
        }
        headers.append(("content-length", "\(range.count)"))
        let slice = Array(bytes[range])
        let offset = Counter()
        let piece = 16384
        return HTTPResponse(status: status, headers: headers, body: HTTPBody {
            let start = offset.take(piece)
            guard start < slice.count else { return nil }
            return Array(slice[start..<min(start + piece, slice.count)])
        }, logInfo: HTTPLogInfo(cache: "hit", contentID: relative))
    }

    func finished(_ record: HTTPExchangeRecord) {
        let line = "\(record.request.wireProtocol.rawValue) \(record.request.method) \(record.request.target) \(record.status) \(record.bodyBytes)\n"
        log?.write(Data(line.utf8))
    }

    func watch(name: String) -> AsyncStream<String>? {
        guard name == "tick" else { return nil }
        return AsyncStream { continuation in
            let task = Task {
                for version in 1...3 {
                    try? await Task.sleep(for: .milliseconds(200))
                    continuation.yield("{\"name\":\"tick\",\"version\":\(version),\"content\":\"c\(version)\"}")
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func type(of ext: String) -> String {
        switch ext {
        case "html": return "text/html; charset=utf-8"
        case "js": return "text/javascript"
        case "png": return "image/png"
        case "txt": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }
}

/// A counter shared by a body's pulls.
final class Counter: @unchecked Sendable {
    // Unchecked: guarded by its lock; the pulls of one body never overlap anyway.
    private let lock = NSLock()
    private var value = 0
    func bump() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
    func take(_ n: Int) -> Int { lock.lock(); defer { lock.unlock() }; let v = value; value += n; return v }
}

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(2)
}

if let dir = argument("--make-certs") {
    do {
        let ca = try CertificateAuthority.create(commonName: "STOQ test CA")
        _ = try ca.write(to: dir)
        let node = try ca.issue(name: "node", dnsNames: ["stoq.test", "localhost"])
        _ = try node.write(to: dir, name: "node")
    } catch {
        fail("could not write test certificates: \(error)")
    }
    exit(0)
}

guard let rootPath = argument("--root"), let cert = argument("--cert"), let key = argument("--key") else {
    fail("usage: stoq-https-testserver --root DIR --cert PEM --key PEM [--port N] [--h3-port N] [--max-connections N] [--log FILE]")
}
var limits = HTTPSServer.Limits()
if let n = argument("--max-connections").flatMap(Int.init) { limits.maxConnections = n }
if let n = argument("--idle-seconds").flatMap(Int.init) { limits.idleTimeout = .seconds(n) }
var log: FileHandle?
if let path = argument("--log") {
    FileManager.default.createFile(atPath: path, contents: nil)
    log = FileHandle(forWritingAtPath: path)
}
let responder = DirectoryResponder(root: URL(fileURLWithPath: rootPath), log: log)
let server = HTTPSServer(
    configuration: HTTPListenerConfiguration(host: argument("--host") ?? "::1", port: argument("--port").flatMap(Int.init) ?? 0, certificatePath: cert, keyPath: key, responder: responder),
    http3Port: argument("--h3-port").flatMap(Int.init), limits: limits
)
do {
    let port = try await server.start()
    FileHandle.standardOutput.write(Data("LISTENING \(port)\n".utf8))
} catch {
    fail("\(error)")
}
signal(SIGTERM, SIG_IGN)
let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .main)
let stopped = AsyncStream<Void> { continuation in
    term.setEventHandler { continuation.finish() }
    term.resume()
    Thread.detachNewThread {
        while let _ = readLine() {}
        continuation.finish()
    }
}
for await _ in stopped {}
await server.stop()
