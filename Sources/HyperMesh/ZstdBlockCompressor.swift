import STOQContent

/// The block pipeline's zstd step, through STOQContent's ``Zstd`` (HyperMesh touches no zstd pointers).
public struct ZstdBlockCompressor: BlockCompressor {
    /// The zstd level (default 3).
    public let level: Int32

    /// Creates the compressor.
    /// - Parameter level: zstd level, 1...19 (default 3); negative levels are faster.
    public init(level: Int32 = Zstd.defaultLevel) { self.level = level }

    public var id: UInt8 { BlockCompressionID.zstd }

    public func compress(_ bytes: [UInt8]) throws -> [UInt8] { try Zstd.compress(bytes, level: level) }

    /// Decompresses, refusing frames that declare more than `originalLength` bytes.
    public func decompress(_ bytes: [UInt8], originalLength: Int) throws -> [UInt8] {
        try Zstd.decompress(bytes, maxSize: originalLength)
    }
}
