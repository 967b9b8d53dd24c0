import STOQErrors

/// An error from a STOQ node component (servers, fetchers, the node runtime).
///
/// Compare by ``code``; ``reason`` says what went wrong and what to do.
public typealias NodeError = CodedError<NodeErrorDomain>

/// The family of ``NodeError``.
public enum NodeErrorDomain: CodedErrorDomain {
    /// The reason alone (node errors are printed to operators as they are).
    public static func describe(code: String, reason: String) -> String { reason }
}

/// The kinds of failure of ``NodeError``. New codes may be added.
extension ErrorCode where Domain == NodeErrorDomain {
    /// A caller passed an unusable value.
    public static let invalidArgument = Self("invalidArgument")
    /// A file, chunk or content id is not there.
    public static let notFound = Self("notFound")
    /// The peer refused the request.
    public static let refused = Self("refused")
    /// Bytes did not match their id.
    public static let corrupt = Self("corrupt")
    /// The peer broke the wire protocol.
    public static let protocolViolation = Self("protocolViolation")
    /// No source could serve the request.
    public static let unavailable = Self("unavailable")
    /// The local store could not take a verified chunk (e.g. the disk is full).
    public static let storeFailed = Self("storeFailed")
}
