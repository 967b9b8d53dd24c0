/// A validated DNS-like name: dot-separated labels of `a-z`, `0-9` and `-`.
///
/// Rules: 1…63 characters per label, no label starts or ends with `-`, at most 253 characters in
/// all, at most 16 labels. Upper-case input is folded to lower case so that one name has one
/// encoding; the decoder only accepts the canonical (lower-case) form.
public struct NexusName: Hashable, Sendable, CustomStringConvertible {
    /// The canonical text.
    public let text: String

    /// The most characters a name may have.
    public static let maxLength = 253

    /// Validates and canonicalises `text`.
    /// - Throws: ``NexusError`` `.invalidName` saying which rule failed.
    public init(_ text: String) throws(NexusError) {
        try self.init(canonical: text.lowercased())
    }

    init(canonical text: String) throws(NexusError) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maxLength else {
            throw NexusError(.invalidName, "a name must be 1…\(Self.maxLength) characters; '\(text.prefix(40))' has \(bytes.count)")
        }
        let labels = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard labels.count <= 16 else { throw NexusError(.invalidName, "a name may have at most 16 labels") }
        for label in labels {
            guard (1...63).contains(label.count) else {
                throw NexusError(.invalidName, "'\(text)': every label (between dots) must be 1…63 characters")
            }
            for c in label {
                let ok = (0x61...0x7A).contains(c) || (0x30...0x39).contains(c) || c == UInt8(ascii: "-")
                guard ok else { throw NexusError(.invalidName, "'\(text)': only a-z, 0-9, '-' and '.' are allowed") }
            }
            guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
                throw NexusError(.invalidName, "'\(text)': a label may not start or end with '-'")
            }
        }
        self.text = text
    }

    /// The DHT key of this name's record: SHA-256("stoq-name:" + name).
    public var key: NexusID { NexusHash.sha256(Array("stoq-name:\(text)".utf8)) }

    /// The name text.
    public var description: String { text }
}
