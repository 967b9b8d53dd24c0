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
            LoggingSystem.bootstrap { label in
                var handler = ConsoleTextLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}

/// A `LogHandler` that writes one JSON object per line to stderr:
/// `{"time":"2026-12-07T13:40:00.123Z","level":"info","logger":"stoq.node","message":"…",…}`,
/// with each metadata key as a string field (keys sorted, so lines diff cleanly).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line = Self.line(
            time: Date(), level: event.level, logger: label, message: "\(event.message)", metadata: merged,
            source: event.source)
        JSONLogHandler.writer.write(line)
    }

    /// One log line, without the newline's terminator: a JSON object with `time` (RFC 3339, UTC,
    /// milliseconds), `level`, `logger`, `message`, `source`, then the metadata.
    static func line(
        time: Date, level: Logger.Level, logger: String, message: String, metadata: Logger.Metadata, source: String
    ) -> String {
        var object: [String: String] = [:]
        for (key, value) in metadata { object[key] = "\(value)" }
        object["time"] = timestamp(time)
        object["level"] = level.rawValue
        object["logger"] = logger
        object["message"] = message
        object["source"] = source
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    private static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// One writer for the process, so lines from concurrent loggers never interleave.
    static let writer = LineWriter()

    /// Writes whole lines to stderr through ``Console`` (which serialises them and keeps the
    /// progress bar below them).
    struct LineWriter: Sendable {
        func write(_ line: String) { Console.shared.raw(line) }
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
        LoggingSystem.bootstrap { label in
            var handler = ConsoleNoteLogHandler(label: label)
            handler.logLevel = quiet ? .error : .warning
            return handler
        }
    }
}

/// swift-log's `StreamLogHandler` text format
/// (`2026-12-07T13:40:00+0000 info stoq.node : key=value [STOQNode] message`), written
/// through ``Console`` instead of straight to stderr.
struct ConsoleTextLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let pretty = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        Console.shared.raw("\(Self.timestamp()) \(event.level) \(label) :\(pretty) [\(event.source)] \(event.message)")
    }

    private static func timestamp() -> String {
        var buffer = [Int8](repeating: 0, count: 255)
        var timestamp = time(nil)
        var local = tm()
        localtime_r(&timestamp, &local)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// A command's log line in the form of its notes: `stoq: warning: <message> (key=value, …)`,
/// through ``Console``.
struct ConsoleNoteLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .warning
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let details = merged.isEmpty ? "" : " (" + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + ")"
        let level: String
        switch event.level {
        case .critical, .error: level = "error"
        case .warning: level = "warning"
        default: level = "\(event.level)"
        }
        Console.shared.raw("stoq: \(level): \(event.message)\(details)")
    }
}
