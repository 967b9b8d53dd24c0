import STOQContent
import STOQEdge

/// An HTTP answer that is not content: a status and a short message for a person.
public struct HTTPProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The status code (400, 403, 404, 405, 416, 502, …).
    public var status: Int
    /// One line saying what happened and what to do next (sent as the body, `text/plain`).
    public var message: String

    /// Creates a problem.
    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status): \(message)" }
}

/// What a request target names, after percent-decoding: content by id or by published name, and
/// the path inside it. The path can never leave the content: segments are directory entry names,
/// `.` and empty segments are dropped, and `..` (raw or encoded) is refused.
public enum ContentRoute: Sendable, Equatable {
    /// `/stoq/<content-id>[/<path>]`; `idText` is the id as the URL wrote it (for the access log).
    case content(id: ContentID, idText: String, path: [String], trailingSlash: Bool)
    /// `/name/<published-name>[/<path>]`.
    case name(String, path: [String], trailingSlash: Bool)

    /// The path segments inside the content.
    public var path: [String] {
        switch self {
        case .content(_, _, let path, _), .name(_, let path, _): return path
        }
    }

    /// Whether the target ended with `/` after the id or name.
    public var trailingSlash: Bool {
        switch self {
        case .content(_, _, _, let slash), .name(_, _, let slash): return slash
        }
    }

    /// The longest request target read (bytes).
    public static let maximumTargetLength = 8192

    /// Parses a request target as sent (`/stoq/abc/dir/a%20b.html?x=1`).
    /// - Returns: the route, or a 400 (malformed) or 404 (no such URL space) problem.
    public static func parse(target: String) -> Result<ContentRoute, HTTPProblem> {
        guard target.utf8.count <= maximumTargetLength else {
            return .failure(HTTPProblem(400, "the request target is longer than \(maximumTargetLength) bytes"))
        }
        var raw = Substring(target)
        // Absolute form (`https://host/path`), as a proxy-style HTTP/1.1 client may send it.
        if raw.hasPrefix("http://") || raw.hasPrefix("https://") {
            let afterScheme = raw[raw.index(raw.firstIndex(of: ":")!, offsetBy: 3)...]
            raw = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        if let cut = raw.firstIndex(where: { $0 == "?" || $0 == "#" }) { raw = raw[..<cut] }
        guard raw.hasPrefix("/") else { return .failure(HTTPProblem(400, "the request target must start with '/'")) }
        let rawSegments = raw.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard rawSegments.count >= 2, let space = rawSegments.first else {
            return .failure(HTTPProblem(404, "nothing here: ask for /stoq/<content-id>[/path] or /name/<name>[/path]"))
        }
        guard let key = percentDecode(rawSegments[1]) else {
            return .failure(HTTPProblem(400, "the URL has a malformed percent-encoding (%XX with two hex digits) or is not UTF-8"))
        }
        let trailingSlash = raw.hasSuffix("/") && rawSegments.count > 2
        var path: [String] = []
        for segment in rawSegments.dropFirst(2) {
            guard let name = percentDecode(segment) else {
                return .failure(HTTPProblem(400, "the URL has a malformed percent-encoding (%XX with two hex digits) or is not UTF-8"))
            }
            if name.isEmpty || name == "." { continue }
            guard name != ".." else { return .failure(HTTPProblem(400, "'..' is not allowed in a path: a path stays inside its content")) }
            guard !name.utf8.contains(0x2F), !name.utf8.contains(0) else {
                return .failure(HTTPProblem(400, "a path segment decodes to a name with '/' or NUL, which no directory entry has"))
            }
            guard name.utf8.count <= 255 else { return .failure(HTTPProblem(404, "no entry has a name longer than 255 bytes")) }
            path.append(name)
        }
        switch space {
        case "stoq":
            guard let id = ContentID(key) else {
                return .failure(HTTPProblem(400, "'\(printable(key))' is not a content id: give the id `stoq put` printed (stoq:<52 base32 characters>, or 64 hex digits)"))
            }
            return .success(.content(id: id, idText: key, path: path, trailingSlash: trailingSlash))
        case "name":
            do { try NameRecord.validate(name: key) } catch {
                return .failure(HTTPProblem(400, "'\(printable(key))' is not a valid name: \(error.reason)"))
            }
            return .success(.name(key, path: path, trailingSlash: trailingSlash))
        default:
            return .failure(HTTPProblem(404, "nothing here: ask for /stoq/<content-id>[/path] or /name/<name>[/path]"))
        }
    }

    /// Decodes `%XX` escapes; nil for a bad escape or bytes that are not UTF-8.
    public static func percentDecode<S: StringProtocol>(_ text: S) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == 0x25 else { out.append(byte); continue }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            out.append(high << 4 | low)
        }
        return String(validating: out, as: UTF8.self)
    }

    /// Encodes a name for use as one path segment (unreserved characters kept, the rest `%XX`).
    public static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// At most 80 printable characters of `text`, for messages.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(80).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
    }
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

/// What a `Range` header asks of a representation of a known size.
public enum RangeDecision: Sendable, Equatable {
    /// No usable single range: send the whole representation (200).
    case whole
    /// One satisfiable range, first and last byte offsets inclusive (206).
    case partial(first: UInt64, last: UInt64)
    /// A single range that starts beyond the end (416 with `Content-Range: bytes */size`).
    case unsatisfiable

    /// Evaluates a `Range` header (RFC 9110 §14) against a representation of `size` bytes.
    ///
    /// A missing header, another unit, bad syntax or several ranges give ``whole`` (a server may
    /// ignore Range); so does any range on an empty representation.
    public static func evaluate(_ header: String?, size: UInt64) -> RangeDecision {
        guard let header else { return .whole }
        let text = header.trimmingSpaces
        guard text.utf8.count <= 512, text.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = text.dropFirst(6).trimmingSpaces
        guard !spec.contains(","), size > 0, let dash = spec.firstIndex(of: "-") else { return .whole }
        let firstText = spec[..<dash].trimmingSpaces, lastText = spec[spec.index(after: dash)...].trimmingSpaces
        if firstText.isEmpty {
            // Suffix range: the last N bytes.
            guard let n = number(lastText) else { return .whole }
            guard n > 0 else { return .unsatisfiable }
            return .partial(first: size - min(n, size), last: size - 1)
        }
        guard let first = number(firstText) else { return .whole }
        var last = size - 1
        if !lastText.isEmpty {
            guard let l = number(lastText), l >= first else { return .whole }
            last = min(l, size - 1)
        }
        guard first < size else { return .unsatisfiable }
        return .partial(first: first, last: last)
    }

    /// Digits only; a number too large for 64 bits saturates (it is beyond any file anyway).
    private static func number(_ text: String) -> UInt64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return UInt64(text) ?? .max
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        let u = Array(utf8)
        var lo = 0, hi = u.count
        while lo < hi, u[lo] == 32 || u[lo] == 9 { lo += 1 }
        while hi > lo, u[hi - 1] == 32 || u[hi - 1] == 9 { hi -= 1 }
        return String(decoding: u[lo..<hi], as: UTF8.self)
    }
}

/// Conditional requests against a strong entity tag (RFC 9110 §13).
public enum Conditional {
    /// Whether `If-None-Match` matches `etag` (weak comparison, `*` matches anything): answer 304.
    public static func noneMatchHits(_ header: String?, etag: String) -> Bool {
        guard let header else { return false }
        let opaque = etag.hasPrefix("W/") ? String(etag.dropFirst(2)) : etag
        for part in header.split(separator: ",") {
            var tag = part.trimmingSpaces
            if tag == "*" { return true }
            if tag.hasPrefix("W/") { tag.removeFirst(2) }
            if tag == opaque { return true }
        }
        return false
    }

    /// Whether a `Range` may be honoured under `If-Range`: absent, or a strong tag equal to `etag`.
    /// A date never matches (this server sends no Last-Modified), so the whole file is sent.
    public static func ifRangeAllows(_ header: String?, etag: String) -> Bool {
        guard let header else { return true }
        let tag = header.trimmingSpaces
        return !tag.hasPrefix("W/") && !etag.hasPrefix("W/") && tag == etag
    }
}

/// Media types: the manifest's, then the file name's extension.
public enum MediaType {
    static let byExtension: [String: String] = [
        "html": "text/html", "htm": "text/html", "css": "text/css", "js": "text/javascript", "mjs": "text/javascript",
        "json": "application/json", "map": "application/json", "txt": "text/plain", "md": "text/markdown", "csv": "text/csv",
        "xml": "application/xml", "svg": "image/svg+xml", "wasm": "application/wasm", "ico": "image/x-icon",
        "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "avif": "image/avif",
        "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska", "ogv": "video/ogg",
        "mp3": "audio/mpeg", "m4a": "audio/mp4", "ogg": "audio/ogg", "oga": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav",
        "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf", "pdf": "application/pdf",
        "zip": "application/zip", "gz": "application/gzip", "tgz": "application/gzip", "tar": "application/x-tar",
        "zst": "application/zstd", "xz": "application/x-xz", "deb": "application/vnd.debian.binary-package",
        "m3u8": "application/vnd.apple.mpegurl", "mpd": "application/dash+xml", "vtt": "text/vtt",
    ]

    /// The `Content-Type` of a file: the manifest's type when it is specific; when it is empty or
    /// one of the guesses a publisher falls back on (`application/octet-stream`, `text/plain`),
    /// the type of a known extension of `fileName` wins. Text types get `charset=utf-8`.
    public static func of(manifestType: String, fileName: String?) -> String {
        var type = manifestType.trimmingSpaces
        let generic = type.isEmpty || type == "application/octet-stream" || type == "text/plain"
        if generic, let fileName, let dot = fileName.lastIndex(of: "."),
           let byName = byExtension[fileName[fileName.index(after: dot)...].lowercased()] {
            type = byName
        }
        if type.isEmpty { type = "application/octet-stream" }
        if !type.contains(";"), type.hasPrefix("text/") || type == "application/json" || type == "image/svg+xml" || type == "application/xml" {
            type += "; charset=utf-8"
        }
        return type
    }
}

/// How long a response may be cached, and its entity tag.
public enum CachePolicy {
    /// `Cache-Control` under `/stoq/`: content ids never change what they name.
    public static let immutable = "public, max-age=31536000, immutable"

    /// `Cache-Control` under `/name/`: the record's remaining TTL.
    public static func name(maxAge: UInt32) -> String { "public, max-age=\(maxAge)" }

    /// The strong entity tag of a file (its content id), with the name's version under `/name/`.
    public static func etag(file: ContentID, version: UInt64?) -> String {
        let id = String(file.description.dropFirst(5))  // base32 without "stoq:"
        return version.map { "\"\(id)-v\($0)\"" } ?? "\"\(id)\""
    }
}

/// The HTML listing of a directory that has no `index.html`.
public enum DirectoryListing {
    /// Most entries listed (a directory manifest may hold 65,536); the page says how many were left out.
    public static let maximumEntries = 10_000

    /// Renders `entries` as an HTML page; every link is absolute, under `base` (which ends in `/`).
    /// - Parameters:
    ///   - title: the path shown (escaped here).
    ///   - base: the URL path of the directory, percent-encoded, ending in `/`.
    ///   - isRoot: whether the directory is the content's root (no parent link).
    public static func html(title: String, base: String, isRoot: Bool, entries: [DirectoryManifest.Entry]) -> String {
        var out = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>\(escape(title))</title></head>\n<body>\n<h1>\(escape(title))</h1>\n<ul>\n"
        if !isRoot {
            var parent = base.dropLast()
            if let slash = parent.lastIndex(of: "/") { parent = parent[...slash] }
            out += "<li><a href=\"\(escape(String(parent)))\">../</a></li>\n"
        }
        for entry in entries.prefix(maximumEntries) {
            let suffix = entry.kind == .directory ? "/" : ""
            let href = base + ContentRoute.percentEncode(entry.name) + suffix
            let size = entry.kind == .file ? " (\(entry.size) bytes)" : entry.isLink ? " (link)" : ""
            out += "<li><a href=\"\(escape(href))\">\(escape(entry.name + suffix))</a>\(size)</li>\n"
        }
        out += "</ul>\n"
        if entries.count > maximumEntries {
            out += "<p>\(entries.count - maximumEntries) more entries are not listed; ask for them by name.</p>\n"
        }
        out += "</body></html>\n"
        return out
    }

    /// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// Symbolic links inside a content, as the front door follows them: relative targets only,
/// resolved against the link's directory, never above the content's root.
public enum LinkResolution {
    /// Links followed for one request at most.
    public static let maximumHops = 8

    /// The path from the content's root that `target` names, for a link in the directory `directory`
    /// (its path from the root); nil for an absolute target or one that climbs above the root.
    public static func resolve(_ target: String, in directory: [String]) -> [String]? {
        guard !target.hasPrefix("/") else { return nil }
        var path = directory
        for part in target.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                guard !path.isEmpty else { return nil }
                path.removeLast()
            default: path.append(String(part))
            }
        }
        return path
    }
}

/// Ids and names nobody held when last asked, remembered for a few seconds (sans-IO: the caller
/// passes the time), so that a client asking for unknown URLs in a loop costs the upstream one
/// question per key and interval, not one per request.
public struct AbsenceCache: Sendable {
    /// How long an absence is remembered, in nanoseconds.
    public let lifetime: UInt64
    /// Most keys remembered (the oldest go first).
    public let capacity: Int
    private var expiries: [String: UInt64] = [:]
    private var order: [String] = []
    private var head = 0

    /// Creates an empty cache.
    public init(lifetime: Duration = .seconds(5), capacity: Int = 4096) {
        let c = lifetime.components
        self.lifetime = UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds / 1_000_000_000))
        self.capacity = max(1, capacity)
    }

    /// Whether `key` was absent less than ``lifetime`` before `now`.
    public func isAbsent(_ key: String, now: UInt64) -> Bool {
        guard let expiry = expiries[key] else { return false }
        return now < expiry
    }

    /// Nobody held `key` at `now`.
    public mutating func handleAbsent(_ key: String, now: UInt64) {
        if expiries.updateValue(now &+ lifetime, forKey: key) == nil { order.append(key) }
        while order.count - head > capacity {
            expiries[order[head]] = nil
            head += 1
        }
        if head > capacity {
            order.removeFirst(head)
            head = 0
        }
    }

    /// `key` exists after all (it was found): forget its absence.
    public mutating func handlePresent(_ key: String) {
        expiries[key] = nil
    }
}
