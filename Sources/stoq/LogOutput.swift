import ArgumentParser
import Foundation
import Logging

/// How a long-running command (`stoq node`, `stoq ca serve`) writes its log on stderr:
/// `text` (swift-log's line format) or `json` (one JSON object per line, for log shippers).
enum LogFormat: String, CaseIterable {
    case text, json

    /// Parses `--log-format` / the config key `logFormat`.
    static func parse(_ text: String?) throws -> LogFormat {
        guard let text else { return .text }
        guard let format = LogFormat(rawValue: text.lowercased()) else {
            throw ValidationError("--log-format takes text or json, not '\(text)'")
        }
        return format
    }

    /// Routes every logger of the process to stderr in this format, at `level`, through
    /// ``Console`` (so a log line prints above a progress bar, never through it). The first call
    /// wins; later calls do nothing.
    func bootstrap(level: Logger.Level) {
        guard LogBootstrap.claim() else { return }
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in ConsoleLogHandler(label: label, style: .text, level: level) }
        case .json:
            LoggingSystem.bootstrap { label in ConsoleLogHandler(label: label, style: .json, level: level) }
        }
    }
}

/// Makes sure the logging system is bootstrapped once (swift-log traps on a second bootstrap).
enum LogBootstrap {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var done = false

    /// True the first time (the caller bootstraps); false afterwards.
    static func claim() -> Bool {
        lock.withLock {
            if done { return false }
            done = true
            return true
        }
    }

    /// The logging of a command a person runs (`put`, `get`, `block …`): warnings and errors
    /// only (errors only with `--quiet`), as `stoq: warning: <message> (key=value, …)` through
    /// ``Console``, so they print above the progress bar and in the form notes have. The
    /// library's info lines are what the notes already say, and are not repeated.
    static func forCommand(quiet: Bool) {
        guard claim() else { return }
        LoggingSystem.bootstrap { label in ConsoleLogHandler(label: label, style: .note, level: quiet ? .error : .warning) }
    }
}

/// The process's `LogHandler`: every log line goes to stderr through ``Console`` (serialised, and
/// above a progress bar, never through it), in one of three styles.
struct ConsoleLogHandler: LogHandler {
    /// How a line looks.
    enum Style: Sendable {
        /// swift-log's `StreamLogHandler` format:
        /// `2026-12-07T13:40:00+0000 info stoq.node : key=value [STOQNode] message`.
        case text
        /// One JSON object per line, for log shippers:
        /// `{"time":"2026-12-07T13:40:00.123Z","level":"info","logger":"stoq.node","message":"…",…}`,
        /// each metadata key a string field (keys sorted, so lines diff cleanly).
        case json
        /// A command's line in the form of its notes: `stoq: warning: <message> (key=value, …)`.
        case note
    }

    let label: String
    let style: Style
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, style: Style, level: Logger.Level) {
        self.label = label
        self.style = style
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        Console.shared.raw(line(event: event, metadata: merged))
    }

    private func line(event: LogEvent, metadata: Logger.Metadata) -> String {
        let pairs = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        switch style {
        case .text:
            let pretty = pairs.isEmpty ? "" : " " + pairs.joined(separator: " ")
            return "\(Self.localTimestamp()) \(event.level) \(label) :\(pretty) [\(event.source)] \(event.message)"
        case .json:
            return Self.jsonLine(time: Date(), level: event.level, logger: label, message: "\(event.message)", metadata: metadata, source: event.source)
        case .note:
            let details = pairs.isEmpty ? "" : " (" + pairs.joined(separator: ", ") + ")"
            let level: String
            switch event.level {
            case .critical, .error: level = "error"
            case .warning: level = "warning"
            default: level = "\(event.level)"
            }
            return "stoq: \(level): \(event.message)\(details)"
        }
    }

    /// One JSON log line, without the newline: an object with `time` (RFC 3339, UTC,
    /// milliseconds), `level`, `logger`, `message`, `source`, then the metadata.
    static func jsonLine(
        time: Date, level: Logger.Level, logger: String, message: String, metadata: Logger.Metadata, source: String
    ) -> String {
        var object: [String: String] = [:]
        for (key, value) in metadata { object[key] = "\(value)" }
        object["time"] = isoTimestamp(time)
        object["level"] = level.rawValue
        object["logger"] = logger
        object["message"] = message
        object["source"] = source
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    private static func isoTimestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    private static func localTimestamp() -> String {
        var buffer = [Int8](repeating: 0, count: 255)
        var timestamp = time(nil)
        var local = tm()
        localtime_r(&timestamp, &local)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
