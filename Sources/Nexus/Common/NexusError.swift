/// An error raised by Nexus (CT log, name records, DHT codecs, service selection).
///
/// Modelled on swift-certificates' error type: a ``code`` that callers switch on or compare,
/// plus a human-readable ``reason`` that says what went wrong and what to do. Two errors are
/// equal when their codes are equal.
public struct NexusError: Error, Hashable, CustomStringConvertible, Sendable {
    /// What kind of failure this is.
    public let code: Code
    /// A sentence for a human: what went wrong and, where possible, what to do about it.
    public let reason: String
    /// The source file that raised the error.
    public let file: String
    /// The source line that raised the error.
    public let line: UInt

    /// Creates an error.
    /// - Parameters:
    ///   - code: the failure kind.
    ///   - reason: a human-readable explanation.
    public init(_ code: Code, _ reason: String, file: String = #fileID, line: UInt = #line) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// A textual form: `NexusError.code: reason`.
    public var description: String { "NexusError.\(code): \(reason)" }

    /// Equality compares codes only.
    public static func == (lhs: NexusError, rhs: NexusError) -> Bool { lhs.code == rhs.code }
    /// Hashes the code only.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The kind of a ``NexusError``; a struct over a private enum so that new codes can be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case malformedInput, lengthLimitExceeded, unsupportedVersion
            case invalidProof, rootMismatch, invalidIndex, invalidTreeSize
            case badSignature, logTampered, logStorageFailure, emptyLog, notLogged
            case invalidName, forgedRecord, staleRecord, expiredRecord, ownerMismatch, recordConflict
            case invalidAddress, noHealthyNode, notFound
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Bytes that are not a valid encoding (bad magic, unknown tag, truncated).
        public static let malformedInput = Code(.malformedInput)
        /// A length or count in the input is larger than the decoder allows.
        public static let lengthLimitExceeded = Code(.lengthLimitExceeded)
        /// An encoding version this build does not understand.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// A Merkle inclusion or consistency proof does not verify.
        public static let invalidProof = Code(.invalidProof)
        /// A proof computes a root hash different from the signed tree head.
        public static let rootMismatch = Code(.rootMismatch)
        /// A leaf index outside the tree.
        public static let invalidIndex = Code(.invalidIndex)
        /// A tree size that the log does not have or that is out of order.
        public static let invalidTreeSize = Code(.invalidTreeSize)
        /// A signature (tree head, receipt, record) does not verify under the claimed key.
        public static let badSignature = Code(.badSignature)
        /// The stored log disagrees with itself (a leaf or node hash was changed).
        public static let logTampered = Code(.logTampered)
        /// The SQLite store failed.
        public static let logStorageFailure = Code(.logStorageFailure)
        /// The log has no entries yet.
        public static let emptyLog = Code(.emptyLog)
        /// A certificate is not in the log.
        public static let notLogged = Code(.notLogged)
        /// A name that breaks the naming rules (charset, length).
        public static let invalidName = Code(.invalidName)
        /// A record whose signature does not verify under its owner key.
        public static let forgedRecord = Code(.forgedRecord)
        /// A record older than (lower version than) the one already held.
        public static let staleRecord = Code(.staleRecord)
        /// A record past its expiry.
        public static let expiredRecord = Code(.expiredRecord)
        /// A record for a name that another key owns.
        public static let ownerMismatch = Code(.ownerMismatch)
        /// Two different records with the same name and version.
        public static let recordConflict = Code(.recordConflict)
        /// An address that is not a valid IPv6 address.
        public static let invalidAddress = Code(.invalidAddress)
        /// No node of a service is healthy.
        public static let noHealthyNode = Code(.noHealthyNode)
        /// Nothing is stored under the key that was looked up.
        public static let notFound = Code(.notFound)

        /// The code's name.
        public var description: String { base.rawValue }
    }
}
