import STOQSwarm

/// When a fetch dials its lost sources again, and what it tried (sans-IO: the fetch reports
/// connection losses, dial outcomes and delivered chunks with the current time, and starts the
/// dials this tells it to; all times are nanoseconds on the fetch's clock).
///
/// A source whose connection failed is *down*, not gone: it is dialled again after
/// ``SwarmConfiguration/redialBackoff``, then after twice that, and so on up to
/// ``SwarmConfiguration/maxRedialBackoff``, until a dial succeeds (the source is up again) or it
/// has been unreachable for ``SwarmConfiguration/downSourceLimit`` (no more dials: the scheduler
/// stops counting it as a holder at that moment, and a chunk only it held fails the fetch). The
/// backoff grows across losses too and starts over only once the source delivers a chunk, so a
/// peer that accepts connections and then drops them is not dialled in a tight loop.
struct SourceRedials {
    /// What was tried for one source.
    struct Record {
        /// When its current outage began (nil: it is up).
        var downSince: UInt64?
        /// The wait before its next dial.
        var backoff: UInt64
        /// Dials in the current outage, and in all.
        var attempts = 0
        var totalAttempts = 0
        /// Connection losses in this fetch, and dials that failed.
        var losses = 0
        var failures = 0
        /// The error that took it down, and the last dial's error.
        var lostBecause = ""
        var lastError: String?
        /// Whether a dial is scheduled or running.
        var dialing = false
    }

    let base: UInt64
    let ceiling: UInt64
    let window: UInt64
    private(set) var records: [SourceID: Record] = [:]

    init(configuration: SwarmConfiguration) {
        base = max(1, configuration.redialBackoff)
        ceiling = max(base, configuration.maxRedialBackoff)
        window = configuration.downSourceLimit
    }

    /// `source` lost its connection with `error` at `now`. Returns the delay before its first dial,
    /// or nil when a dial is already scheduled or running (it was already down).
    mutating func lost(_ source: SourceID, error: String, now: UInt64) -> UInt64? {
        var record = records[source] ?? Record(backoff: base)
        if record.downSince == nil {
            record.downSince = now
            record.attempts = 0
            record.losses += 1
            record.lostBecause = error
        }
        defer { records[source] = record }
        guard !record.dialing else { return nil }
        record.dialing = true
        return record.backoff
    }

    /// A dial to `source` failed with `error` at `now`. Returns the delay before the next one, or
    /// nil when the source has been unreachable for the whole window (no more dials).
    mutating func failed(_ source: SourceID, error: String, now: UInt64) -> UInt64? {
        guard var record = records[source] else { return nil }
        record.attempts += 1
        record.totalAttempts += 1
        record.failures += 1
        record.lastError = error
        guard record.downSince != nil else {
            // Up again by other means (health probes answered) while this dial ran.
            record.dialing = false
            records[source] = record
            return nil
        }
        record.backoff = min(ceiling, record.backoff > ceiling / 2 ? ceiling : record.backoff * 2)
        let since = record.downSince ?? now
        let end = since > UInt64.max - window ? UInt64.max : since + window
        if now >= end {
            record.dialing = false
        }
        records[source] = record
        guard now < end else { return nil }
        // The last dial starts no later than the end of the window.
        return min(record.backoff, end - now)
    }

    /// A dial to `source` succeeded at `now`: it is up. Returns how long it was down and the
    /// dials it took (nil when it was not down).
    mutating func succeeded(_ source: SourceID, now: UInt64) -> (seconds: Double, attempts: Int)? {
        guard var record = records[source] else { return nil }
        record.attempts += 1
        record.totalAttempts += 1
        record.dialing = false
        defer { records[source] = record }
        guard let since = record.downSince else { return nil }
        record.downSince = nil
        return (Double(now > since ? now - since : 0) / 1e9, record.attempts)
    }

    /// `source` is up by other means (health probes answered): no outage is open any more.
    mutating func up(_ source: SourceID) {
        records[source]?.downSince = nil
    }

    /// `source` delivered a chunk: its next outage starts from the base backoff.
    mutating func delivered(_ source: SourceID) {
        guard records[source] != nil else { return }
        records[source]!.backoff = base
    }

    /// Whether `source` lost its connection and has not been reached since.
    func isDown(_ source: SourceID) -> Bool { records[source]?.downSince != nil }

    /// Whether a dial to `source` is scheduled or running.
    func isDialing(_ source: SourceID) -> Bool { records[source]?.dialing ?? false }

    /// One line per source that lost its connection in this fetch: what happened and what was
    /// tried, for the error that ends a fetch with no source left.
    func summary(now: UInt64) -> String {
        records.sorted { $0.key.rawValue < $1.key.rawValue }.map { id, r in
            var line = "\(id): connection lost (\(r.lostBecause))"
            if let since = r.downSince {
                line += ", unreachable for \((now > since ? now - since : 0) / 1_000_000_000) s"
            }
            let failed = r.failures
            line += ", dialled again: \(failed) failed"
            if let last = r.lastError { line += " (last: \(last))" }
            if r.totalAttempts > failed { line += ", \(r.totalAttempts - failed) succeeded" }
            if r.dialing, r.downSince != nil { line += ", one still under way" }
            return line
        }.joined(separator: "; ")
    }
}
