/// An error from the content layer: a ``code`` to switch on and a reason written for a person.
///
/// Equality compares the code only, in the style of swift-certificates' `CertificateError`.
public struct ContentError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidArgument, malformed, unsupportedVersion, idMismatch, notFound, decryptionFailed
            case compressionFailed, diskFull, io, database, pathEscape, invalidName, corruptStore, tooLarge, keyMissing
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// A parameter was out of its documented range.
        public static let invalidArgument = Code(.invalidArgument)
        /// Bytes could not be decoded (truncated, bad magic, lengths out of bounds, trailing garbage).
        public static let malformed = Code(.malformed)
        /// The format version is newer than this build understands.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// Bytes do not hash to the id they were requested or announced under.
        public static let idMismatch = Code(.idMismatch)
        /// The requested chunk, manifest or pin is not in the store.
        public static let notFound = Code(.notFound)
        /// A chunk or key table did not authenticate with the key at hand.
        public static let decryptionFailed = Code(.decryptionFailed)
        /// zstd failed to compress or decompress.
        public static let compressionFailed = Code(.compressionFailed)
        /// The disk holding the store is full.
        public static let diskFull = Code(.diskFull)
        /// A file-system call failed.
        public static let io = Code(.io)
        /// The metadata database failed.
        public static let database = Code(.database)
        /// A name would write outside the output directory.
        public static let pathEscape = Code(.pathEscape)
        /// A directory entry name is empty, contains "/" or NUL, or is "." or "..".
        public static let invalidName = Code(.invalidName)
        /// The store's metadata and files disagree.
        public static let corruptStore = Code(.corruptStore)
        /// An input is larger than a bound of the format.
        public static let tooLarge = Code(.tooLarge)
        /// A store holds content but its publisher key is missing or unreadable (never replaced silently).
        public static let keyMissing = Code(.keyMissing)
        /// The code's name.
        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public let code: Code
    /// What went wrong and what to do about it.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// "code: reason".
    public var description: String { "\(code): \(reason)" }

    /// Compares codes only.
    public static func == (a: ContentError, b: ContentError) -> Bool { a.code == b.code }
    /// Hashes the code only.
    public func hash(into h: inout Hasher) { h.combine(code) }
}
