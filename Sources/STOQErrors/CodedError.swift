/// # STOQErrors
///
/// The one error pattern every module of this package shares, in the style of swift-certificates'
/// growable error codes: a ``CodedError`` carries an ``ErrorCode`` that callers compare or switch
/// on, a reason written for a person (what happened, and where possible what to do next), and the
/// place that raised it. Each module names its own error type as a specialisation, for example
/// `public typealias IdentityError = CodedError<IdentityErrorDomain>`, and declares its codes as
/// constants in a constrained extension of ``ErrorCode``, so new codes can be added without
/// breaking anyone's `switch` (which needs a `default`).
///
/// Must not import anything: every module of the package depends on this one.
public enum STOQErrorsModule {}

/// The family an error belongs to (one per module): how its errors print.
public protocol CodedErrorDomain: Sendable {
    /// The text of an error of this family, from its code's name and its reason
    /// (default: the reason alone, since it reaches users inside other messages).
    static func describe(code: String, reason: String) -> String
}

extension CodedErrorDomain {
    /// The reason alone (the code is for matching, not for people).
    public static func describe(code: String, reason: String) -> String { reason }
}

/// A kind of failure in `Domain`: compared by name, and growable (a module adds a code by
/// declaring another constant).
public struct ErrorCode<Domain>: Hashable, Sendable, CustomStringConvertible {
    /// The code's name as it prints (`notFound`).
    public let name: String

    /// Declares a code; a module does this once per code, in a constrained extension:
    /// `extension ErrorCode where Domain == WireErrorDomain { public static let truncated = Self("truncated") }`.
    public init(_ name: String) { self.name = name }

    /// The code's name.
    public var description: String { name }
}

/// An error of `Domain`: a ``code`` to compare or switch on and a ``reason`` for people.
///
/// Two errors are equal when their codes are (the reason is for people, not for matching).
public struct CodedError<Domain: CodedErrorDomain>: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kinds of failure of this domain.
    public typealias Code = ErrorCode<Domain>

    /// What kind of failure this is.
    public let code: Code
    /// What went wrong and, where possible, what to do next: written for a person.
    public let reason: String
    /// The source file that raised the error.
    public let file: String
    /// The source line that raised the error.
    public let line: UInt

    /// Creates an error.
    /// - Parameters:
    ///   - code: the kind of failure.
    ///   - reason: what went wrong and what to do next, for a person.
    public init(_ code: Code, _ reason: String, file: String = #fileID, line: UInt = #line) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// As the domain prints it (by default the reason alone).
    public var description: String { Domain.describe(code: code.name, reason: reason) }

    /// Compares codes only.
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    /// Hashes the code only.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
