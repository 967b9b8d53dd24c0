import STOQErrors

/// An error from the content layer: a ``code`` to switch on and a reason written for a person.
///
/// Equality compares the code only, in the style of swift-certificates' `CertificateError`.
public typealias ContentError = CodedError<ContentErrorDomain>

/// The family of ``ContentError``.
public enum ContentErrorDomain: CodedErrorDomain {}

/// The kinds of failure of ``ContentError``. New codes may be added.
extension ErrorCode where Domain == ContentErrorDomain {
    /// A parameter was out of its documented range.
    public static let invalidArgument = Self("invalidArgument")
    /// Bytes could not be decoded (truncated, bad magic, lengths out of bounds, trailing garbage).
    public static let malformed = Self("malformed")
    /// The format version is newer than this build understands.
    public static let unsupportedVersion = Self("unsupportedVersion")
    /// Bytes do not hash to the id they were requested or announced under.
    public static let idMismatch = Self("idMismatch")
    /// The requested chunk, manifest or pin is not in the store.
    public static let notFound = Self("notFound")
    /// A chunk or key table did not authenticate with the key at hand.
    public static let decryptionFailed = Self("decryptionFailed")
    /// zstd failed to compress or decompress.
    public static let compressionFailed = Self("compressionFailed")
    /// The disk holding the store is full.
    public static let diskFull = Self("diskFull")
    /// A file-system call failed.
    public static let io = Self("io")
    /// The metadata database failed.
    public static let database = Self("database")
    /// A name would write outside the output directory.
    public static let pathEscape = Self("pathEscape")
    /// A directory entry name is empty, contains "/" or NUL, or is "." or "..".
    public static let invalidName = Self("invalidName")
    /// The store's metadata and files disagree.
    public static let corruptStore = Self("corruptStore")
    /// An input is larger than a bound of the format.
    public static let tooLarge = Self("tooLarge")
    /// A store holds content but its publisher key is missing or unreadable (never replaced silently).
    public static let keyMissing = Self("keyMissing")
}
