import STOQContent
import STOQErrors
import STOQSimulation

/// The `STOQSwarm` module: multi-source chunk retrieval as a sans-IO state machine
/// (``SwarmScheduler``) plus its simulated harness (``SwarmSimulation``). The benchmark that
/// drives the harness (`SwarmBenchmark`) is in the `STOQBenchmarks` target. See DESIGN.md §5.
public enum STOQSwarmModule {}

/// An opaque name of a source (a peer that may serve chunks), chosen by the runtime.
///
/// The scheduler only compares and hashes it; a runtime may use a node id, an address or a
/// dense integer. The simulator harness uses `SourceID(index)`.
public struct SourceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The name as text.
    public let rawValue: String

    /// Creates a source id from any text (a node id in hex, an address, …).
    public init(_ rawValue: String) { self.rawValue = rawValue }

    /// Creates a source id from an integer (rendered as `s<N>`).
    public init(_ number: Int) { self.rawValue = "s\(number)" }

    public static func < (lhs: SourceID, rhs: SourceID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue }
}

/// The name of one chunk request the scheduler issued; unique within one scheduler.
public struct RequestID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// A number that grows with every request.
    public let rawValue: UInt64

    /// Wraps a raw request number.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static func < (lhs: RequestID, rhs: RequestID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "r\(rawValue)" }
}

/// One chunk to fetch: its position in the content, its id and its size in bytes.
public struct SwarmChunk: Hashable, Sendable {
    /// The chunk's position in the manifest (`0 ..< chunkCount`), the bit in HAVE bitfields.
    public var index: Int
    /// The SHA-256 id the received bytes must hash to.
    public var id: ChunkID
    /// The chunk's stored size in bytes.
    public var size: Int

    /// Creates a chunk description.
    public init(index: Int, id: ChunkID, size: Int) {
        self.index = index
        self.id = id
        self.size = size
    }

    /// Creates a chunk description from 32 raw id bytes; nil when `idBytes` is not 32 bytes long.
    public init?(index: Int, idBytes: [UInt8], size: Int) {
        guard let id = ChunkID(bytes: idBytes) else { return nil }
        self.init(index: index, id: id, size: size)
    }
}

/// Why a request ended without a chunk (reported with ``SwarmScheduler/handleFailure(_:_:now:)``).
public enum SwarmRequestFailure: Hashable, Sendable {
    /// The source said it does not have the chunk. The scheduler stops asking it for that chunk.
    case notFound
    /// The source refused for now (busy, throttled).
    case refused
    /// The stream or connection failed, or the response was malformed or truncated.
    case error(String)
}

/// Why a source was banned.
public enum SwarmBanReason: Hashable, Sendable, CustomStringConvertible {
    /// It sent bytes that did not hash to the requested chunk id.
    case corruptChunk(index: Int)

    public var description: String {
        switch self {
        case .corruptChunk(let index): "sent corrupt bytes for chunk \(index)"
        }
    }
}

/// The scheduler's view of a source.
public enum SwarmSourceState: Hashable, Sendable, CustomStringConvertible {
    /// Usable.
    case active
    /// Penalised after an error or stall: no new requests until `until` (nanoseconds).
    case backingOff(until: UInt64)
    /// Health probing says it is down; it is used again after ``SwarmScheduler/handleSourceUp(_:now:)``.
    case down
    /// Never used again.
    case banned(SwarmBanReason)
    /// Removed by the runtime (``SwarmScheduler/handleSourceRemoved(_:now:)``).
    case removed

    public var description: String {
        switch self {
        case .active: "active"
        case .backingOff: "backing off"
        case .down: "down"
        case .banned(let reason): "banned (\(reason))"
        case .removed: "removed"
        }
    }
}

/// What the runtime must do next, taken with ``SwarmScheduler/pollAction()``.
public enum SwarmAction: Hashable, Sendable {
    /// Ask `source` for chunk `chunkIndex`; report the outcome under `id`.
    case request(RequestID, source: SourceID, chunkIndex: Int)
    /// Abandon request `id` (reset its stream): an endgame loser, a stalled request, or a
    /// request on a source that went down or was banned. Late data for it is ignored.
    case cancel(RequestID, source: SourceID, chunkIndex: Int)
    /// `source` is banned for good; close its connection if nothing else uses it.
    case sourceBanned(SourceID, reason: SwarmBanReason)
    /// Every chunk is present and verified. Nothing follows.
    case completed
    /// Some chunk cannot be supplied by any remaining source. Nothing follows.
    case failed(SwarmError)
}

/// Ranks sources; a higher score is preferred when windows are filled and endgame
/// duplicates are placed (e.g. from `STOQRouting`'s route costs).
public protocol SourceRanker: Sendable {
    /// The preference for `source`; higher is better. Called often: keep it cheap.
    func score(for source: SourceID) -> Double
}

/// A ``SourceRanker`` made from a closure.
public struct ClosureSourceRanker: SourceRanker {
    private let body: @Sendable (SourceID) -> Double
    /// Wraps `body`, which returns a score per source (higher is better).
    public init(_ body: @escaping @Sendable (SourceID) -> Double) { self.body = body }
    public func score(for source: SourceID) -> Double { body(source) }
}

/// An error of the swarm layer: a ``code`` to switch on and a reason written for a person.
///
/// Equality compares the code only, in the style of swift-certificates.
public struct SwarmError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public typealias Code = ErrorCode<SwarmError>

    /// What kind of failure this is.
    public var code: Code
    /// The chunk indices concerned (for ``Code/noSource``), ascending.
    public var chunkIndices: [Int]
    /// What went wrong and what to do, for a person.
    public var reason: String

    /// Creates an error.
    public init(_ code: Code, chunkIndices: [Int] = [], _ reason: String) {
        self.code = code
        self.chunkIndices = chunkIndices
        self.reason = reason
    }

    public static func == (lhs: SwarmError, rhs: SwarmError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    public var description: String { "SwarmError.\(code): \(reason)" }
}

/// The kinds of failure of ``SwarmError``. New codes may be added.
extension ErrorCode where Domain == SwarmError {
    /// No remaining source can supply one or more chunks.
    public static let noSource = Self("noSource")
    /// An input was out of its documented range.
    public static let invalidArgument = Self("invalidArgument")
}
