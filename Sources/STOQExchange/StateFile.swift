import Foundation
import Logging

/// A node's small state files (its edge registry, name subscribers, an edge's name records): JSON,
/// written atomically (a temporary file, flushed, then renamed over the old one) and read with a
/// size bound. A missing file is an empty state; an unreadable or corrupt one is logged and
/// treated as empty — never fatal, so a node always starts.
public enum StateFile {
    /// The largest state file read.
    public static let maximumBytes = 64 << 20

    /// Reads `path` as JSON of `type`.
    /// - Returns: nil when the file is missing, too large, or does not decode (logged).
    public static func load<T: Decodable>(_ type: T.Type, path: String, logger: Logger) -> T? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
        guard size <= maximumBytes else {
            logger.warning("ignoring a state file larger than \(maximumBytes) bytes; starting with an empty state", metadata: ["file": "\(path)", "bytes": "\(size)"])
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            logger.warning("cannot read a state file; starting with an empty state", metadata: ["file": "\(path)"])
            return nil
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            logger.warning("ignoring a corrupt state file; starting with an empty state", metadata: ["file": "\(path)", "error": "\(describe(error))"])
            return nil
        }
    }

    /// Why a state file did not decode, in words (never a `DecodingError` dump).
    static func describe(_ error: any Error) -> String {
        func at(_ context: DecodingError.Context) -> String {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "at the top level" : "at '\(path)'"
        }
        switch error as? DecodingError {
        case .dataCorrupted(let c)?: return c.codingPath.isEmpty ? "not valid JSON" : "an invalid value \(at(c))"
        case .typeMismatch(_, let c)?: return "a value of the wrong type \(at(c))"
        case .keyNotFound(let key, let c)?: return "the key '\(key.stringValue)' is missing \(at(c))"
        case .valueNotFound(_, let c)?: return "a missing value \(at(c))"
        default: return "\(error)"
        }
    }

    /// Writes `value` as JSON to `path` atomically (creating its directory).
    /// - Throws: ``NodeError`` `.unavailable` when the file cannot be written.
    public static func save<T: Encodable>(_ value: T, path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(value)
            let temporary = path + ".tmp"
            guard FileManager.default.createFile(atPath: temporary, contents: data) else {
                throw NodeError(.unavailable, "cannot write \(temporary)")
            }
            if let handle = FileHandle(forWritingAtPath: temporary) {
                try? handle.synchronize()
                try? handle.close()
            }
            guard rename(temporary, path) == 0 else {
                throw NodeError(.unavailable, "cannot rename \(temporary) to \(path): errno \(errno)")
            }
        } catch let error as NodeError {
            throw error
        } catch {
            throw NodeError(.unavailable, "cannot write the state file \(path): \(error)")
        }
    }
}
