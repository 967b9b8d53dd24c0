/// A malformed or unacceptable frame or message.
///
/// Decoders never trap on bad input: every length is bounded and every failure is one of these.
/// Compare by ``code``; ``reason`` says what was wrong.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public let code: Code
    /// A description for people.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code): \(reason)" }
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The kinds of wire failure. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case truncated, tooLong, malformed, unknownType, trailingBytes, unsupportedVersion
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The input ended inside a frame or field.
        public static let truncated = Code(.truncated)
        /// A length exceeds its bound.
        public static let tooLong = Code(.tooLong)
        /// A field has a value it may not have.
        public static let malformed = Code(.malformed)
        /// A frame type this side does not know and may not ignore.
        public static let unknownType = Code(.unknownType)
        /// A payload has bytes left over after its last field.
        public static let trailingBytes = Code(.trailingBytes)
        /// The peer speaks a protocol version this side does not.
        public static let unsupportedVersion = Code(.unsupportedVersion)

        public var description: String { base.rawValue }
    }
}
