/// Tuning of a ``SwarmScheduler``. All times are nanoseconds.
public struct SwarmConfiguration: Sendable, Hashable {
    /// Seed of the tie-breaking generator (rarest-first ties are broken randomly).
    public var seed: UInt64 = 0x5717_0a5e
    /// Requests a usable source always gets, whatever its measured window.
    public var minOutstanding: Int = 2
    /// Requests a source never exceeds.
    public var maxOutstanding: Int = 32
    /// The byte window of a source before its throughput is measured (0: only
    /// ``minOutstanding`` requests, the window then grows from measurements like a slow start).
    /// A small start keeps the first sources to connect from taking the whole content.
    public var initialWindowBytes: Int = 0
    /// The window is `windowGain × throughput × turnaround` bytes (plus one average chunk), so
    /// the source's pipe stays full while the next request travels. The turnaround is measured
    /// per request from the moment the source could have started it (sent, or the source's
    /// previous completion) to its first byte, so a queue of requests waiting at the source does not
    /// count as path delay and does not grow the window further.
    public var windowGain: Double = 2
    /// Once a source's throughput is measured, its byte window never drops below this: a source answering small chunks is bound by its
    /// per-request latency (reading, sealing, stream set-up), which more requests in flight hide,
    /// while `throughput × turnaround` alone would keep such a source at a couple of requests.
    /// 256 KiB is one large chunk, so it changes nothing for bandwidth-bound transfers of large
    /// chunks (``minOutstanding`` already gives two).
    public var minWindowBytes: Int = 256 << 10
    /// Shortest span of one throughput sample (after the first): the throughput is every byte a
    /// source delivered over the time it was busy, so it holds whether a source serves its
    /// requests one after another or interleaved.
    public var rateSampleInterval: UInt64 = 50_000_000
    /// RTT assumed before any sample.
    public var initialRTT: UInt64 = 50_000_000
    /// Shortest stall timeout.
    public var minStallTimeout: UInt64 = 40_000_000
    /// Longest stall timeout: a source that delivers nothing for this long loses its requests.
    /// Goal 200 ms; must not exceed ``failoverBudget``.
    public var maxStallTimeout: UInt64 = 200_000_000
    /// The promise: a dead or stalled source's requests run elsewhere within this time (on a
    /// machine that gives the fetch the CPU it asks for; see ``maxLagCredit``).
    public var failoverBudget: UInt64 = 500_000_000
    /// Lateness of the runtime's own wake-ups (``SwarmScheduler/handleSchedulingLag(_:now:)``)
    /// that is ordinary jitter and credits nothing.
    public var lagTolerance: UInt64 = 5_000_000
    /// The most local scheduling lag that postpones one source's stall verdict since its last
    /// progress. Slowness is not death: a fetch that is itself starved of CPU does not blame a
    /// source for bytes it could not read; but a source that really stopped is still detected,
    /// at most this much later than on an idle machine.
    public var maxLagCredit: UInt64 = 2_000_000_000
    /// For this long after the runtime reported a late wake-up, the machine counts as busy: stall
    /// timeouts stretch to twice the longest recent gap between a source's progress events (the
    /// pace of sources that share a starved machine is uneven), at most ``busyStallTimeout``.
    public var busyHold: UInt64 = 5_000_000_000
    /// The longest stall timeout on a busy machine (see ``busyHold``); on an idle one it is
    /// ``maxStallTimeout``.
    public var busyStallTimeout: UInt64 = 1_500_000_000
    /// How many bytes the runtime typically reports per ``SwarmScheduler/handleProgress(_:bytes:now:)``
    /// call; a source gets `4 × RTT + 4 × (this / its throughput)` between two progress reports.
    public var progressGranularityBytes: Int = 64 << 10
    /// First backoff after an error or stall; doubles per consecutive failure.
    public var baseBackoff: UInt64 = 100_000_000
    /// Longest backoff.
    public var maxBackoff: UInt64 = 5_000_000_000
    /// The source retry window: a source that is down (health probes unanswered, or its
    /// connection lost and not yet dialled again) for this long stops counting as a holder, and a
    /// runtime that re-dials lost connections stops dialling it. A chunk that only it holds then
    /// fails the fetch with an error naming it, instead of holding the fetch until it returns (it
    /// counts again if it comes back up first). Until then a fetch with no live source waits for
    /// one to return. Default 120 s (`stoq get --source-retry-seconds`), so a fetch survives a
    /// partition longer than QUIC's 30 s idle timeout.
    public var downSourceLimit: UInt64 = 120_000_000_000
    /// First wait before a source whose connection was lost is dialled again; doubles per failed
    /// dial up to ``maxRedialBackoff``, and starts over once the source delivers a chunk.
    public var redialBackoff: UInt64 = 1_000_000_000
    /// Longest wait between two dials of a lost source.
    public var maxRedialBackoff: UInt64 = 15_000_000_000
    /// Whether the endgame duplicates the last outstanding requests on idle sources.
    public var endgame: Bool = true
    /// Copies of one chunk in flight at once during the endgame.
    public var endgameMaxCopies: Int = 2

    /// The defaults.
    public init() {}
}

/// A snapshot of a fetch, for progress bars and reports.
public struct SwarmProgress: Sendable, Hashable {
    /// Chunks in the content.
    public var chunkCount: Int
    /// Chunks present and verified (including those present at the start).
    public var chunksDone: Int
    /// Bytes in the content.
    public var totalBytes: Int
    /// Bytes present and verified (including those present at the start).
    public var bytesDone: Int
    /// Bytes present at the start (resume).
    public var bytesPresentAtStart: Int
    /// Requests in flight.
    public var outstandingRequests: Int
    /// Whether the endgame runs (nothing left to assign, duplicates allowed).
    public var inEndgame: Bool
    /// Whether ``SwarmAction/completed`` was emitted.
    public var isComplete: Bool
    /// Whether ``SwarmAction/failed(_:)`` was emitted.
    public var isFailed: Bool
    /// Every source ever added, in the order added.
    public var sources: [SwarmSourceProgress]
}

/// What one source did.
public struct SwarmSourceProgress: Sendable, Hashable {
    /// The source.
    public var id: SourceID
    /// Its state now.
    public var state: SwarmSourceState
    /// Bytes of verified chunks it delivered.
    public var bytesDelivered: Int
    /// Verified chunks it delivered.
    public var chunksDelivered: Int
    /// Bytes received for requests that were then cancelled, failed or corrupt.
    public var bytesDiscarded: Int
    /// Its requests in flight.
    public var outstandingRequests: Int
    /// Measured throughput in bytes per second, once measured.
    public var throughputBytesPerSecond: Double?
    /// Smoothed RTT in nanoseconds, once measured.
    public var rttNanoseconds: UInt64?
    /// Its byte window now: the scheduler tops its requests up to this many bytes (within the
    /// request limits; see ``SwarmScheduler/windowBytes(of:)``).
    public var windowBytes: Int = 0
    /// Bytes of its requests in flight.
    public var outstandingBytes: Int = 0
    /// Errors, refusals and not-found answers.
    public var failures: Int
    /// Stalls detected.
    public var stalls: Int
}
