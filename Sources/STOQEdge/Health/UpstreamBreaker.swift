/// Whether an edge can still fill misses from its upstream peers (sans-IO; time is injected).
///
/// An edge that claims it fills every chunk (the HAVE fill flag) while every upstream fill fails
/// holds its clients for as long as each fill waits, and a client never learns to go elsewhere:
/// the edge answers its own probes, so health probing never marks it down. The breaker turns fill
/// outcomes into one answer, ``canFill(now:)``: while it is false the edge stops carrying the fill flag and answers its
/// misses with not-found at once, so clients move those chunks to other sources, or fail with a
/// clear error, in bounded time.
///
/// An upstream is *open* (not tried) after a fill from it failed (an error, or no bytes for the
/// edge's fill limit), for ``Configuration/retryAfter``; then one fill may try it again (a *probe
/// fill*), and a success closes it. Not-found answers are not failures: the upstream is alive.
/// Health probing's view is only a hint (``handleHealth(_:isDown:now:)``): a peer that answers
/// probes again is retried at once, but a peer reported down is not given up on before a fill
/// from it fails (health can be wrong on a busy machine).
public struct UpstreamBreaker<Peer: Hashable & Sendable>: Sendable {
    /// Tuning.
    public struct Configuration: Sendable, Equatable {
        /// How long an upstream is left alone after a failed fill before one fill tries it again,
        /// in nanoseconds (default 5 s).
        public var retryAfter: UInt64

        /// Creates a configuration.
        public init(retryAfter: UInt64 = 5_000_000_000) {
            self.retryAfter = retryAfter
        }
    }

    private struct State: Sendable {
        var consecutiveFailures = 0
        var openUntil: UInt64 = 0
        var probing = false
    }

    /// Tuning.
    public let configuration: Configuration
    /// The upstream peers, in the order given.
    public let upstream: [Peer]
    private var states: [Peer: State]

    /// Creates a breaker for `upstream` (all closed: usable).
    public init(upstream: [Peer], configuration: Configuration = .init()) {
        self.configuration = configuration
        self.upstream = upstream
        self.states = Dictionary(upstream.map { ($0, State()) }, uniquingKeysWith: { a, _ in a })
    }

    /// A fill from `peer` succeeded (or it answered not-found): it is usable.
    public mutating func handleFillSucceeded(_ peer: Peer, now: UInt64) {
        guard states[peer] != nil else { return }
        states[peer]!.consecutiveFailures = 0
        states[peer]!.openUntil = 0
        states[peer]!.probing = false
    }

    /// A fill from `peer` failed (connection error, no bytes within the fill limit).
    public mutating func handleFillFailed(_ peer: Peer, now: UInt64) {
        guard var state = states[peer] else { return }
        state.consecutiveFailures += 1
        let (until, overflow) = now.addingReportingOverflow(configuration.retryAfter)
        state.openUntil = overflow ? UInt64.max : until
        state.probing = false
        states[peer] = state
    }

    /// Health probing reports `peer` down (`true`) or up again. Up again: a failed upstream is
    /// retried at once instead of after ``Configuration/retryAfter``.
    public mutating func handleHealth(_ peer: Peer, isDown: Bool, now: UInt64) {
        guard states[peer] != nil, !isDown, states[peer]!.consecutiveFailures > 0 else { return }
        states[peer]!.openUntil = min(states[peer]!.openUntil, now)
    }

    /// Whether a fill may be sent to `peer` now. After ``Configuration/retryAfter`` one fill (the
    /// first to ask) may try an open upstream again; the others wait for its outcome.
    public mutating func shouldTry(_ peer: Peer, now: UInt64) -> Bool {
        guard let state = states[peer] else { return false }
        if state.consecutiveFailures == 0 { return true }
        guard now >= state.openUntil, !state.probing else { return false }
        states[peer]!.probing = true
        return true
    }

    /// Whether some upstream is usable now or due a retry: what the edge's HAVE fill flag claims.
    public func canFill(now: UInt64) -> Bool {
        states.values.contains { $0.consecutiveFailures == 0 || now >= $0.openUntil || $0.probing }
    }

    /// Fills from `peer` that failed in a row.
    public func consecutiveFailures(of peer: Peer) -> Int { states[peer]?.consecutiveFailures ?? 0 }
}
