import STOQErrors

/// An error from creating, loading or checking keys and certificates.
///
/// Compare errors by ``code``; ``reason`` is for people.
public typealias IdentityError = CodedError<IdentityErrorDomain>

/// The family of ``IdentityError``.
public enum IdentityErrorDomain: CodedErrorDomain {}

/// The kinds of failure of ``IdentityError``. New codes may be added.
extension ErrorCode where Domain == IdentityErrorDomain {
    /// Bytes that should be a node id are not 32 bytes long.
    public static let malformedNodeID = Self("malformedNodeID")
    /// A certificate could not be parsed (PEM or DER).
    public static let malformedCertificate = Self("malformedCertificate")
    /// A private key could not be parsed, or is of an unsupported type.
    public static let malformedKey = Self("malformedKey")
    /// A certificate or key file does not exist.
    public static let fileNotFound = Self("fileNotFound")
    /// A certificate or key file exists but cannot be read.
    public static let fileUnreadable = Self("fileUnreadable")
    /// A certificate or key file cannot be written.
    public static let fileUnwritable = Self("fileUnwritable")
    /// A node or CA name is empty or has characters that do not belong in a name.
    public static let invalidName = Self("invalidName")
    /// A validity period is zero, negative, or too long.
    public static let invalidValidity = Self("invalidValidity")
    /// A certificate chain does not verify against the trust roots.
    public static let untrusted = Self("untrusted")
    /// A private key does not belong to the certificate it is paired with.
    public static let keyMismatch = Self("keyMismatch")
}
