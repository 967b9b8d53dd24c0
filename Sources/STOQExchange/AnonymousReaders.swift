import STOQTransport
import STOQWire

/// What a client without a certificate (an anonymous reader, `stoq node --public-read`) may ask
/// a node: PING, WANT/HAVE, GET_CHUNK, NAME_RESOLVE and CONTENT_KEY_REQUEST (which hands out the
/// read keys of public content only, as the HTTP front door does). Everything else (STATUS,
/// RELAY_OPEN, NAME_PUBLISH, INVALIDATE, gossip, purges, the DHT, uploads) is answered with
/// ERROR ``forbiddenCode`` and the stream is closed; the connection stays up.
public enum AnonymousReaders {
    /// ERROR code 5, "forbidden": the asker (an identity, or an anonymous reader) may not make
    /// this request. Shared with uploads (docs/PROTOCOL.md, ERROR codes).
    public static let forbiddenCode: UInt64 = 5
    /// The frame types an anonymous reader may send.
    public static let allowedFrameTypes: Set<UInt64> = [
        STOQMessage.Types.ping.rawValue, STOQMessage.Types.have.rawValue, STOQMessage.Types.want.rawValue,
        STOQMessage.Types.getChunk.rawValue, STOQMessage.Types.nameResolve.rawValue,
        ContentAccessMessage.Types.contentKeyRequest.rawValue,
    ]

    /// Whether `connection`'s peer presented no certificate.
    public static func isAnonymous(_ connection: Connection) -> Bool { connection.peerCertificateChain.isEmpty }

    /// The ERROR message a refused anonymous request gets.
    public static func refusal(_ type: FrameType) -> String {
        let names: [UInt64: String] = [
            0x0A: "STATUS", 0x12: "RELAY_OPEN", 0x0F: "NAME_PUBLISH", 0x08: "INVALIDATE", 0x11: "ROUTING_GOSSIP",
            0x15: "PURGE", 0x17: "PURGE_SUBSCRIBE", 0x01: "HELLO",
        ]
        let name = names[type.rawValue].map { "\($0) (\(type))" } ?? "request type \(type)"
        return "forbidden: a reader without a certificate may only PING, WANT, GET_CHUNK, NAME_RESOLVE and CONTENT_KEY_REQUEST; \(name) needs a node certificate issued by the network's CA"
    }
}
