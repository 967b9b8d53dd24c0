/// An error from creating, loading or checking keys and certificates.
///
/// Compare errors by ``code``; ``reason`` is for people.
public struct IdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public let code: Code
    /// What went wrong and, where possible, what to do about it.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code): \(reason)" }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The kinds of identity failure. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case malformedNodeID, malformedCertificate, malformedKey, fileNotFound, fileUnreadable
            case fileUnwritable, invalidName, invalidValidity, untrusted, keyMismatch
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Bytes that should be a node id are not 32 bytes long.
        public static let malformedNodeID = Code(.malformedNodeID)
        /// A certificate could not be parsed (PEM or DER).
        public static let malformedCertificate = Code(.malformedCertificate)
        /// A private key could not be parsed, or is of an unsupported type.
        public static let malformedKey = Code(.malformedKey)
        /// A certificate or key file does not exist.
        public static let fileNotFound = Code(.fileNotFound)
        /// A certificate or key file exists but cannot be read.
        public static let fileUnreadable = Code(.fileUnreadable)
        /// A certificate or key file cannot be written.
        public static let fileUnwritable = Code(.fileUnwritable)
        /// A node or CA name is empty or has characters that do not belong in a name.
        public static let invalidName = Code(.invalidName)
        /// A validity period is zero, negative, or too long.
        public static let invalidValidity = Code(.invalidValidity)
        /// A certificate chain does not verify against the trust roots.
        public static let untrusted = Code(.untrusted)
        /// A private key does not belong to the certificate it is paired with.
        public static let keyMismatch = Code(.keyMismatch)

        public var description: String { base.rawValue }
    }
}
