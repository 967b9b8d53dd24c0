import STOQErrors

/// An error raised by Nexus (CT log, name records, DHT codecs, service selection).
///
/// Modelled on swift-certificates' error type: a ``code`` that callers switch on or compare,
/// plus a human-readable ``reason`` that says what went wrong and what to do. Two errors are
/// equal when their codes are equal.
public typealias NexusError = CodedError<NexusErrorDomain>

/// The family of ``NexusError``.
public enum NexusErrorDomain: CodedErrorDomain {
    /// `NexusError.code: reason`.
    public static func describe(code: String, reason: String) -> String { reason }
}

/// The kinds of failure of ``NexusError``. New codes may be added.
extension ErrorCode where Domain == NexusErrorDomain {
    /// Bytes that are not a valid encoding (bad magic, unknown tag, truncated).
    public static let malformedInput = Self("malformedInput")
    /// A length or count in the input is larger than the decoder allows.
    public static let lengthLimitExceeded = Self("lengthLimitExceeded")
    /// An encoding version this build does not understand.
    public static let unsupportedVersion = Self("unsupportedVersion")
    /// A Merkle inclusion or consistency proof does not verify.
    public static let invalidProof = Self("invalidProof")
    /// A proof computes a root hash different from the signed tree head.
    public static let rootMismatch = Self("rootMismatch")
    /// A leaf index outside the tree.
    public static let invalidIndex = Self("invalidIndex")
    /// A tree size that the log does not have or that is out of order.
    public static let invalidTreeSize = Self("invalidTreeSize")
    /// A signature (tree head, receipt, record) does not verify under the claimed key.
    public static let badSignature = Self("badSignature")
    /// The stored log disagrees with itself (a leaf or node hash was changed).
    public static let logTampered = Self("logTampered")
    /// The SQLite store failed.
    public static let logStorageFailure = Self("logStorageFailure")
    /// The log has no entries yet.
    public static let emptyLog = Self("emptyLog")
    /// A certificate is not in the log.
    public static let notLogged = Self("notLogged")
    /// A name that breaks the naming rules (charset, length).
    public static let invalidName = Self("invalidName")
    /// A record whose signature does not verify under its owner key.
    public static let forgedRecord = Self("forgedRecord")
    /// A record older than (lower version than) the one already held.
    public static let staleRecord = Self("staleRecord")
    /// A record past its expiry.
    public static let expiredRecord = Self("expiredRecord")
    /// A record for a name that another key owns.
    public static let ownerMismatch = Self("ownerMismatch")
    /// Two different records with the same name and version.
    public static let recordConflict = Self("recordConflict")
    /// An address that is not a valid IPv6 address.
    public static let invalidAddress = Self("invalidAddress")
    /// No node of a service is healthy.
    public static let noHealthyNode = Self("noHealthyNode")
    /// Nothing is stored under the key that was looked up.
    public static let notFound = Self("notFound")
}
