/// An error from a STOQ node component (servers, fetchers, the node runtime).
///
/// Compare by ``code``; ``reason`` says what went wrong and what to do.
public struct NodeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The failure kind.
    public let code: Code
    /// A description for people.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// Node failure kinds. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidArgument, notFound, refused, corrupt, protocolViolation, unavailable, storeFailed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// A caller passed an unusable value.
        public static let invalidArgument = Code(.invalidArgument)
        /// A file, chunk or content id is not there.
        public static let notFound = Code(.notFound)
        /// The peer refused the request.
        public static let refused = Code(.refused)
        /// Bytes did not match their id.
        public static let corrupt = Code(.corrupt)
        /// The peer broke the wire protocol.
        public static let protocolViolation = Code(.protocolViolation)
        /// No source could serve the request.
        public static let unavailable = Code(.unavailable)
        /// The local store could not take a verified chunk (e.g. the disk is full).
        public static let storeFailed = Code(.storeFailed)
        public var description: String { base.rawValue }
    }
}
