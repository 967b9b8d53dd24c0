import STOQSwarm

/// How one source was used during the data phase of a fetch, seen from the receiver.
///
/// It explains a goodput figure: a source that is *idle* (nothing asked of it) or *awaiting*
/// (asked, but no byte of any of its requests has arrived yet: the request turnaround) cannot
/// be sending, whatever its rate allows.
public struct FetchSourceTimeline: Sendable {
    /// The source.
    public var name: String
    /// Seconds from the start of the data phase (manifests resolved) to the last verified chunk.
    public var seconds: Double
    /// Seconds with no request outstanding on it.
    public var idleSeconds: Double
    /// The part of ``idleSeconds`` in the endgame (every chunk assigned; the tail of the fetch).
    public var endgameIdleSeconds: Double
    /// Seconds with requests outstanding of which none had received a byte yet.
    public var awaitingSeconds: Double
    /// Request sent to first byte of the response, milliseconds, sorted.
    public var firstByteMilliseconds: [Double]
    /// Time-weighted mean of its outstanding requests.
    public var meanOutstandingRequests: Double
    /// Most requests outstanding at once.
    public var maxOutstandingRequests: Int
    /// Time-weighted mean of the scheduler's byte window for it.
    public var meanWindowBytes: Double
    /// Bytes received (every response byte, before verification) per ``binSeconds``, from the
    /// start of the data phase; empty unless the fetch was traced.
    public var bytesPerBin: [Int]
    /// Width of one ``bytesPerBin`` interval.
    public var binSeconds: Double

    /// ``idleSeconds`` as a fraction of ``seconds``.
    public var idleFraction: Double { seconds > 0 ? idleSeconds / seconds : 0 }
    /// ``awaitingSeconds`` as a fraction of ``seconds``.
    public var awaitingFraction: Double { seconds > 0 ? awaitingSeconds / seconds : 0 }
    /// The `q` quantile (0...1) of ``firstByteMilliseconds``, NaN without samples.
    public func firstByteMilliseconds(quantile q: Double) -> Double {
        guard !firstByteMilliseconds.isEmpty else { return .nan }
        let position = Int((Double(firstByteMilliseconds.count - 1) * min(max(q, 0), 1)).rounded(.up))
        return firstByteMilliseconds[position]
    }
}

/// Integrates per-source request counts over time (sans-IO: every call passes `now`, ns).
struct FetchTimelineRecorder {
    private struct Source {
        var last: UInt64
        var outstanding = 0
        var awaiting = 0
        var window = 0
        var idle: UInt64 = 0
        var endgameIdle: UInt64 = 0
        var awaitingTime: UInt64 = 0
        var outstandingIntegral = 0.0
        var windowIntegral = 0.0
        var maxOutstanding = 0
        var firstBytes: [UInt64] = []
        var bins: [Int] = []
    }

    private let start: UInt64
    private let binWidth: UInt64?
    private var sources: [SourceID: Source] = [:]
    private var order: [SourceID] = []
    private var sentAt: [RequestID: UInt64] = [:]
    private var awaitingFirstByte: Set<RequestID> = []
    private var sourceOf: [RequestID: SourceID] = [:]
    /// Whether the fetch is in its endgame (set by the caller as the scheduler says).
    var inEndgame = false

    /// - Parameter binWidth: width of the bytes-per-interval trace (nil: no trace).
    init(start: UInt64, binWidth: UInt64?) {
        self.start = start
        self.binWidth = binWidth
    }

    private mutating func advance(_ id: SourceID, to now: UInt64) {
        if sources[id] == nil {
            sources[id] = Source(last: start)
            order.append(id)
        }
        var s = sources[id]!
        let dt = now > s.last ? now - s.last : 0
        if s.outstanding == 0 {
            s.idle += dt
            if inEndgame { s.endgameIdle += dt }
        } else if s.awaiting == s.outstanding {
            s.awaitingTime += dt
        }
        s.outstandingIntegral += Double(s.outstanding) * Double(dt)
        s.windowIntegral += Double(s.window) * Double(dt)
        s.last = max(s.last, now)
        sources[id] = s
    }

    /// The scheduler's window for `id` changed (or may have); the first call registers the
    /// source, so one that never gets a request still shows as idle.
    mutating func window(_ id: SourceID, bytes: Int, now: UInt64) {
        advance(id, to: now)
        sources[id]!.window = bytes
    }

    /// A request went out.
    mutating func requested(_ request: RequestID, on id: SourceID, now: UInt64) {
        advance(id, to: now)
        sources[id]!.outstanding += 1
        sources[id]!.awaiting += 1
        sources[id]!.maxOutstanding = max(sources[id]!.maxOutstanding, sources[id]!.outstanding)
        sentAt[request] = now
        sourceOf[request] = id
        awaitingFirstByte.insert(request)
    }

    /// `bytes` of a response arrived.
    mutating func received(_ request: RequestID, bytes: Int, now: UInt64) {
        guard bytes > 0, let id = sourceOf[request] else { return }
        advance(id, to: now)
        if awaitingFirstByte.remove(request) != nil {
            sources[id]!.awaiting -= 1
            if let sent = sentAt[request] { sources[id]!.firstBytes.append(now > sent ? now - sent : 0) }
        }
        if let binWidth {
            let bin = Int((now > start ? now - start : 0) / binWidth)
            if sources[id]!.bins.count <= bin { sources[id]!.bins += Array(repeating: 0, count: bin + 1 - sources[id]!.bins.count) }
            sources[id]!.bins[bin] += bytes
        }
    }

    /// A request ended (done, failed or cancelled).
    mutating func ended(_ request: RequestID, now: UInt64) {
        guard let id = sourceOf.removeValue(forKey: request) else { return }
        advance(id, to: now)
        sources[id]!.outstanding -= 1
        if awaitingFirstByte.remove(request) != nil { sources[id]!.awaiting -= 1 }
        sentAt[request] = nil
    }

    /// The timelines up to `end`.
    mutating func finish(at end: UInt64) -> [FetchSourceTimeline] {
        for id in order { advance(id, to: end) }
        let seconds = Double(end > start ? end - start : 0) / 1e9
        let span = Double(max(end > start ? end - start : 0, 1))
        return order.map { id in
            let s = sources[id]!
            return FetchSourceTimeline(
                name: id.rawValue, seconds: seconds, idleSeconds: Double(s.idle) / 1e9, endgameIdleSeconds: Double(s.endgameIdle) / 1e9,
                awaitingSeconds: Double(s.awaitingTime) / 1e9, firstByteMilliseconds: s.firstBytes.map { Double($0) / 1e6 }.sorted(),
                meanOutstandingRequests: s.outstandingIntegral / span, maxOutstandingRequests: s.maxOutstanding,
                meanWindowBytes: s.windowIntegral / span, bytesPerBin: s.bins, binSeconds: Double(binWidth ?? 0) / 1e9)
        }
    }
}
