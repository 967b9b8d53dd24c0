import ArgumentParser
import Foundation
import Logging
import STOQ
import STOQErrors
import Nexus

/// The one way `stoq` ends: parse, run, and on failure print one line
/// `stoq: error: <what happened>; <what to do>` on stderr (usage errors add the usage lines)
/// and exit with the documented code (docs/OPERATIONS.md, "Exit codes and output"):
///
/// - 0: success (also `--help`, `--version`);
/// - 1: the operation failed;
/// - 2: usage error (bad flag, argument or configuration);
/// - 130: interrupted (SIGINT).
extension Stoq {
    /// Replaces ArgumentParser's `main()` (which prints `Error: …` and exits 64 on usage errors).
    static func main() async {
        let command: ParsableCommand
        do {
            command = try parseAsRoot(LegacySpellings.rewrite(Array(CommandLine.arguments.dropFirst())))
        } catch {
            finish(error, command: nil)
        }
        // A one-shot command logs warnings and errors only, on stderr: without this, swift-log's
        // default handler writes info lines to stdout, which carries results only. Long-running
        // commands (`stoq node`, `stoq ca serve`) set up their own log (--log-level, --log-format).
        if !(command is LogsOnItsOwn) { LogFormat.text.bootstrap(level: .warning) }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var plain = command
                try plain.run()
            }
        } catch {
            finish(error, command: type(of: command))
        }
        Foundation.exit(0)
    }

    /// Prints the report of `error` and exits with its code.
    static func finish(_ error: Error, command: ParsableCommand.Type?) -> Never {
        let report = ErrorReport.make(error, command: command)
        if let out = report.stdout { Console.shared.result(out) }
        for line in report.stderr { Console.shared.raw(line) }
        Foundation.exit(report.code)
    }
}

/// A command that bootstraps the process's logging itself (from --log-level / --log-format).
protocol LogsOnItsOwn {}
extension NodeCommand: LogsOnItsOwn {}
extension CACommand.Serve: LogsOnItsOwn {}

/// What to print for an error and how to exit; built by ``make(_:command:)``.
struct ErrorReport {
    /// Exit code: the operation failed.
    static let failure: Int32 = 1
    /// Exit code: a bad flag, argument or configuration.
    static let usage: Int32 = 2
    /// Exit code: interrupted by SIGINT.
    static let interrupted: Int32 = 130

    /// Text for stdout (help and version only).
    var stdout: String?
    /// Lines for stderr.
    var stderr: [String]
    /// The exit code.
    var code: Int32

    /// The report of `error`, thrown while parsing (`command` nil) or by `command`'s `run()`.
    static func make(_ error: Error, command: ParsableCommand.Type?) -> ErrorReport {
        // --help, --version and ExitCode thrown by commands that printed their own message.
        if let exit = error as? ExitCode {
            return ErrorReport(stdout: nil, stderr: [], code: exit.rawValue == 64 ? usage : exit.rawValue)
        }
        if error is CleanExit {
            let text = Stoq.fullMessage(for: error)
            return ErrorReport(stdout: text.isEmpty ? nil : text, stderr: [], code: 0)
        }
        if let validation = error as? ValidationError, let command {
            // Thrown from run(): a usage error of that command.
            let path = commandPath(command)
            var lines = [line(validation.message, hint: "see 'stoq \(path) --help'")]
            let usageText = Stoq.usageString(for: command)
            if !usageText.isEmpty { lines.append(usageText.hasPrefix("Usage:") ? usageText : "Usage: " + usageText) }
            return ErrorReport(stdout: nil, stderr: lines, code: usage)
        }
        // ArgumentParser's own errors (parse errors, and `--help`, which the parsed help command
        // throws from its run()) are rendered by ArgumentParser, which knows the command.
        if command == nil || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // A parse or validate() error: ArgumentParser knows which command it was.
            let exitCode = Stoq.exitCode(for: error)
            if exitCode == .success {
                let text = Stoq.fullMessage(for: error)
                return ErrorReport(stdout: text.isEmpty ? nil : text, stderr: [], code: 0)
            }
            return usageReport(Stoq.fullMessage(for: error), code: exitCode == .validationFailure ? usage : exitCode.rawValue)
        }
        let hint = command.map { "see 'stoq \(commandPath($0)) --help'" } ?? "see 'stoq --help'"
        let (what, todo, code) = describe(error)
        return ErrorReport(stdout: nil, stderr: [line(what, hint: todo ?? hint)], code: code)
    }

    /// `stoq: error: <what>; <what to do>`, keeping a hint `what` already carries.
    static func line(_ what: String, hint: String) -> String {
        var text = what.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("stoq: error: ") { text.removeFirst("stoq: error: ".count) }
        if let first = text.first, first.isUppercase, text.dropFirst().first?.isLowercase == true {
            text = first.lowercased() + text.dropFirst()
        }
        if text.hasSuffix(".") { text.removeLast() }
        if text.contains("; ") { return "stoq: error: " + text }
        return "stoq: error: \(text); \(hint)"
    }

    /// Rewrites ArgumentParser's `Error: …` / `Usage: …` / `See '…'` text into our form.
    static func usageReport(_ full: String, code: Int32) -> ErrorReport {
        var lines = full.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while lines.last?.trimmingCharacters(in: .whitespaces).isEmpty == true { lines.removeLast() }
        var what = "the command line is not valid"
        var hint = "see 'stoq --help'"
        var rest: [String] = []
        for l in lines {
            if l.hasPrefix("Error: ") {
                what = String(l.dropFirst("Error: ".count))
            } else if let r = l.range(of: "See '"), let end = l[r.upperBound...].firstIndex(of: "'") {
                hint = "see '" + l[r.upperBound..<end] + "'"
            } else {
                rest.append(l)
            }
        }
        return ErrorReport(stdout: nil, stderr: [line(what, hint: hint)] + rest, code: code)
    }

    /// The path of `command` below `stoq` (`name get`), for hints.
    static func commandPath(_ command: ParsableCommand.Type) -> String {
        func walk(_ node: ParsableCommand.Type, _ prefix: [String]) -> [String]? {
            if node == command { return prefix }
            for sub in node.configuration.subcommands {
                if let found = walk(sub, prefix + [sub._commandName]) { return found }
            }
            return nil
        }
        return walk(Stoq.self, [])?.joined(separator: " ") ?? command._commandName
    }

    /// What happened, what to do (nil: the generic hint) and the exit code, for a non-usage error.
    static func describe(_ error: Error) -> (String, String?, Int32) {
        switch error {
        case let e as STOQError:
            return (e.reason, transportHint(e), failure)
        case let e as CLIError:
            return (e.description, nil, failure)
        case let e as ShareFailure:
            return (e.message, nil, failure)
        case let e as DecodingError:
            return (decodingText(e), "check the file against docs/CONFIG.md", usage)
        case let e as EncodingError:
            return ("could not encode a value: \(peopleText(e))", nil, failure)
        case let e as any PeopleReadableError:
            return (e.peopleReason, nil, failure)
        case let e where String(describing: type(of: e)) == "ConfigFileError":
            // A wrong node configuration file (STOQNode's reader): a usage error.
            return (String(describing: e), "check the file against docs/CONFIG.md", usage)
        case is CancellationError:
            return ("interrupted", "run the command again", interrupted)
        default:
            return (peopleText(error), nil, failure)
        }
    }

    /// What to do after a transport failure.
    static func transportHint(_ e: STOQError) -> String? {
        switch e.code {
        case .handshakeFailed where e.reason.contains("timed out") || e.reason.contains("no answer"):
            return "check that a node runs at that address (`stoq status --node ADDR`) and that UDP to it is not blocked"
        case .handshakeFailed:
            return "check that --cert, --key and --ca are of this network (`stoq certs show FILE`) and that the certificates have not expired"
        case .alpnMismatch:
            return "the node speaks another protocol; check the address and port"
        case .idleTimeout, .unreachable:
            return "check that a node runs at that address (`stoq status --node ADDR`) and that UDP to it is not blocked"
        case .ipv6Only:
            return "use an IPv6 address such as [::1]:4433"
        case .connectionClosed, .streamReset, .stopSending:
            return "the node closed the connection; its log says why; try again"
        default:
            return nil
        }
    }

    /// A `DecodingError` as one line naming the key and the expected type.
    static func decodingText(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let keys = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the top level" : "key '" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "'"
        }
        func typeName(_ t: Any.Type) -> String {
            switch "\(t)" {
            case "String": return "a string"
            case "Int", "Int64", "Int32", "UInt64", "UInt32", "UInt16", "UInt8", "UInt", "Int16", "Int8": return "an integer"
            case "Double", "Float": return "a number"
            case "Bool": return "true or false"
            case let s where s.hasPrefix("Array") || s.hasPrefix("["): return "a list"
            case let s where s.hasPrefix("Dictionary"): return "an object"
            default: return "an object"
            }
        }
        switch e {
        case .typeMismatch(let t, let c):
            return "\(path(c)) must be \(typeName(t))"
        case .valueNotFound(let t, let c):
            return "\(path(c)) is null but must be \(typeName(t))"
        case .keyNotFound(let key, let c):
            let parent = c.codingPath.isEmpty ? "" : " in \(path(c))"
            return "missing key '\(key.stringValue)'\(parent)"
        case .dataCorrupted(let c):
            let detail = c.debugDescription.isEmpty ? "" : ": \(c.debugDescription)"
            return "\(path(c)) is not valid\(detail)".replacingOccurrences(of: "The given data was not valid JSON.", with: "not valid JSON")
        @unknown default:
            return "the document could not be read"
        }
    }

    /// An error's text for people, for use inside a longer message: never a Swift type name or a
    /// value dump.
    static func peopleText(_ error: Error) -> String {
        switch error {
        case let e as STOQError: return e.reason
        case let e as CLIError: return e.description
        case let e as ShareFailure: return e.message
        case let e as DecodingError: return decodingText(e)
        case let e as any PeopleReadableError: return e.peopleReason
        case let e as ValidationError: return e.message
        default: break
        }
        if let e = error as? CocoaError, let path = e.filePath ?? (e.userInfo[NSFilePathErrorKey] as? String) {
            switch e.code {
            case .fileReadNoSuchFile, .fileNoSuchFile: return "\(path) does not exist"
            case .fileReadNoPermission, .fileWriteNoPermission: return "no permission to use \(path)"
            case .fileWriteOutOfSpace: return "no space left to write \(path)"
            case .fileReadCorruptFile, .fileReadInapplicableStringEncoding: return "\(path) cannot be read as expected (damaged, or not the kind of file asked for)"
            default: return "cannot use \(path)"
            }
        }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain {
            var text = ns.localizedDescription
            if let path = ns.userInfo[NSFilePathErrorKey] as? String, !text.contains(path) { text += " (\(path))" }
            if let under = ns.userInfo[NSUnderlyingErrorKey] as? NSError, under.domain == NSPOSIXErrorDomain,
               let posix = strerror(Int32(under.code)) { text += ": " + String(cString: posix) }
            return text
        }
        return scrub(String(describing: error))
    }

    /// Removes Swift type prefixes (`STOQError.`, `NexusError.code: `) from a description.
    static func scrub(_ text: String) -> String {
        var t = text
        // `SomethingError.code: reason` → `reason`
        if let r = t.range(of: #"^[A-Z][A-Za-z]*Error\.[A-Za-z]+: "#, options: .regularExpression) { t.removeSubrange(r) }
        t = t.replacingOccurrences(of: #"\b[A-Z][A-Za-z]*Error\.([A-Za-z]+)"#, with: "$1", options: .regularExpression)
        t = t.replacingOccurrences(of: "Optional(", with: "(")
        return t
    }
}

/// An error that carries a reason written for people (the `CodedError` family).
protocol PeopleReadableError: Error {
    /// What happened (and where possible what to do), without type names.
    var peopleReason: String { get }
}

extension CodedError: PeopleReadableError {
    var peopleReason: String { reason }
}

extension UploadRefused: PeopleReadableError {
    var peopleReason: String { ErrorReport.scrub(description) }
}

extension SwarmError: PeopleReadableError {
    var peopleReason: String { reason }
}
