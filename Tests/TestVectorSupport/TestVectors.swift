import Foundation
import STOQIdentity

/// The committed test vectors of `docs/PROTOCOL.md` (`docs/test-vectors/*.json`) as the suites
/// that check them read and rewrite them: snake-case keys, sorted, pretty-printed, one trailing
/// newline. A target, never a product, shared by every vector suite (wire, content tree, name
/// record, and the node's HAVE order) so they read and write the files one way.
public enum TestVectors {
    /// `docs/test-vectors`, found from this file's path.
    public static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("docs/test-vectors").path
    }()

    /// Whether a suite should rewrite its file instead of comparing (`STOQ_WRITE_VECTORS=1`, after
    /// a deliberate format change; say so in the commit).
    public static var rewriting: Bool { ProcessInfo.processInfo.environment["STOQ_WRITE_VECTORS"] == "1" }

    /// Reads `file` (a name in ``directory``, e.g. `wire.json`).
    public static func read<T: Decodable>(_ type: T.Type, from file: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(type, from: Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)))
    }

    /// Writes `value` to `file` in ``directory``, formatted as the committed files are.
    public static func write<T: Encodable>(_ value: T, to file: String) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(value)
        data.append(0x0A)
        try data.write(to: URL(fileURLWithPath: directory + "/" + file))
    }

    /// The bytes of a hex string from a vector file (the package's one codec, ``Hex``).
    /// - Throws: ``VectorFileError`` when the file holds something that is not hex.
    public static func bytes(_ hex: String) throws -> [UInt8] {
        guard let bytes = Hex.decode(hex) else {
            throw VectorFileError(description: "'\(hex.prefix(40))' in a file of \(directory) is not hex; regenerate it with STOQ_WRITE_VECTORS=1")
        }
        return bytes
    }
}

/// A vector file that does not hold what its suite expects.
public struct VectorFileError: Error, CustomStringConvertible {
    /// What is wrong and what to do.
    public let description: String
}
