import Foundation

/// The one place `stoq` writes to the terminal, so that the output contract holds everywhere:
///
/// - **stdout carries results only** (`result`): content ids, JSON, listings — what a script
///   captures with `ID=$(stoq put …)`.
/// - **stderr carries everything else**: notes (`note`), warnings, errors (`error`) and the live
///   status line (`status`, the progress bar).
///
/// A note written while a status line is shown first clears that line, then prints the note, then
/// draws the status line again below it, so log lines and notes never break the bar.
///
/// `@unchecked Sendable`: all state is behind `lock`.
final class Console: @unchecked Sendable {
    /// The process's console.
    static let shared = Console()

    private let lock = NSLock()
    /// The live status line now on screen (without "\r"), or nil.
    private var statusLine: String?
    /// Whether stderr is a terminal (the status line is redrawn in place only there).
    let stderrIsTerminal: Bool = isatty(2) != 0
    /// Whether stdout is a terminal.
    let stdoutIsTerminal: Bool = isatty(1) != 0

    /// Prints a result on stdout (a line is added).
    func result(_ text: String) {
        lock.withLock {
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
    }

    /// Prints a note on stderr, prefixed `stoq: `, above the status line if one is shown.
    func note(_ text: String) {
        raw("stoq: " + text)
    }

    /// Prints an error on stderr in the one form users see: `stoq: error: <what>; <what to do>`.
    func error(_ text: String) {
        raw("stoq: error: " + text)
    }

    /// Prints a line on stderr as it is (a log line, a table on stderr), above the status line.
    func raw(_ text: String) {
        lock.withLock {
            var out = ""
            if statusLine != nil, stderrIsTerminal { out += "\r\u{1B}[2K" }
            out += text.hasSuffix("\n") ? text : text + "\n"
            if let line = statusLine, stderrIsTerminal { out += line }
            FileHandle.standardError.write(Data(out.utf8))
        }
    }

    /// Shows (or replaces) the live status line on stderr. On a terminal it is redrawn in place;
    /// elsewhere the caller should print periodic lines with `raw` instead.
    func status(_ line: String) {
        lock.withLock {
            statusLine = line
            guard stderrIsTerminal else { return }
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
        }
    }

    /// Removes the status line; with `keep`, leaves its last state on screen (ends the line).
    func clearStatus(keep: Bool = false) {
        lock.withLock {
            guard statusLine != nil else { return }
            statusLine = nil
            guard stderrIsTerminal else { return }
            FileHandle.standardError.write(Data((keep ? "\n" : "\r\u{1B}[2K").utf8))
        }
    }
}
