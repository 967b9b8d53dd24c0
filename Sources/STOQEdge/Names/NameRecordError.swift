import STOQErrors

/// Why a name record or invalidation was refused. Equality compares the code only.
///
/// Modelled on swift-certificates' errors: a `code` that can grow, and a reason for humans
/// that says what went wrong and what to do.
public typealias NameRecordError = CodedError<NameRecordErrorDomain>

/// The family of ``NameRecordError``.
public enum NameRecordErrorDomain: CodedErrorDomain {
    /// `name record refused (code): reason`.
    public static func describe(code: String, reason: String) -> String { "name record refused (\(code)): \(reason)" }
}

/// The kinds of failure of ``NameRecordError``. New codes may be added.
extension ErrorCode where Domain == NameRecordErrorDomain {
    /// The bytes are not a canonical encoding (bad magic, bad length, trailing bytes, bad key).
    public static let malformed = Self("malformed")
    /// The name is empty, longer than 255 bytes, or contains control characters.
    public static let invalidName = Self("invalidName")
    /// The signature does not verify under the record's owner key (a forged or damaged record).
    public static let badSignature = Self("badSignature")
    /// No owner key is registered for this name on this node.
    public static let unknownOwner = Self("unknownOwner")
    /// The record is signed by a key that is not the name's owner.
    public static let wrongOwner = Self("wrongOwner")
    /// The record's version is older than the one this node holds or was told about.
    public static let staleVersion = Self("staleVersion")
    /// Same version as the one held, different content: the owner signed two records for one version.
    public static let conflictingVersion = Self("conflictingVersion")
    /// The table holds its maximum number of names.
    public static let tableFull = Self("tableFull")
}
