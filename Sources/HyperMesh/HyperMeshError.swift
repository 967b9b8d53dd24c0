import Foundation

/// An error raised by HyperMesh: erasure coding, block encoding, manifests, placement and receipts.
///
/// Shaped like swift-certificates' errors: a ``code`` that callers switch on, and a human ``reason``
/// that says what went wrong and what to do. Two errors are equal when their codes are equal.
///
/// Its ``description`` (and ``errorDescription``, which the command line prints) is the reason
/// alone: words for the person who reads it, never a type name.
public struct HyperMeshError: Error, Hashable, CustomStringConvertible, LocalizedError, Sendable {
    /// What kind of failure this is.
    public let code: Code
    /// A human explanation, fit to show a user.
    public let reason: String
    /// Source file that raised the error.
    public let file: String
    /// Source line that raised the error.
    public let line: UInt

    /// Creates an error.
    /// - Parameters:
    ///   - code: the failure kind.
    ///   - reason: a human explanation.
    public init(_ code: Code, _ reason: String, file: String = #fileID, line: UInt = #line) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// The reason: what went wrong and what to do (``code`` is for programs, not people).
    public var description: String { reason }

    /// The reason, for `LocalizedError` users such as the command line's error printer.
    public var errorDescription: String? { reason }

    public static func == (lhs: HyperMeshError, rhs: HyperMeshError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// The kinds of HyperMesh failure. New codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case invalidParameters, shardSizeMismatch, notEnoughShards, shardCorrupted
            case singularMatrix, malformedManifest, decryptionFailed, noReaderKey
            case placementImpossible, invalidReceipt, blockIDMismatch, malformedReceipt
            case malformedMessage, peerFailed, unreachable, notFound, storage
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// k, m, a shard index or a size is out of range.
        public static let invalidParameters = Code(.invalidParameters)
        /// Shards given to the coder do not all have the same length.
        public static let shardSizeMismatch = Code(.shardSizeMismatch)
        /// Fewer than k shards are available, so the block cannot be rebuilt.
        public static let notEnoughShards = Code(.notEnoughShards)
        /// A shard's SHA-256 does not match the manifest.
        public static let shardCorrupted = Code(.shardCorrupted)
        /// ISA-L could not invert the decode matrix (should not happen with a Cauchy matrix).
        public static let singularMatrix = Code(.singularMatrix)
        /// A block manifest could not be decoded.
        public static let malformedManifest = Code(.malformedManifest)
        /// The block's ciphertext failed authentication, or the block key could not be unsealed.
        public static let decryptionFailed = Code(.decryptionFailed)
        /// The manifest holds no sealed key for this reader.
        public static let noReaderKey = Code(.noReaderKey)
        /// Not enough eligible nodes to place the shards.
        public static let placementImpossible = Code(.placementImpossible)
        /// A storage receipt's signature, signer or content does not verify.
        public static let invalidReceipt = Code(.invalidReceipt)
        /// The rebuilt block does not hash to its block id.
        public static let blockIDMismatch = Code(.blockIDMismatch)
        /// A storage receipt could not be decoded.
        public static let malformedReceipt = Code(.malformedReceipt)
        /// A HyperMesh request or answer could not be decoded.
        public static let malformedMessage = Code(.malformedMessage)
        /// A storage node refused or failed a request, or answered out of protocol.
        public static let peerFailed = Code(.peerFailed)
        /// A storage node could not be reached.
        public static let unreachable = Code(.unreachable)
        /// A shard, manifest or block record does not exist.
        public static let notFound = Code(.notFound)
        /// Reading or writing local files (shard store, block directory) failed.
        public static let storage = Code(.storage)

        public var description: String { "\(value)" }
    }
}
