/// A point on the simulator's virtual clock, in nanoseconds since the start of the run.
///
/// Virtual time only moves when the simulator processes an event, so a run is
/// deterministic and as fast as the CPU allows.
public struct SimInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the start of the run.
    public var nanoseconds: UInt64

    /// Creates an instant `nanoseconds` after the start of the run.
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The start of every run.
    public static let zero = SimInstant(nanoseconds: 0)

    /// The instant `duration` after the start of the run (negative durations clamp to zero).
    public init(sinceStart duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        self.nanoseconds = UInt64(max(0, nanoseconds))
    }

    /// Seconds since the start of the run.
    public var seconds: Double { Double(nanoseconds) / 1e9 }

    /// Elapsed time since the start of the run, as a standard `Duration`.
    public var sinceStart: Duration { .nanoseconds(Int64(clamping: nanoseconds)) }

    public static func < (lhs: SimInstant, rhs: SimInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The instant `rhs` after `lhs`.
    public static func + (lhs: SimInstant, rhs: SimDuration) -> SimInstant {
        SimInstant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    /// The time from `rhs` to `lhs`, or zero when `rhs` is later.
    public static func - (lhs: SimInstant, rhs: SimInstant) -> SimDuration {
        SimDuration(nanoseconds: lhs.nanoseconds >= rhs.nanoseconds ? lhs.nanoseconds - rhs.nanoseconds : 0)
    }

    public var description: String { "t=\(Double(nanoseconds) / 1e6)ms" }
}

/// A non-negative span of virtual time, in nanoseconds.
public struct SimDuration: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Length in nanoseconds.
    public var nanoseconds: UInt64

    /// Creates a duration of `nanoseconds`.
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// No time at all.
    public static let zero = SimDuration(nanoseconds: 0)

    /// A duration of `value` microseconds (negative values clamp to zero).
    public static func microseconds(_ value: Double) -> SimDuration {
        SimDuration(nanoseconds: UInt64(max(0, value * 1e3).rounded()))
    }

    /// A duration of `value` milliseconds (negative values clamp to zero).
    public static func milliseconds(_ value: Double) -> SimDuration {
        SimDuration(nanoseconds: UInt64(max(0, value * 1e6).rounded()))
    }

    /// A duration of `value` seconds (negative values clamp to zero).
    public static func seconds(_ value: Double) -> SimDuration {
        SimDuration(nanoseconds: UInt64(max(0, value * 1e9).rounded()))
    }

    /// Length in milliseconds.
    public var milliseconds: Double { Double(nanoseconds) / 1e6 }

    /// Length in seconds.
    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public static func < (lhs: SimDuration, rhs: SimDuration) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The sum of two durations.
    public static func + (lhs: SimDuration, rhs: SimDuration) -> SimDuration {
        SimDuration(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    /// `lhs` repeated `rhs` times.
    public static func * (lhs: SimDuration, rhs: UInt64) -> SimDuration {
        SimDuration(nanoseconds: lhs.nanoseconds &* rhs)
    }

    public var description: String { "\(Double(nanoseconds) / 1e6)ms" }
}
