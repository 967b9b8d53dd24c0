/// An error from the HTTPS-over-TCP listener, raised when it starts.
///
/// Compare by ``code``; ``reason`` says what went wrong and what to do next.
public struct HTTPSServerError: Error, Hashable, Sendable, CustomStringConvertible {
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

    /// Failure kinds. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case notIPv6, certificate, bind, alreadyStarted
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The listen address is not an IPv6 address.
        public static let notIPv6 = Code(.notIPv6)
        /// The certificate or key could not be loaded, or they do not belong together.
        public static let certificate = Code(.certificate)
        /// The address could not be bound (taken, or not on this host).
        public static let bind = Code(.bind)
        /// ``HTTPSServer/start()`` was called twice.
        public static let alreadyStarted = Code(.alreadyStarted)
        public var description: String { base.rawValue }
    }
}
