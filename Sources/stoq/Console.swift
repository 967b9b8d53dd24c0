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
    private var _quiet = false
    private var _drawsStatus: Bool = isatty(2) != 0

    /// `--quiet`: notes are not printed (errors, results and raw lines still are).
    var quiet: Bool {
        get { lock.withLock { _quiet } }
        set { lock.withLock { _quiet = newValue } }
    }

    /// Whether the status line is drawn in place: on a terminal, or forced (`--progress`).
    var drawsStatus: Bool {
        get { lock.withLock { _drawsStatus } }
        set { lock.withLock { _drawsStatus = newValue } }
    }

    /// The terminal's width in columns (nil: stderr is not a terminal, or it does not say).
    func columns() -> Int? {
        var size = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }

    /// Prints a result on stdout (a line is added).
    func result(_ text: String) {
        lock.withLock {
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
    }

    /// Prints a note on stderr, prefixed `stoq: `, above the status line if one is shown.
    func note(_ text: String) {
        guard !quiet else { return }
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
            if statusLine != nil, _drawsStatus { out += "\r\u{1B}[2K" }
            out += text.hasSuffix("\n") ? text : text + "\n"
            if let line = statusLine, _drawsStatus { out += line }
            FileHandle.standardError.write(Data(out.utf8))
        }
    }

    /// Shows (or replaces) the live status line on stderr. On a terminal it is redrawn in place;
    /// elsewhere the caller should print periodic lines with `raw` instead.
    func status(_ line: String) {
        lock.withLock {
            statusLine = line
            guard _drawsStatus else { return }
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
        }
    }

    /// Removes the status line; with `keep`, leaves its last state on screen (ends the line).
    func clearStatus(keep: Bool = false) {
        lock.withLock {
            guard statusLine != nil else { return }
            statusLine = nil
            guard _drawsStatus else { return }
            FileHandle.standardError.write(Data((keep ? "\n" : "\r\u{1B}[2K").utf8))
        }
    }
}
