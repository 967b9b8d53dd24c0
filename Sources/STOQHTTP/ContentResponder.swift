import Crypto
import Foundation
import Logging
import STOQContent
import STOQEdge
import Synchronization

/// Serves a node's content over HTTP: `/stoq/<content-id>[/<path>]` and `/name/<name>[/<path>]`
/// (docs/PROTOCOL.md, "HTTP front door").
///
/// - GET and HEAD; anything else is 405 with `Allow`.
/// - A file answers with its media type (manifest, then extension), its length, a strong ETag (its
///   content id; under `/name/` also the name's version), `Accept-Ranges: bytes`, and
///   `Cache-Control` immutable under `/stoq/` or the record's remaining TTL under `/name/`.
/// - `If-None-Match` → 304; one `Range` → 206 (honoured under `If-Range` only for the current
///   ETag); an unsatisfiable one → 416; several → 200 with the whole file.
/// - A directory serves its `index.html`, else an HTML listing.
/// - Content this node holds no read key for, or whose key table its key does not open, is 403.
/// - The body streams: the head leaves once the first chunk it needs is verified; a range fetches
///   only the chunks it covers; concurrent misses of one chunk fetch it once (``ChunkCoalescer``).
public struct ContentResponder: HTTPResponder {
    /// Where content comes from.
    public let source: any HTTPContentSource
    /// Where each finished exchange is logged (nil: nowhere).
    public let accessLog: AccessLog?
    private let coalescer: ChunkCoalescer
    private let manifests = ManifestCache()
    private let absences: AbsenceBox
    private let now: @Sendable () -> UInt64
    private let logger: Logger

    /// Creates a responder.
    /// - Parameters:
    ///   - source: chunks, keys and names (``NodeContentSource`` on a node).
    ///   - accessLog: one line per exchange, or nil.
    ///   - absences: how long an id or name nobody holds is answered 404 without asking again.
    ///   - now: nanoseconds on a monotonic clock (tests inject one).
    ///   - logger: where upstream failures are explained (an HTTP client gets a short message).
    public init(source: any HTTPContentSource, accessLog: AccessLog? = nil, absences: AbsenceCache = AbsenceCache(),
                now: (@Sendable () -> UInt64)? = nil, logger: Logger = Logger(label: "stoq.http")) {
        self.logger = logger
        self.source = source
        self.accessLog = accessLog
        self.coalescer = ChunkCoalescer(source: source)
        self.absences = AbsenceBox(absences)
        let origin = ContinuousClock.now
        self.now = now ?? {
            let elapsed = ContinuousClock.now - origin
            return UInt64(max(0, elapsed.components.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
        }
    }

    /// Fetches started and joined so far (request coalescing, for tests and status).
    public var coalescing: (started: Int, joined: Int) {
        get async { (await coalescer.started, await coalescer.joined) }
    }

    public func finished(_ record: HTTPExchangeRecord) {
        accessLog?.write(record)
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        let tally = CacheTally()
        var info = HTTPLogInfo()
        info.cacheOutcome = { tally.outcome }
        guard request.method == "GET" || request.method == "HEAD" else {
            var response = Self.problem(HTTPProblem(405, "only GET and HEAD are served here"), info: info)
            response.headers.append(("allow", "GET, HEAD"))
            return response
        }
        let route: ContentRoute
        switch ContentRoute.parse(target: request.target) {
        case .success(let r): route = r
        case .failure(let problem): return Self.problem(problem, info: info)
        }
        do {
            return try await serve(route, request: request, tally: tally, info: &info)
        } catch let problem as HTTPProblem {
            return Self.problem(problem, info: info)
        } catch {
            // The detail (peer addresses, transport errors) goes to the node's log, not to the public.
            logger.warning("an HTTP request failed upstream", metadata: ["target": "\(ContentRoute.printable(request.target))", "error": "\(error)"])
            return Self.problem(HTTPProblem(502, "this node could not get the content from its upstream right now; try again later"), info: info)
        }
    }

    /// How often a watcher asks for the name again besides the node's change notices (an edge's
    /// subscription to its upstream lapses with the record's TTL; asking renews it).
    static let watchRecheck: Duration = .seconds(30)

    public func watch(name: String) -> AsyncStream<String>? {
        guard (try? NameRecord.validate(name: name)) != nil else { return nil }
        let source = self.source
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let task = Task {
            // Wake-ups: a change notice for this name, or the periodic recheck.
            let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let changes = await source.nameChanges()
            let notices = Task {
                guard let changes else { return }
                for await changed in changes where changed == name { wake.yield() }
            }
            let ticks = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.watchRecheck)
                    wake.yield()
                }
            }
            defer {
                notices.cancel()
                ticks.cancel()
                wake.finish()
            }
            var lastSent = (try? await source.resolve(name: name))?.version ?? 0
            for await _ in wakeups {
                guard let binding = try? await source.resolve(name: name), binding.version > lastSent else { continue }
                lastSent = binding.version
                continuation.yield(Self.watchMessage(binding))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// The JSON text a watcher receives for a new version.
    public static func watchMessage(_ binding: NameBinding) -> String {
        "{\"name\":\(AccessLog.jsonString(binding.name)),\"version\":\(binding.version),\"content\":\"\(binding.content)\"}"
    }

    // MARK: - Serving

    private func serve(_ route: ContentRoute, request: HTTPRequest, tally: CacheTally, info: inout HTTPLogInfo) async throws -> HTTPResponse {
        let root: ContentID
        var version: UInt64?
        let cacheControl: String
        let base: String
        switch route {
        case .content(let id, let idText, _, _):
            guard !absences.isAbsent("id:" + id.manifest.hex, now: now()) else { throw Self.unknown(id) }
            root = id
            info.contentID = idText
            cacheControl = CachePolicy.immutable
            base = "/stoq/" + ContentRoute.percentEncode(idText) + "/"
        case .name(let name, _, _):
            let key = "name:" + name
            guard !absences.isAbsent(key, now: now()) else { throw HTTPProblem(404, "no one publishes the name '\(ContentRoute.printable(name))'") }
            let binding: NameBinding?
            do {
                binding = try await source.resolve(name: name)
            } catch let problem as HTTPProblem {
                throw problem
            } catch {
                logger.warning("an HTTP request could not resolve a name", metadata: ["name": "\(ContentRoute.printable(name))", "error": "\(error)"])
                throw HTTPProblem(502, "the name '\(ContentRoute.printable(name))' could not be resolved now; try again later")
            }
            guard let binding else {
                absences.handleAbsent(key, now: now())
                throw HTTPProblem(404, "no one publishes the name '\(ContentRoute.printable(name))'")
            }
            root = binding.content
            version = binding.version
            info.contentID = binding.content.description
            cacheControl = CachePolicy.name(maxAge: binding.maxAge)
            base = "/name/" + ContentRoute.percentEncode(name) + "/"
        }
        // The root manifest first: a content no one holds is 404, one held but private is 403.
        let rootManifest = try await manifest(root, tally: tally, isRoot: true)
        guard let readKey = await source.readKey(for: root) else {
            throw HTTPProblem(403, "this content is private: its publisher has not made it public, so this node cannot decrypt it")
        }
        // Walk the path through directory manifests (relative links inside the content followed).
        var manifest = rootManifest
        var current = root
        var fileName: String?
        var walked: [String] = []
        var path = route.path
        var index = 0
        var hops = 0
        while index < path.count {
            let segment = path[index]
            guard case .directory(let directory) = manifest else {
                throw HTTPProblem(404, "'\(ContentRoute.printable(walked.joined(separator: "/")))' is a file; it has no entry '\(ContentRoute.printable(segment))'")
            }
            guard walked.count < 256 else { throw HTTPProblem(404, "the path is deeper than 256 directories") }
            guard let entry = directory.entries.first(where: { $0.name == segment }) else {
                throw HTTPProblem(404, "no entry '\(ContentRoute.printable(segment))' in this directory")
            }
            if let target = entry.target {
                hops += 1
                guard hops <= LinkResolution.maximumHops else {
                    throw HTTPProblem(404, "more than \(LinkResolution.maximumHops) symbolic links on the way to this path (a loop?)")
                }
                guard let resolved = LinkResolution.resolve(target, in: walked) else {
                    throw HTTPProblem(404, "'\(ContentRoute.printable(segment))' is a symbolic link that points outside this content; it is not followed")
                }
                // Walk again from the root along the link's target, then the rest of the path.
                path = resolved + path[(index + 1)...]
                guard path.count <= 512 else { throw HTTPProblem(404, "the path through symbolic links is too long") }
                index = 0
                walked = []
                manifest = rootManifest
                current = root
                fileName = nil
                continue
            }
            walked.append(segment)
            index += 1
            current = entry.id
            fileName = entry.kind == .file ? segment : nil
            manifest = try await self.manifest(entry.id, tally: tally, isRoot: false)
            switch (entry.kind, manifest) {
            case (.file, .file), (.directory, .directory): break
            default: throw HTTPProblem(502, "entry '\(ContentRoute.printable(segment))' names a manifest of the other kind (forged?)")
            }
        }
        switch manifest {
        case .file(let file):
            return try await serveFile(file, id: current, fileName: fileName, version: version, cacheControl: cacheControl,
                                       readKey: readKey, request: request, tally: tally, info: info)
        case .directory(let directory):
            if let index = directory.entries.first(where: { $0.name == "index.html" && $0.kind == .file }) {
                guard case .file(let file) = try await self.manifest(index.id, tally: tally, isRoot: false) else {
                    throw HTTPProblem(502, "index.html names a directory manifest (forged?)")
                }
                return try await serveFile(file, id: index.id, fileName: "index.html", version: version, cacheControl: cacheControl,
                                           readKey: readKey, request: request, tally: tally, info: info)
            }
            let path = base + walked.map(ContentRoute.percentEncode).map { $0 + "/" }.joined()
            let title = route.path.isEmpty ? String(base.dropLast()) : "/" + walked.joined(separator: "/") + "/"
            let html = Array(DirectoryListing.html(title: title, base: path, isRoot: walked.isEmpty, entries: directory.entries).utf8)
            let etag = CachePolicy.etag(file: current, version: version).dropLast() + "-index\""
            var headers: [(name: String, value: String)] = [("etag", String(etag)), ("cache-control", cacheControl)]
            if Conditional.noneMatchHits(request.header("if-none-match"), etag: String(etag)) {
                return HTTPResponse(status: 304, headers: headers, logInfo: info)
            }
            headers += [("content-type", "text/html; charset=utf-8"), ("content-length", "\(html.count)")]
            return HTTPResponse(status: 200, headers: headers, body: request.method == "HEAD" ? .empty : .bytes(html), logInfo: info)
        }
    }

    private func serveFile(
        _ file: FileManifest, id: ContentID, fileName: String?, version: UInt64?, cacheControl: String, readKey: SymmetricKey,
        request: HTTPRequest, tally: CacheTally, info: HTTPLogInfo
    ) async throws -> HTTPResponse {
        let etag = CachePolicy.etag(file: id, version: version)
        var headers: [(name: String, value: String)] = [("etag", etag), ("cache-control", cacheControl), ("accept-ranges", "bytes")]
        let notModified = Conditional.noneMatchHits(request.header("if-none-match"), etag: etag)
        if notModified || request.method == "HEAD" {
            // No body will be read: check the key opens the file anyway, so HEAD and 304 answer 403
            // exactly when GET would.
            try await streamer(file, first: 0, last: 0, readKey: readKey, tally: tally).checkAccess()
        }
        if notModified {
            return HTTPResponse(status: 304, headers: headers, logInfo: info)
        }
        headers.append(("content-type", MediaType.of(manifestType: file.contentType, fileName: fileName)))
        headers.append(("x-content-type-options", "nosniff"))
        let size = file.totalSize
        var decision = RangeDecision.evaluate(request.header("range"), size: size)
        if decision != .whole, !Conditional.ifRangeAllows(request.header("if-range"), etag: etag) { decision = .whole }
        let status: Int
        let first: UInt64, last: UInt64
        switch decision {
        case .unsatisfiable:
            var response = Self.problem(HTTPProblem(416, "the range starts beyond the end of the file (\(size) bytes)"), info: info)
            response.headers.append(("content-range", "bytes */\(size)"))
            return response
        case .whole:
            status = 200
            (first, last) = (0, size &- 1)
        case .partial(let f, let l):
            status = 206
            (first, last) = (f, l)
            headers.append(("content-range", "bytes \(f)-\(l)/\(size)"))
        }
        let length = size == 0 ? 0 : last - first + 1
        headers.append(("content-length", "\(length)"))
        guard request.method == "GET", length > 0 else {
            return HTTPResponse(status: status, headers: headers, logInfo: info)
        }
        let streamer = streamer(file, first: first, last: last, readKey: readKey, tally: tally)
        try await streamer.prime()
        return HTTPResponse(status: status, headers: headers, body: HTTPBody { try await streamer.next() }, logInfo: info)
    }

    /// A streamer of `first...last` of `file`, fetching through the coalescer.
    private func streamer(_ file: FileManifest, first: UInt64, last: UInt64, readKey: SymmetricKey, tally: CacheTally) -> FileStreamer {
        let coalescer = self.coalescer
        return FileStreamer(root: file, first: first, last: last, readKey: readKey, tally: tally, manifests: manifests) { chunkID, reader in
            guard let chunk = try await coalescer.chunk(chunkID, reader: reader) else {
                throw HTTPProblem(502, "chunk \(chunkID.short) of this file is on neither this node nor its upstream")
            }
            return chunk
        }
    }

    /// A manifest, fetched (store, then upstream) and checked against its id.
    private func manifest(_ id: ContentID, tally: CacheTally, isRoot: Bool) async throws -> AnyManifest {
        if let known = manifests.manifest(id.manifest) {
            tally.note(fromCache: true)
            return known
        }
        guard let chunk = try await coalescer.chunk(id.manifest) else {
            guard isRoot else { throw HTTPProblem(502, "part of this content (\(id)) is on neither this node nor its upstream") }
            absences.handleAbsent("id:" + id.manifest.hex, now: now())
            throw Self.unknown(id)
        }
        tally.note(fromCache: chunk.fromCache)
        let manifest = try ManifestCheck.any(chunk.bytes, id: id.manifest)
        manifests.keep(id.manifest, manifest, size: chunk.bytes.count)
        return manifest
    }

    static func unknown(_ id: ContentID) -> HTTPProblem {
        HTTPProblem(404, "neither this node nor its upstream holds \(id); check the id (`stoq put` printed it)")
    }

    /// A short `text/plain` answer.
    static func problem(_ problem: HTTPProblem, info: HTTPLogInfo) -> HTTPResponse {
        let body = Array((problem.message + "\n").utf8)
        return HTTPResponse(status: problem.status, headers: [
            ("content-type", "text/plain; charset=utf-8"), ("content-length", "\(body.count)"), ("cache-control", "no-store"),
        ], body: .bytes(body), logInfo: info)
    }
}

/// The responder's ``AbsenceCache``, shared by its copies.
final class AbsenceBox: Sendable {
    private let cache: Mutex<AbsenceCache>
    init(_ cache: AbsenceCache) { self.cache = Mutex(cache) }
    func isAbsent(_ key: String, now: UInt64) -> Bool { cache.withLock { $0.isAbsent(key, now: now) } }
    func handleAbsent(_ key: String, now: UInt64) { cache.withLock { $0.handleAbsent(key, now: now) } }
}
