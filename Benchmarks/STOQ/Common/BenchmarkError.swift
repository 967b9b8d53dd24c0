/// A benchmark that could not produce its figures: what went wrong, in words for a person.
///
/// The CLI prints ``description`` as it is and exits with status 1.
public struct BenchmarkError: Error, CustomStringConvertible, Sendable {
    /// What happened and, where it helps, what to try next.
    public let description: String

    /// Creates an error with this message.
    public init(_ description: String) { self.description = description }
}
