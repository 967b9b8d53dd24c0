import Foundation
import STOQErrors

/// An error raised by HyperMesh: erasure coding, block encoding, manifests, placement and receipts.
///
/// Shaped like swift-certificates' errors: a ``code`` that callers switch on, and a human ``reason``
/// that says what went wrong and what to do. Two errors are equal when their codes are equal.
public typealias HyperMeshError = CodedError<HyperMeshErrorDomain>

/// The family of ``HyperMeshError``.
public enum HyperMeshErrorDomain: CodedErrorDomain {
    /// The reason alone: words for the person who reads it (the CLI prints it), never a type name;
    /// ``CodedError/code`` is for programs.
    public static func describe(code: String, reason: String) -> String { reason }
}

/// The command line prints `errorDescription`: the reason.
extension CodedError: LocalizedError where Domain == HyperMeshErrorDomain {
    /// The reason.
    public var errorDescription: String? { reason }
}

/// The kinds of failure of ``HyperMeshError``. New codes may be added.
extension ErrorCode where Domain == HyperMeshErrorDomain {
    /// k, m, a shard index or a size is out of range.
    public static let invalidParameters = Self("invalidParameters")
    /// Shards given to the coder do not all have the same length.
    public static let shardSizeMismatch = Self("shardSizeMismatch")
    /// Fewer than k shards are available, so the block cannot be rebuilt.
    public static let notEnoughShards = Self("notEnoughShards")
    /// A shard's SHA-256 does not match the manifest.
    public static let shardCorrupted = Self("shardCorrupted")
    /// ISA-L could not invert the decode matrix (should not happen with a Cauchy matrix).
    public static let singularMatrix = Self("singularMatrix")
    /// A block manifest could not be decoded.
    public static let malformedManifest = Self("malformedManifest")
    /// The block's ciphertext failed authentication, or the block key could not be unsealed.
    public static let decryptionFailed = Self("decryptionFailed")
    /// The manifest holds no sealed key for this reader.
    public static let noReaderKey = Self("noReaderKey")
    /// Not enough eligible nodes to place the shards.
    public static let placementImpossible = Self("placementImpossible")
    /// A storage receipt's signature, signer or content does not verify.
    public static let invalidReceipt = Self("invalidReceipt")
    /// The rebuilt block does not hash to its block id.
    public static let blockIDMismatch = Self("blockIDMismatch")
    /// A storage receipt could not be decoded.
    public static let malformedReceipt = Self("malformedReceipt")
    /// A HyperMesh request or answer could not be decoded.
    public static let malformedMessage = Self("malformedMessage")
    /// A storage node refused or failed a request, or answered out of protocol.
    public static let peerFailed = Self("peerFailed")
    /// A storage node could not be reached.
    public static let unreachable = Self("unreachable")
    /// A shard, manifest or block record does not exist.
    public static let notFound = Self("notFound")
    /// Reading or writing local files (shard store, block directory) failed.
    public static let storage = Self("storage")
}
