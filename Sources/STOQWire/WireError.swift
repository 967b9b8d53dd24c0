import STOQErrors

/// A malformed or unacceptable frame or message.
///
/// Decoders never trap on bad input: every length is bounded and every failure is one of these.
/// Compare by ``code``; ``reason`` says what was wrong.
public typealias WireError = CodedError<WireErrorDomain>

/// The family of ``WireError``.
public enum WireErrorDomain: CodedErrorDomain {}

/// The kinds of failure of ``WireError``. New codes may be added.
extension ErrorCode where Domain == WireErrorDomain {
    /// The input ended inside a frame or field.
    public static let truncated = Self("truncated")
    /// A length exceeds its bound.
    public static let tooLong = Self("tooLong")
    /// A field has a value it may not have.
    public static let malformed = Self("malformed")
    /// A frame type this side does not know and may not ignore.
    public static let unknownType = Self("unknownType")
    /// A payload has bytes left over after its last field.
    public static let trailingBytes = Self("trailingBytes")
    /// The peer speaks a protocol version this side does not.
    public static let unsupportedVersion = Self("unsupportedVersion")
}
