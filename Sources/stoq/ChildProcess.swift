import Foundation

/// A child process whose stdout lines are collected, for the demo and tests that run nodes.
///
/// `@unchecked Sendable`: mutable state (`lines`, waiters) is guarded by `lock`.
final class ChildProcess: @unchecked Sendable {
    let name: String
    let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial = Data()
    private var waiters: [(prefix: String, continuation: CheckedContinuation<String?, Never>)] = []
    private var ended = false

    /// Starts `executable` with `arguments`; stderr goes to `logPath`.
    init(name: String, executable: String, arguments: [String], logPath: String) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            // At end of file, stop watching the descriptor: a handler left armed on a dead pipe
            // crashed libdispatch once the next child process was started.
            if data.isEmpty { handle.readabilityHandler = nil }
            self?.received(data)
        }
        process.terminationHandler = { [weak self] _ in self?.received(Data()) }
        try process.run()
    }

    private func received(_ data: Data) {
        lock.lock()
        var ready: [(CheckedContinuation<String?, Never>, String?)] = []
        if data.isEmpty {
            ended = true
            if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)); partial = Data() }
        } else {
            partial.append(data)
            while let nl = partial.firstIndex(of: 0x0A) {
                lines.append(String(decoding: partial[partial.startIndex..<nl], as: UTF8.self))
                partial = Data(partial[partial.index(after: nl)...])
            }
        }
        waiters.removeAll { waiter in
            if let line = lines.first(where: { $0.hasPrefix(waiter.prefix) }) { ready.append((waiter.continuation, line)); return true }
            if ended { ready.append((waiter.continuation, nil)); return true }
            return false
        }
        lock.unlock()
        for (c, line) in ready { c.resume(returning: line) }
    }

    /// The first stdout line starting with `prefix`, waiting for it; `nil` if the process ends first.
    func line(startingWith prefix: String) async -> String? {
        await withCheckedContinuation { continuation in
            lock.lock()
            if let line = lines.first(where: { $0.hasPrefix(prefix) }) {
                lock.unlock()
                continuation.resume(returning: line)
            } else if ended {
                lock.unlock()
                continuation.resume(returning: nil)
            } else {
                waiters.append((prefix, continuation))
                lock.unlock()
            }
        }
    }

    /// All stdout lines so far.
    var output: [String] { lock.withLock { lines } }

    /// Sends a signal.
    func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for exit (bounded by the caller's own timeout logic).
    func waitForExit() async {
        _ = await line(startingWith: "\u{0}never")
    }
}
