// The only file in STOQContent that imports CZstd. It keeps the C calls behind two functions
// that take and return byte arrays, so HyperMesh can reuse it without touching pointers.
import CZstd

/// zstd compression (libzstd from Debian), as two safe functions.
public enum Zstd {
    /// An error from zstd, with the library's own message.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        /// What zstd said.
        public let reason: String
        /// The message.
        public var description: String { "zstd: \(reason)" }
    }

    /// The default level (3, zstd's own default).
    public static let defaultLevel: Int32 = 3

    /// Compresses `input` into one zstd frame (with its content size recorded).
    /// - Parameters:
    ///   - input: the bytes.
    ///   - level: 1...19 (default 3); negative levels are faster.
    /// - Returns: the frame.
    /// - Throws: ``Zstd/Error`` if libzstd fails.
    public static func compress(_ input: [UInt8], level: Int32 = defaultLevel) throws -> [UInt8] {
        try input.withUnsafeBytes { compress($0, level: level) }.get()
    }

    /// Compresses a raw buffer (used by the chunk pipeline to avoid a copy).
    static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = defaultLevel) -> Result<[UInt8], Error> {
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_compress(dst.baseAddress, bound, input.baseAddress, input.count, level)
        }
        if ZSTD_isError(n) != 0 { return .failure(Error(reason: String(cString: ZSTD_getErrorName(n)))) }
        out.removeSubrange(n...)
        return .success(out)
    }

    /// Decompresses one zstd frame.
    /// - Parameters:
    ///   - input: a frame made by ``compress(_:level:)`` (or any single frame recording its size).
    ///   - maxSize: refuse frames that declare (or produce) more than this many bytes.
    /// - Returns: the original bytes.
    /// - Throws: ``Zstd/Error`` on garbage, truncation, unknown size, or a frame larger than `maxSize`.
    public static func decompress(_ input: [UInt8], maxSize: Int) throws -> [UInt8] {
        let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        // ZSTD_CONTENTSIZE_UNKNOWN = UInt64.max, ZSTD_CONTENTSIZE_ERROR = UInt64.max - 1
        if size == UInt64.max { throw Error(reason: "frame does not record its content size") }
        if size == UInt64.max - 1 { throw Error(reason: "not a zstd frame") }
        guard size <= UInt64(maxSize) else { throw Error(reason: "frame declares \(size) bytes, more than the allowed \(maxSize)") }
        var out = [UInt8](repeating: 0, count: Int(size))
        let n = out.withUnsafeMutableBytes { dst in
            input.withUnsafeBytes { src in
                ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count)
            }
        }
        if ZSTD_isError(n) != 0 { throw Error(reason: String(cString: ZSTD_getErrorName(n))) }
        guard n == Int(size) else { throw Error(reason: "frame produced \(n) bytes, declared \(size)") }
        return out
    }
}
