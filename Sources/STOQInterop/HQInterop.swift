import Crypto
import Foundation
import Logging
import NIOCore
import STOQExchange
import STOQIdentity
import STOQTransport

/// HTTP/0.9 over QUIC (ALPN `hq-interop`), as the QUIC interop runner uses it: the client sends
/// `GET /path\r\n` on a bidirectional stream and finishes it; the server answers with the file's
/// bytes and FIN. It lets stacks nobody here wrote (aioquic, ngtcp2, quiche…) talk to STOQ.
public enum HQInterop {
    /// The ALPN token.
    public static let alpn = "hq-interop"
    /// Application error code sent in RESET_STREAM when a request is refused (bad request, not found).
    public static let requestRejected: UInt64 = 0x10B
    /// The longest request line accepted.
    public static let maximumRequestLength = 8 * 1024

    /// Parses a request line into a path relative to the document root.
    ///
    /// Accepts `GET /path` with `\r\n`, `\n` or nothing at the end; strips a query string;
    /// percent-decodes; refuses anything that could escape the root (`..`, NUL, backslashes).
    /// - Returns: the relative path components, or `nil` for a request to refuse.
    public static func parseRequest(_ bytes: [UInt8]) -> [String]? {
        guard bytes.count <= maximumRequestLength, var line = String(validating: bytes, as: UTF8.self) else { return nil }
        while let last = line.last, last.isNewline { line.removeLast() }  // "\r\n" is one Character
        guard line.hasPrefix("GET ") else { return nil }
        var target = String(line.dropFirst(4))
        if let space = target.firstIndex(of: " ") { target = String(target[..<space]) }  // "GET /x HTTP/1.0"
        if let q = target.firstIndex(where: { $0 == "?" || $0 == "#" }) { target = String(target[..<q]) }
        guard target.hasPrefix("/"), let decoded = target.removingPercentEncoding else { return nil }
        var components = [String]()
        for part in decoded.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            guard part != "..", !part.contains("\0"), !part.contains("\\") else { return nil }
            components.append(String(part))
        }
        return components
    }
}

/// Serves the files under a root directory over `hq-interop` (and any ALPN whose requests use the
/// same `GET /path` form), one request per bidirectional stream.
public final class HQFileServer: StreamServer {
    /// The document root (resolved, symlinks followed).
    public let root: String
    private let logger: Logger
    /// Bytes read from disk per stream write (one `pread`, one send-buffer reference).
    public let blockSize: Int
    private let allocator = ByteBufferAllocator()

    /// Creates a server for `root`.
    /// - Throws: ``NodeError`` when the root is not a readable directory.
    public init(root: String, blockSize: Int = 512 * 1024, logger: Logger = Logger(label: "stoq.hq")) throws(NodeError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw NodeError(.notFound, "\(root) is not a directory")
        }
        self.root = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
        self.blockSize = max(4096, blockSize)
        self.logger = logger
    }

    /// Answers one request stream.
    public func serve(stream: QUICStream, on connection: Connection) async {
        do {
            var request = [UInt8]()
            for try await piece in stream {
                request.append(contentsOf: piece.readableBytesView)
                guard request.count <= HQInterop.maximumRequestLength else { break }
            }
            guard let components = HQInterop.parseRequest(request), let path = resolve(components) else {
                logger.info("refused request", metadata: ["request": "\(String(decoding: request.prefix(120), as: UTF8.self))"])
                await stream.reset(code: HQInterop.requestRejected)
                return
            }
            try await send(file: path, on: stream)
        } catch {
            logger.debug("request stream failed", metadata: ["error": "\(error)"])
            await stream.reset(code: HQInterop.requestRejected)
        }
    }

    /// Maps path components to a regular file inside the root, or nil.
    func resolve(_ components: [String]) -> String? {
        let candidate = URL(fileURLWithPath: root).appendingPathComponent(components.joined(separator: "/"))
            .resolvingSymlinksInPath().path
        guard candidate == root || candidate.hasPrefix(root.hasSuffix("/") ? root : root + "/") else { return nil }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory) else { return nil }
        if isDirectory.boolValue {
            let index = candidate + "/index.html"
            return FileManager.default.fileExists(atPath: index) ? index : nil
        }
        return candidate
    }

    /// Sends the file in `blockSize` blocks, each read with one `pread` into a fresh buffer that
    /// the stream's send buffer then keeps by reference until acknowledged: no byte is copied
    /// between the page cache and encryption.
    private func send(file path: String, on stream: QUICStream) async throws {
        let file: BlockFile
        do { file = try BlockFile(path: path) } catch {
            logger.info("refused request", metadata: ["error": "\(error)"])
            await stream.reset(code: HQInterop.requestRejected)
            return
        }
        var offset: Int64 = 0
        while true {
            let block = try file.read(count: blockSize, at: offset, allocator: allocator)
            if block.readableBytes == 0 { break }
            offset += Int64(block.readableBytes)
            try await stream.write(block)
        }
        try await stream.finish()
    }
}

/// The result of one ``HQClient/fetch(url:on:to:)``.
public struct FetchResult: Sendable {
    /// Bytes received.
    public var bytes: Int
    /// SHA-256 of the bytes, hex.
    public var sha256: String
    /// Seconds from the start of the request (connection included when it was made for it) to FIN.
    public var seconds: Double
    /// Seconds to the first body byte.
    public var secondsToFirstByte: Double?
    /// Throughput in Mbit/s.
    public var megabitsPerSecond: Double { seconds > 0 ? Double(bytes) * 8 / seconds / 1e6 : 0 }
}

/// A URL of the form `https://[IPv6]:PORT/path` split into its parts.
public struct HQURL: Sendable, Hashable {
    /// The host (an IPv6 literal without brackets, or a name).
    public var host: String
    /// The UDP port.
    public var port: Int
    /// The path, starting with `/`.
    public var path: String

    /// Parses a URL; IPv4 hosts are refused because STOQ is IPv6-only.
    public init(_ text: String) throws(NodeError) {
        guard let components = URLComponents(string: text), let host = components.host, !host.isEmpty else {
            throw NodeError(.invalidArgument, "'\(text)' is not a URL like https://[::1]:4433/file")
        }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        if bare.split(separator: ".").count == 4 && bare.allSatisfy({ $0.isNumber || $0 == "." }) {
            throw NodeError(.invalidArgument, "\(bare) is an IPv4 address; STOQ is IPv6-only")
        }
        self.host = bare
        self.port = components.port ?? 443
        let path = components.percentEncodedPath
        self.path = path.isEmpty ? "/" : path
        if let query = components.percentEncodedQuery { self.path += "?" + query }
    }
}

/// A client for ``HQInterop``.
public enum HQClient {
    /// Requests `url.path` on `connection` and streams the body to `output` (or discards it),
    /// hashing as it goes.
    public static func fetch(
        path: String,
        on connection: Connection,
        to output: FileHandle?,
        startedAt start: ContinuousClock.Instant = .now
    ) async throws -> FetchResult {
        let stream = try await connection.openBidirectionalStream(priority: .bulk)
        try await stream.write(Array("GET \(path)\r\n".utf8))
        try await stream.finish()
        var hasher = SHA256()
        var total = 0
        var firstByte: Duration?
        for try await piece in stream {
            if firstByte == nil { firstByte = .now - start }
            total += piece.readableBytes
            piece.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            if let output { try piece.withUnsafeReadableBytes { try output.write(contentsOf: $0) } }
        }
        let elapsed = ContinuousClock.now - start
        return FetchResult(
            bytes: total,
            sha256: Hex.encode(hasher.finalize()),
            seconds: elapsed.seconds,
            secondsToFirstByte: firstByte?.seconds
        )
    }
}
