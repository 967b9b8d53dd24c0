import Crypto
import Foundation
import STOQIdentity

/// The identity of a stored chunk: the SHA-256 digest of the bytes a store holds for it.
///
/// Stores hold ciphertext (see ``ConvergentCipher``), so any node can check a chunk it
/// receives against its id without holding the key. The id is a value type of four
/// machine words so it hashes and compares without allocating.
public struct ChunkID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The 32 digest bytes as four big-endian words.
    @usableFromInline let w0, w1, w2, w3: UInt64

    /// Creates an id from exactly 32 digest bytes.
    /// - Parameter bytes: a collection of 32 bytes; returns nil for any other length.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 32 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        var i = 0
        for b in bytes {
            words[i >> 3] = (words[i >> 3] << 8) | UInt64(b)
            i += 1
        }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// Creates an id from a SHA-256 digest.
    public init(digest: SHA256.Digest) {
        self.init(bytes: digest.withUnsafeBytes { Array($0) })!
    }

    /// The SHA-256 id of `bytes`.
    /// - Parameter bytes: the stored bytes of a chunk.
    public static func of<D: DataProtocol>(_ bytes: D) -> ChunkID {
        ChunkID(digest: SHA256.hash(data: bytes))
    }

    /// The SHA-256 id of the bytes in a raw buffer.
    public static func of(_ buffer: UnsafeRawBufferPointer) -> ChunkID {
        var h = SHA256()
        h.update(bufferPointer: buffer)
        return ChunkID(digest: h.finalize())
    }

    /// The 32 digest bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) }
        }
        return out
    }

    /// Lowercase hex of all 32 bytes (64 characters).
    public var hex: String { Hex.encode(bytes) }

    /// The first 12 hex characters, for logs and listings.
    public var short: String { String(hex.prefix(12)) }

    /// Parses 64 hex characters.
    /// - Parameter hex: the lowercase or uppercase hex form.
    public init?(hex: String) {
        guard let b = Hex.decode(hex), b.count == 32 else { return nil }
        self.init(bytes: b)
    }

    /// The hex form.
    public var description: String { hex }

    /// Orders ids by their bytes.
    public static func < (a: ChunkID, b: ChunkID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}
