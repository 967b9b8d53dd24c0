import Foundation
import Synchronization

/// The front door's access log: one line per exchange, in the combined log format (with the
/// duration, cache outcome, protocol and content id appended as `key=value`) or as JSON lines.
///
/// Lines are formatted by the caller and written in order by one background queue, so a slow disk
/// or a full pipe never holds a protocol server's event loop; at most ``maximumBacklog`` lines
/// wait, further ones are dropped and counted (``droppedLines``). Each line is one `write(2)` on a
/// descriptor opened with `O_APPEND`, so `logrotate`'s copy-truncate keeps working.
public final class AccessLog: Sendable {
    /// A line format.
    public enum Format: String, Sendable, CaseIterable {
        /// `client - - [time] "METHOD path PROTO" status bytes "referer" "agent" duration=… cache=… proto=… content=…`
        case combined
        /// One JSON object per line.
        case json
    }

    /// The format written.
    public let format: Format
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private let queue = DispatchQueue(label: "stoq.http.access-log")
    private let backlog = Mutex((pending: 0, dropped: 0))
    /// Most lines waiting to be written.
    public static let maximumBacklog = 16384

    /// Opens the log.
    /// - Parameters:
    ///   - path: a file (created, appended to), or `-` for standard error.
    ///   - format: the line format.
    /// - Throws: ``HTTPFrontDoorError`` with a readable message when the file cannot be opened.
    public init(path: String, format: Format) throws {
        self.format = format
        if path == "-" {
            descriptor = 2
            ownsDescriptor = false
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw HTTPFrontDoorError("cannot open the access log \(path): \(String(cString: strerror(errno))); give a writable file or '-' for standard error")
            }
            descriptor = fd
            ownsDescriptor = true
        }
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Writes one exchange's line, stamped with the time its request arrived.
    public func write(_ record: HTTPExchangeRecord) {
        let arrived = Date(timeIntervalSinceNow: -max(0, min(record.duration, 1e9)))
        let line = Array((Self.line(record, format: format, at: arrived) + "\n").utf8)
        let accepted = backlog.withLock { state -> Bool in
            guard state.pending < Self.maximumBacklog else {
                state.dropped += 1
                return false
            }
            state.pending += 1
            return true
        }
        guard accepted else { return }
        queue.async {
            self.writeNow(line)
            self.backlog.withLock { $0.pending -= 1 }
        }
    }

    /// Waits until every line handed over so far is written (tests; before the process exits).
    public func flush() { queue.sync {} }

    /// Lines dropped because ``maximumBacklog`` lines were already waiting.
    public var droppedLines: Int { backlog.withLock { $0.dropped } }

    private func writeNow(_ line: [UInt8]) {
        var offset = 0
        while offset < line.count {
            let n = line[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }  // a full disk or closed pipe must not fail the exchange
            offset += n
        }
    }

    /// The line for `record` (without the newline), stamped `time`.
    public static func line(_ record: HTTPExchangeRecord, format: Format, at time: Date) -> String {
        let request = record.request
        let cache = record.logInfo.finalCache
        let content = record.logInfo.contentID
        let duration = String(format: "%.6f", max(0, record.duration))
        switch format {
        case .combined:
            let version: String
            switch request.wireProtocol {
            case .http1: version = "HTTP/1.1"
            case .http2: version = "HTTP/2.0"
            case .http3: version = "HTTP/3"
            }
            let bytes = record.bodyBytes > 0 ? "\(record.bodyBytes)" : "-"
            return "\(quoteless(request.client)) - - [\(clfTime(time))] \"\(escaped(request.method)) \(escaped(request.target)) \(version)\" "
                + "\(record.status) \(bytes) \"\(escaped(request.header("referer") ?? "-"))\" \"\(escaped(request.header("user-agent") ?? "-"))\" "
                + "duration=\(duration) cache=\(cache ?? "-") proto=\(request.wireProtocol.rawValue) content=\(quoteless(content ?? "-"))"
        case .json:
            var fields = [
                "\"time\":\(jsonString(isoTime(time)))", "\"client\":\(jsonString(request.client))",
                "\"method\":\(jsonString(request.method))", "\"path\":\(jsonString(request.target))",
                "\"status\":\(record.status)", "\"bytes\":\(record.bodyBytes)", "\"duration\":\(duration)",
                "\"cache\":\(cache.map(jsonString) ?? "null")", "\"protocol\":\(jsonString(request.wireProtocol.rawValue))",
                "\"content\":\(content.map(jsonString) ?? "null")",
            ]
            if let referer = request.header("referer") { fields.append("\"referer\":\(jsonString(referer))") }
            if let agent = request.header("user-agent") { fields.append("\"user_agent\":\(jsonString(agent))") }
            return "{" + fields.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal of `text`.
    public static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// A peer-controlled text inside a quoted log field: `"`, `\` and control bytes as `\xHH`.
    static func escaped(_ text: String) -> String {
        var out: [UInt8] = []
        for byte in text.utf8.prefix(4096) {
            if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                out += Array(("\\x" + String(byte, radix: 16).leftPadded(to: 2)).utf8)
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// An unquoted field: spaces and controls replaced so the line still splits on spaces.
    static func quoteless(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(256).map { $0.value <= 0x20 || $0.value == 0x7F || $0 == "\"" ? "_" : $0 }))
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private static func utc(_ time: Date) -> (tm, Int) {
        let seconds = time.timeIntervalSince1970
        var t = time_t(seconds.rounded(.down))
        var parts = tm()
        gmtime_r(&t, &parts)
        let millis = Int(((seconds - seconds.rounded(.down)) * 1000).rounded(.down))
        return (parts, min(999, max(0, millis)))
    }

    private static func pad(_ n: Int32, _ width: Int = 2) -> String { String(n).leftPadded(to: width) }

    /// `07/Dec/2026:03:19:03 +0000`.
    static func clfTime(_ time: Date) -> String {
        let (t, _) = utc(time)
        return "\(pad(t.tm_mday))/\(months[Int(t.tm_mon)])/\(t.tm_year + 1900):\(pad(t.tm_hour)):\(pad(t.tm_min)):\(pad(t.tm_sec)) +0000"
    }

    /// `2026-12-07T03:19:03.123Z`.
    static func isoTime(_ time: Date) -> String {
        let (t, ms) = utc(time)
        return "\(t.tm_year + 1900)-\(pad(t.tm_mon + 1))-\(pad(t.tm_mday))T\(pad(t.tm_hour)):\(pad(t.tm_min)):\(pad(t.tm_sec)).\(String(ms).leftPadded(to: 3))Z"
    }
}
