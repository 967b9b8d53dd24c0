import ArgumentParser
import Foundation
import STOQContent

/// How a command shows its progress on stderr.
enum ProgressMode: Sendable, Equatable {
    /// A live bar redrawn in place (a terminal, or `--progress`).
    case bar
    /// A plain line every 2 s and one at the end (stderr is not a terminal).
    case lines
    /// Nothing (`--quiet`).
    case off
}

/// `--progress` and `--quiet`, shared by every command that moves bytes (`put`, `get`,
/// `block put`, `block get`).
struct ProgressOptions: ParsableArguments {
    @Flag(help: "Draw the live progress bar on stderr even when it is not a terminal (without a terminal a plain progress line is printed every 2 s).")
    var progress = false
    @Flag(help: "Print no progress and no notes on stderr (errors still print).")
    var quiet = false

    /// The mode these flags ask for on this process's stderr. `--quiet` also silences notes
    /// (``Console/quiet``) from here on.
    func mode() -> ProgressMode {
        if quiet {
            Console.shared.quiet = true
            return .off
        }
        if progress {
            Console.shared.drawsStatus = true
            return .bar
        }
        return Console.shared.stderrIsTerminal ? .bar : .lines
    }
}

/// The one progress renderer of `stoq`: `put`, `get` (local, network, tickets and names),
/// `put --node` and `block put`/`block get` all report through it.
///
/// Before bytes flow it shows what is happening (``phase(_:)``: "connecting to 3 peers…",
/// "chunking…") with the time spent so far, so the screen is never blank; then a bar:
///
///     get [#########...........]  45.2 %  135.6/300.0 MiB  24.1 MiB/s  ETA 7s  3 sources
///
/// The rate is the bytes of the last few seconds (``RateMeter``), so it follows changes without
/// jumping at every chunk, and the ETA is what is left at that rate. The bar is drawn through
/// ``Console/status(_:)``, so notes and log lines print above it. Without a terminal a plain line
/// is printed every 2 s and once at the end; with `--quiet`, nothing.
///
/// A timer redraws it every 200 ms even when no byte arrives (the rate then falls, the elapsed
/// time of a phase grows), on a queue of its own, so a caller that blocks its thread (the local
/// `put` chunks synchronously) still gets a live bar.
///
/// `@unchecked Sendable`: all state is behind `lock`.
final class ProgressView: @unchecked Sendable {
    /// What the bar says it does: "get", "put", "upload", "block put".
    let verb: String
    let mode: ProgressMode
    private let console: Console
    private let lock = NSLock()
    private let started = ContinuousClock.now
    private var phaseText: String?
    private var phaseStarted = ContinuousClock.now
    private var done: Int64 = 0
    private var total: Int64?
    private var sources: Int?
    private var meter = RateMeter()
    private var timer: DispatchSourceTimer?
    private var lastLine = ContinuousClock.now
    private var finished = false
    /// Whether bytes have been reported (the bar replaces the phase text).
    private var flowing = false
    /// Without a terminal: whether the current phase was printed (once, when it lasts 1 s).
    private var phasePrinted = false

    /// Interval of the plain progress lines without a terminal.
    static let lineInterval: Duration = .seconds(2)
    /// Redraw interval of the bar.
    static let barInterval: Duration = .milliseconds(200)

    /// Starts a progress display; nothing is drawn until ``phase(_:)`` or ``update(done:total:sources:)``.
    init(_ verb: String, mode: ProgressMode, console: Console = .shared) {
        self.verb = verb
        self.mode = mode
        self.console = console
        guard mode != .off else { return }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "stoq.progress"))
        let interval = mode == .bar ? 200 : 250
        timer.schedule(deadline: .now() + .milliseconds(interval), repeating: .milliseconds(interval))
        timer.setEventHandler { [weak self] in self?.tick() }
        timer.resume()
        self.timer = timer
    }

    deinit { timer?.cancel() }

    /// Says what happens before bytes flow ("connecting to 3 peers…"); shown at once, with the
    /// seconds spent on it.
    func phase(_ text: String) {
        lock.withLock {
            guard !finished else { return }
            phaseText = text
            phaseStarted = .now
            phasePrinted = false
            flowing = false
            drawLocked(force: true)
        }
    }

    /// Reports bytes done of `total` (nil: not known yet) and, for network transfers, the number
    /// of live sources.
    func update(done: Int64, total: Int64?, sources: Int? = nil) {
        lock.withLock {
            guard !finished else { return }
            self.done = done
            if let total { self.total = total }
            if let sources { self.sources = sources }
            // The meter samples on the timer's ticks (a chunk can arrive thousands of times a
            // second); the first update starts it.
            if !flowing {
                flowing = true
                meter = RateMeter()
                meter.record(bytes: done, at: ContinuousClock.now - started)
            }
            // The bar is redrawn by the timer; the first update is drawn at once.
            if phaseText != nil {
                phaseText = nil
                drawLocked(force: true)
            }
        }
    }

    /// Sets the number of live sources without new bytes (a source went down or came back).
    func sources(_ count: Int) { lock.withLock { sources = count } }

    /// Ends the display: the final state stays on screen (a terminal) or is printed once (no
    /// terminal). Safe to call more than once.
    func finish() {
        lock.withLock {
            guard !finished else { return }
            finished = true
            timer?.cancel()
            timer = nil
            switch mode {
            case .off: return
            case .bar:
                guard flowing || phaseText != nil else { return }
                console.status(lineLocked(final: true))
                console.clearStatus(keep: true)
            case .lines:
                guard flowing else { return }
                console.raw(lineLocked(final: true))
            }
        }
    }

    /// Removes the bar without a final line (the command failed; the error follows).
    func abandon() {
        lock.withLock {
            guard !finished else { return }
            finished = true
            timer?.cancel()
            timer = nil
            if mode == .bar { console.clearStatus(keep: false) }
        }
    }

    private func tick() {
        lock.withLock {
            guard !finished else { return }
            let now = ContinuousClock.now
            if flowing { meter.record(bytes: done, at: now - started) }
            drawLocked(force: false)
        }
    }

    private func drawLocked(force: Bool) {
        switch mode {
        case .off: return
        case .bar:
            console.status(lineLocked(final: false))
        case .lines:
            // A phase that lasts a second is printed once; bytes every 2 s.
            let now = ContinuousClock.now
            if !flowing, let phaseText, !phasePrinted, now - phaseStarted >= .seconds(1) {
                console.raw("stoq: \(verb): \(phaseText)")
                phasePrinted = true
                lastLine = now
            } else if flowing, now - lastLine >= Self.lineInterval {
                console.raw(lineLocked(final: false))
                lastLine = now
            }
        }
    }

    private func lineLocked(final: Bool) -> String {
        let elapsed = ContinuousClock.now - started
        if !flowing, let phaseText {
            let spent = secondsOf(ContinuousClock.now - phaseStarted)
            return "\(verb): \(phaseText)" + (spent >= 0.5 ? String(format: " %.0fs", spent.rounded(.down)) : "")
        }
        let rate = final ? (secondsOf(elapsed) > 0 ? Double(done - meter.firstBytes) / max(secondsOf(elapsed - meter.firstAt), 1e-3) : nil) : meter.rate
        let text = ProgressView.render(
            verb: verb, done: done, total: total, rate: rate, elapsed: final ? elapsed : nil, sources: sources,
            bar: mode == .bar)
        guard mode == .bar else { return "stoq: " + text }
        return Self.fit(text, columns: console.columns())
    }

    /// The progress text (pure; the journeys test reads this format):
    /// `get [#########...........]  45.2 %  135.6/300.0 MiB  24.1 MiB/s  ETA 7s  3 sources`.
    /// - Parameters:
    ///   - rate: bytes per second (nil: not measured yet).
    ///   - elapsed: set on the final line, which says `in 5.3s` instead of an ETA.
    static func render(verb: String, done: Int64, total: Int64?, rate: Double?, elapsed: Duration?, sources: Int?, bar: Bool) -> String {
        var parts = [String]()
        if let total, total > 0 {
            let fraction = min(1, max(0, Double(done) / Double(total)))
            if bar {
                let width = 20
                let filled = Int((Double(width) * fraction).rounded(.down))
                parts.append("[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]")
            }
            parts.append(String(format: "%5.1f %%", fraction * 100))
            parts.append(sizePair(done, total))
        } else {
            parts.append(humanSize(done))
        }
        if let rate, rate.isFinite, rate >= 0 {
            parts.append(humanSize(Int64(rate)) + "/s")
        } else {
            parts.append("-- MiB/s")
        }
        if let elapsed {
            parts.append("in " + duration(secondsOf(elapsed)))
        } else if let total, total > 0, let rate, rate > 0 {
            parts.append("ETA " + duration(Double(max(0, total - done)) / rate))
        } else {
            parts.append("ETA --")
        }
        if let sources { parts.append("\(sources) source" + (sources == 1 ? "" : "s")) }
        return verb + " " + parts.joined(separator: "  ")
    }

    /// `135.6/300.0 MiB`: both in the unit of the total.
    static func sizePair(_ done: Int64, _ total: Int64) -> String {
        let (scale, unit) = unitOf(total)
        if scale == 1 { return "\(done)/\(total) B" }
        return String(format: "%.1f/%.1f %@", Double(done) / scale, Double(total) / scale, unit)
    }

    /// `24.1 MiB`.
    static func humanSize(_ n: Int64) -> String {
        let (scale, unit) = unitOf(n)
        return scale == 1 ? "\(n) B" : String(format: "%.1f %@", Double(n) / scale, unit)
    }

    private static func unitOf(_ n: Int64) -> (Double, String) {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var scale = 1.0, u = 0
        while Double(n) >= scale * 1024, u < units.count - 1 { scale *= 1024; u += 1 }
        return (scale, units[u])
    }

    /// `7s`, `2m05s`, `1h02m`.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--" }
        if seconds < 10 { return String(format: "%.1fs", max(0, seconds)) }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        if s < 100 * 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
        return ">99h"
    }

    /// Cuts a line to the terminal's width (a wrapped line could not be redrawn in place).
    static func fit(_ line: String, columns: Int?) -> String {
        guard let columns, columns > 10, line.count >= columns else { return line }
        return String(line.prefix(columns - 1))
    }
}

/// The transfer rate over the last few seconds: bytes done now minus bytes done at the oldest
/// sample in the window, over the time between them. Sans-IO (times are passed in).
struct RateMeter: Sendable {
    /// How far back the rate looks.
    var window: Duration = .seconds(3)
    private var samples: [(at: Duration, bytes: Int64)] = []
    /// The first sample (for the average over the whole transfer).
    private(set) var firstAt: Duration = .zero
    private(set) var firstBytes: Int64 = 0

    /// Records that `bytes` were done at `at` (time since the start).
    mutating func record(bytes: Int64, at: Duration) {
        if samples.isEmpty { firstAt = at; firstBytes = bytes }
        samples.append((at, bytes))
        // Keep one sample older than the window, so the rate always spans the whole window.
        while samples.count > 2, samples[1].at <= at - window { samples.removeFirst() }
    }

    /// Bytes per second over the window (nil until 300 ms of samples exist).
    var rate: Double? {
        guard let first = samples.first, let last = samples.last else { return nil }
        let span = secondsOf(last.at - first.at)
        guard span >= 0.3 else { return nil }
        return Double(last.bytes - first.bytes) / span
    }
}

/// A duration in seconds (this file's own, so it needs no module's extension).
private func secondsOf(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

/// A byte count shared with a progress callback. `@unchecked Sendable`: state behind `lock`.
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count: Int64 = 0
    /// The count now.
    var value: Int64 { lock.withLock { count } }
    /// Adds `n`.
    func add(_ n: Int64) { lock.withLock { count += n } }
}

/// The bytes of the regular files at or under `path` (links are not followed): the total a
/// `put` of it chunks, for the progress bar. Unreadable entries count nothing.
func plainBytes(under path: String) -> Int64 {
    var st = stat()
    guard lstat(path, &st) == 0 else { return 0 }
    switch st.st_mode & S_IFMT {
    case S_IFREG:
        return Int64(st.st_size)
    case S_IFDIR:
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return 0 }
        return names.reduce(Int64(0)) { $0 + plainBytes(under: path + "/" + $1) }
    default:
        return 0
    }
}

/// Restores `id` to `path` with a progress bar of the bytes written (`get`, and the writing
/// step after a network fetch).
func restoreShowingProgress(_ reader: ContentReader, _ id: ContentID, to path: String, mode: ProgressMode, verb: String) throws -> RestoreReport {
    let view = ProgressView(verb, mode: mode)
    defer { view.abandon() }
    let total = Int64(clamping: (try? reader.plainSize(id)) ?? 0)
    let written = ByteCounter()
    var reader = reader
    reader.onBytes = { n in
        written.add(Int64(n))
        view.update(done: written.value, total: total > 0 ? total : nil)
    }
    view.update(done: 0, total: total > 0 ? total : nil)
    let report = try reader.restore(id, to: path)
    view.finish()
    return report
}
