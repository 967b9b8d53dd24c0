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

    /// Routes every logger of the process to stderr in this format, at `level`. Call once.
    func bootstrap(level: Logger.Level) {
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
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

    /// Writes whole lines to stderr under a lock. `@unchecked Sendable`: state behind `lock`.
    final class LineWriter: @unchecked Sendable {
        private let lock = NSLock()
        func write(_ line: String) {
            lock.withLock { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
    }
}
