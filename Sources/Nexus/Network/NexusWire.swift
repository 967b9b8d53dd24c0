import NIOCore
import STOQNode
import STOQWire

/// Nexus request types on a node's `stoq/1` request streams (DESIGN.md §3: Nexus owns 0x40–0x7f).
///
/// One request per bidirectional stream: the client writes one frame and finishes; the server
/// answers with one frame and finishes (or resets the stream with a ``ChunkErrorCode``).
public enum NexusFrameType {
    /// Every type Nexus answers.
    public static let range: ClosedRange<UInt64> = 0x40...0x7f
    /// A DHT request: ``DHTRequestEnvelope`` (sender record + ``DHTMessage``).
    public static let dhtRequest: UInt64 = 0x40
    /// The answer to ``dhtRequest``: one ``DHTMessage``.
    public static let dhtResponse: UInt64 = 0x41
    /// DHT requests and answers (``NexusService``).
    public static let dhtRange: ClosedRange<UInt64> = 0x40...0x4f
    // 0x50–0x5f: free (relaying moved down to STOQ's RELAY_OPEN 0x12, so it works without Nexus).
    /// An error answer: a UTF-8 message for people.
    public static let error: UInt64 = 0x7f
}

/// A DHT request as it crosses the wire: the sender's own ``NodeRecord`` and the message.
///
/// The receiving node checks that `sender.id` is the node id the QUIC handshake authenticated,
/// so a peer can only speak for itself. A sender with no addresses is a client: it is answered but
/// not added to routing tables.
///
/// Wire form: `NodeRecord | u16 length | DHTMessage`. Every length is bounded and trailing bytes are
/// refused, so ``decode(_:)`` is safe on arbitrary bytes and ``fuzz(_:)`` is its libFuzzer entry.
public struct DHTRequestEnvelope: Hashable, Sendable {
    /// Who sends it.
    public var sender: NodeRecord
    /// The request.
    public var message: DHTMessage

    /// The largest encoded envelope.
    public static let maxEncodedSize = DHTMessage.maxMessageSize + 512

    /// Creates an envelope.
    public init(sender: NodeRecord, message: DHTMessage) {
        self.sender = sender
        self.message = message
    }

    /// The canonical encoding.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 256)
        sender.encode(&w)
        w.medium(message.encode())
        return w.bytes
    }

    /// Decodes an envelope; throws ``NexusError`` for anything malformed or oversized.
    public static func decode(_ bytes: [UInt8]) throws(NexusError) -> DHTRequestEnvelope {
        guard bytes.count <= maxEncodedSize else {
            throw NexusError(.lengthLimitExceeded, "DHT request is \(bytes.count) bytes; at most \(maxEncodedSize)")
        }
        var r = ByteReader(bytes)
        let sender = try NodeRecord.decode(&r)
        let message = try DHTMessage.decode(try r.medium(max: DHTMessage.maxMessageSize, "DHT message"))
        try r.expectEnd("DHT request")
        return DHTRequestEnvelope(sender: sender, message: message)
    }

    /// Fuzz entry point: decoding never traps, and what decodes re-encodes to the same bytes.
    public static func fuzz(_ data: [UInt8]) {
        if let e = try? decode(data) { precondition(e.encode() == data, "DHT request encoding is not canonical") }
    }
}

extension NexusAddress {
    /// The same address as a STOQ peer address.
    public var peerAddress: PeerAddress { PeerAddress(description)! }

    /// Converts a STOQ peer address (IPv6 literal only).
    /// - Throws: ``NexusError`` `.invalidAddress` for a host name or an IPv4 address.
    public init(_ address: PeerAddress) throws(NexusError) {
        try self.init(parsing: address.description)
    }
}

/// Frames a Nexus message.
func nexusFrame(_ type: UInt64, _ bytes: [UInt8]) -> ByteBuffer {
    var out = ByteBuffer()
    Frame(type: FrameType(rawValue: type), payload: ByteBuffer(bytes: bytes)).encode(into: &out)
    return out
}
