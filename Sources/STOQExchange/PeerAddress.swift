/// An IPv6 socket address written `[ADDR]:PORT`.
public struct PeerAddress: Hashable, Sendable, Codable, CustomStringConvertible, LosslessStringConvertible {
    /// The IPv6 address (no brackets) or host name.
    public var host: String
    /// The UDP port.
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `[ADDR]:PORT`; `nil` for anything else (IPv4 included: STOQ is IPv6-only).
    public init?(_ text: String) {
        guard text.hasPrefix("["), let close = text.firstIndex(of: "]") else { return nil }
        let host = String(text[text.index(after: text.startIndex)..<close])
        let rest = text[text.index(after: close)...]
        guard host.contains(":"), rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { "[\(host)]:\(port)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = PeerAddress(text) else {
            throw NodeError(.invalidArgument, "'\(text)' is not an IPv6 address like [::1]:4433 (STOQ is IPv6-only)")
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
