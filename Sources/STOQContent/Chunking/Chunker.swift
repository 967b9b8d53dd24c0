/// Something that finds the first cut point in a buffer that starts at a chunk boundary.
///
/// Conformers must be deterministic: the result may depend only on the bytes given
/// (up to `maxSize` of them), which is what makes parallel chunking re-synchronise.
public protocol Chunker: Sendable {
    /// The largest chunk this chunker makes.
    var maxSize: Int { get }
    /// Length of the first chunk of `buffer` (the whole buffer if it is shorter than `maxSize`
    /// and no cut point is found; callers pass at least `maxSize` bytes unless at end of input).
    func cut(_ buffer: UnsafeRawBufferPointer) -> Int
}

extension FastCDC: Chunker {}

/// Fixed-size chunking: the baseline in benchmarks and the fallback when content-defined
/// chunking buys nothing (e.g. media that is rewritten whole).
public struct FixedSizeChunker: Chunker, Equatable {
    /// Every chunk's size except possibly the last.
    public let size: Int
    /// Same as `size`.
    public var maxSize: Int { size }

    /// Creates a fixed-size chunker.
    /// - Parameter size: chunk size in bytes, 64 B ... 16 MiB.
    /// - Throws: ``ContentError/Code/invalidArgument`` when out of range.
    public init(size: Int) throws {
        guard (64...(16 << 20)).contains(size) else {
            throw ContentError(.invalidArgument, "fixed chunk size must be 64 B ... 16 MiB, got \(size)")
        }
        self.size = size
    }

    /// `min(buffer.count, size)`.
    public func cut(_ buffer: UnsafeRawBufferPointer) -> Int { min(buffer.count, size) }
}

/// Chooses a chunker for a content type.
///
/// Text and archives (whose versions differ by small edits) get small chunks for dedup;
/// already-compressed media (rewritten whole on any change) get large chunks, which
/// keeps manifests short. The table is keyed by MIME type, exact or `major/*`.
public struct ChunkingPolicy: Sendable, Equatable {
    /// Average chunk size by MIME type (`text/plain`) or family (`text/*`).
    public var averages: [String: Int]
    /// Average when nothing in the table matches.
    public var defaultAverage: Int
    /// Smallest chunk.
    public var minSize: Int
    /// Largest chunk.
    public var maxSize: Int
    /// Normalization level.
    public var level: Int

    /// The STOQ defaults: min 4 KiB, max 1 MiB, NC level 2; 8 KiB for text and archives,
    /// 16 KiB by default, 128 KiB for compressed archives and 256 KiB for images, audio and video.
    public static let standard = ChunkingPolicy(
        averages: [
            "text/*": 8192,
            "application/x-tar": 8192,
            "application/json": 8192,
            "application/xml": 8192,
            "application/gzip": 131_072,
            "application/zstd": 131_072,
            "application/x-xz": 131_072,
            "application/zip": 65536,
            "application/vnd.debian.binary-package": 65536,
            "image/*": 262_144,
            "audio/*": 262_144,
            "video/*": 262_144,
        ],
        defaultAverage: 16384, minSize: 4096, maxSize: 1 << 20, level: 2)

    /// Creates a policy.
    public init(averages: [String: Int], defaultAverage: Int, minSize: Int, maxSize: Int, level: Int) {
        self.averages = averages
        self.defaultAverage = defaultAverage
        self.minSize = minSize
        self.maxSize = maxSize
        self.level = level
    }

    /// The average chunk size for `contentType`.
    public func average(for contentType: String) -> Int {
        if let a = averages[contentType] { return a }
        if let slash = contentType.firstIndex(of: "/"), let a = averages[contentType[..<slash] + "/*"] { return a }
        return defaultAverage
    }

    /// The FastCDC chunker for `contentType`.
    /// - Throws: ``ContentError/Code/invalidArgument`` if the table holds an average outside min...max.
    public func chunker(for contentType: String) throws -> FastCDC {
        try FastCDC(minSize: minSize, avgSize: min(max(average(for: contentType), minSize), maxSize), maxSize: maxSize, level: level)
    }
}

/// A small content-type sniffer: by file extension, then by magic bytes.
public enum ContentType {
    static let byExtension: [String: String] = [
        "txt": "text/plain", "md": "text/markdown", "c": "text/x-c", "h": "text/x-c", "swift": "text/x-swift",
        "py": "text/x-python", "sh": "text/x-shellscript", "html": "text/html", "css": "text/css", "csv": "text/csv",
        "json": "application/json", "xml": "application/xml", "tar": "application/x-tar", "gz": "application/gzip",
        "tgz": "application/gzip", "zst": "application/zstd", "xz": "application/x-xz", "zip": "application/zip",
        "deb": "application/vnd.debian.binary-package", "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
        "gif": "image/gif", "webp": "image/webp", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac",
        "mp4": "video/mp4", "mkv": "video/x-matroska", "webm": "video/webm",
    ]

    /// Guesses the MIME type of a file from its name and first bytes.
    /// - Parameters:
    ///   - name: the file name (only its extension is used).
    ///   - head: up to the first 512 bytes.
    public static func guess(name: String, head: [UInt8]) -> String {
        if let dot = name.lastIndex(of: "."), let t = byExtension[name[name.index(after: dot)...].lowercased()] { return t }
        if head.starts(with: [0x1F, 0x8B]) { return "application/gzip" }
        if head.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return "application/zstd" }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "image/png" }
        if head.starts(with: Array("!<arch>".utf8)) { return "application/vnd.debian.binary-package" }
        if !head.isEmpty, !head.contains(0), String(validating: head, as: UTF8.self) != nil { return "text/plain" }
        return "application/octet-stream"
    }
}
