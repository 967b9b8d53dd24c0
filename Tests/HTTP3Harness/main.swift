// A small HTTP/3 server for the process-level tests in Tests/HTTP3: STOQHTTP's HTTP3Server
// serving the files of one directory (read from disk as the body is pulled) through a static responder (GET, HEAD, a single Range,
// If-None-Match, 404, 405). It stands in for `stoq node --http` where a test wants the HTTP/3
// server alone.
//
//   stoq-http3-harness --root DIR --cert C --key K [--port N] [--fail-after BYTES]
//
// Prints `listening PORT` once serving, then `finished STATUS BYTES METHOD TARGET` per exchange;
// exits on SIGTERM or when stdin closes. When an option is given twice the last one counts.
import Crypto
import Foundation
import STOQHTTP

struct HarnessError: Error, CustomStringConvertible {
    var description: String
}

/// Serves a directory. A file's ETag hashes its path, size and mtime; the body is read 64 KiB at a time
/// as the server pulls it. `/fail/<name>` serves `<name>` but fails after `failAfter` bytes.
final class DirectoryResponder: HTTPResponder {
    let root: URL
    let failAfter: Int

    init(root: URL, failAfter: Int) {
        self.root = root.standardizedFileURL
        self.failAfter = failAfter
    }

    func respond(to request: HTTPRequest) async -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else {
            return text(405, "method not allowed\n", extra: [("allow", "GET, HEAD")])
        }
        var path = request.target
        if let q = path.firstIndex(of: "?") { path = String(path[..<q]) }
        var failing = false
        if path.hasPrefix("/fail/") {
            failing = true
            path = String(path.dropFirst(5))
        }
        guard let decoded = path.removingPercentEncoding, !decoded.split(separator: "/").contains("..") else {
            return text(400, "bad path\n")
        }
        let file = root.appendingPathComponent(decoded).standardizedFileURL
        var isDirectory: ObjCBool = false
        guard file.path.hasPrefix(root.path + "/"), FileManager.default.fileExists(atPath: file.path, isDirectory: &isDirectory),
            !isDirectory.boolValue, let attributes = try? FileManager.default.attributesOfItem(atPath: file.path),
            let size = (attributes[.size] as? NSNumber)?.intValue, let handle = FileHandle(forReadingAtPath: file.path)
        else {
            return text(404, "not found\n")
        }
        // A strong ETag without reading the file: its size and modification time, hashed.
        let stamp = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let etag = "\"" + SHA256.hash(data: Data("\(file.path) \(size) \(stamp)".utf8)).prefix(16).map { String(format: "%02x", $0) }.joined() + "\""
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript", "png": "image/png", "txt": "text/plain; charset=utf-8"]
        let type = types[file.pathExtension.lowercased()] ?? "application/octet-stream"
        var headers: [(name: String, value: String)] = [("content-type", type), ("etag", etag)]
        if request.header("if-none-match") == etag {
            return HTTPResponse(status: 304, headers: headers)
        }
        var start = 0
        var end = size  // exclusive
        var status = 200
        if let range = request.header("range"), range.hasPrefix("bytes="), !range.contains(",") {
            let spec = range.dropFirst(6).split(separator: "-", omittingEmptySubsequences: false)
            if spec.count == 2 {
                if spec[0].isEmpty, let suffix = Int(spec[1]) {
                    start = max(0, size - suffix)
                } else if let s = Int(spec[0]) {
                    start = s
                    if let e = Int(spec[1]) { end = min(size, e + 1) }
                }
                guard start < size, start < end else {
                    return text(416, "range not satisfiable\n", extra: [("content-range", "bytes */\(size)")])
                }
                status = 206
                headers.append(("content-range", "bytes \(start)-\(end - 1)/\(size)"))
            }
        }
        headers.append(("content-length", String(end - start)))
        let pieces = PieceReader(handle, start: start, end: end, failAfter: failing ? failAfter : nil)
        return HTTPResponse(status: status, headers: headers, body: HTTPBody { try pieces.next() })
    }

    func finished(_ record: HTTPExchangeRecord) {
        say("finished \(record.status) \(record.bodyBytes) \(record.request.method) \(record.request.target)")
    }

    private func text(_ status: Int, _ body: String, extra: [(name: String, value: String)] = []) -> HTTPResponse {
        let bytes = Array(body.utf8)
        return HTTPResponse(
            status: status, headers: [("content-type", "text/plain"), ("content-length", String(bytes.count))] + extra,
            body: .bytes(bytes))
    }
}

/// Reads a byte range of a file 64 KiB at a time, as the server pulls.
final class PieceReader: @unchecked Sendable {
    // @unchecked Sendable: the server calls next() from one task at a time (it pulls the next
    // piece only after the previous one arrived), and the lock guards the state anyway.
    private let handle: FileHandle
    private let end: Int
    private let start: Int
    private let failAfter: Int?
    private var offset: Int
    private let lock = NSLock()

    init(_ handle: FileHandle, start: Int, end: Int, failAfter: Int?) {
        self.handle = handle
        self.start = start
        self.end = end
        self.offset = start
        self.failAfter = failAfter
    }

    deinit { try? handle.close() }

    func next() throws -> [UInt8]? {
        try lock.withLock {
            if let failAfter, offset - start >= failAfter { throw HarnessError(description: "failing on purpose after \(failAfter) bytes") }
            guard offset < end else { return nil }
            try handle.seek(toOffset: UInt64(offset))
            let data = try handle.read(upToCount: min(64 * 1024, end - offset)) ?? Data()
            guard !data.isEmpty else { throw HarnessError(description: "the file shrank while it was served") }
            offset += data.count
            return [UInt8](data)
        }
    }
}

/// Writes one line to stdout at once (no buffering: the test reads it while we run).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.lastIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

guard let root = argument("--root"), let cert = argument("--cert"), let key = argument("--key") else {
    FileHandle.standardError.write(Data("usage: stoq-http3-harness --root DIR --cert C --key K [--port N] [--fail-after BYTES]\n".utf8))
    exit(2)
}
let responder = DirectoryResponder(root: URL(fileURLWithPath: root), failAfter: Int(argument("--fail-after") ?? "") ?? 100_000)
let server = HTTP3Server(
    configuration: HTTPListenerConfiguration(
        host: argument("--host") ?? "::1", port: Int(argument("--port") ?? "0") ?? 0, certificatePath: cert, keyPath: key,
        responder: responder))
do {
    let port = try await server.start()
    say("listening \(port)")
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
signal(SIGTERM, SIG_IGN)
let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
let stopping = DispatchSemaphore(value: 0)
term.setEventHandler { stopping.signal() }
term.resume()
// stdin closing (the test died) stops the server too.
Thread.detachNewThread {
    while let line = readLine() { _ = line }
    stopping.signal()
}
await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
    DispatchQueue.global().async {
        stopping.wait()
        c.resume()
    }
}
await server.stop()
