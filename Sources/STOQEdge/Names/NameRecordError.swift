/// Why a name record or invalidation was refused. Equality compares the code only.
///
/// Modelled on swift-certificates' errors: a `code` that can grow, and a reason for humans
/// that says what went wrong and what to do.
public struct NameRecordError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: Sendable, Hashable {
            case malformed, invalidName, badSignature, unknownOwner, wrongOwner, staleVersion, conflictingVersion, tableFull
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The bytes are not a canonical encoding (bad magic, bad length, trailing bytes, bad key).
        public static let malformed = Code(.malformed)
        /// The name is empty, longer than 255 bytes, or contains control characters.
        public static let invalidName = Code(.invalidName)
        /// The signature does not verify under the record's owner key (a forged or damaged record).
        public static let badSignature = Code(.badSignature)
        /// No owner key is registered for this name on this node.
        public static let unknownOwner = Code(.unknownOwner)
        /// The record is signed by a key that is not the name's owner.
        public static let wrongOwner = Code(.wrongOwner)
        /// The record's version is older than the one this node holds or was told about.
        public static let staleVersion = Code(.staleVersion)
        /// Same version as the one held, different content: the owner signed two records for one version.
        public static let conflictingVersion = Code(.conflictingVersion)
        /// The table holds its maximum number of names.
        public static let tableFull = Code(.tableFull)

        /// The code's name, e.g. `staleVersion`.
        public var description: String { "\(value)" }
    }

    /// The kind of failure.
    public let code: Code
    /// What went wrong and what to do, for humans.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// Errors are equal when their codes are (the reason is for humans).
    public static func == (a: NameRecordError, b: NameRecordError) -> Bool { a.code == b.code }
    /// Hashes the code only.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The code and the reason.
    public var description: String { "name record refused (\(code)): \(reason)" }
}
