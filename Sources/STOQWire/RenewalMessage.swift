import NIOCore

/// Certificate renewal over `stoq/1` (docs/PROTOCOL.md, "Certificate renewal"): a node that
/// authenticated with its current, still-valid certificate asks the network's issuer for a new
/// one with the same subject (name and region) and subject alternative names.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x20 | RENEW_REQUEST | `lifetimeSeconds:varint` `publicKey:bytes (≤ 256)` `signature:bytes (≤ 160)` |
/// | 0x21 | RENEWED | `count:varint (1–4)` then `count` × `certificate:bytes (DER, ≤ 8192)`, leaf first |
///
/// `lifetimeSeconds` 0 asks for the longest lifetime the issuer grants. An empty `publicKey`
/// keeps the key of the certificate the connection was authenticated with; a new key (key
/// rotation) is a DER SubjectPublicKeyInfo of a P-256 key, and `signature` is that key's
/// ECDSA/SHA-256 signature (DER) over the ASCII label `STOQ certificate renewal v1`, a zero byte,
/// the SHA-256 of the DER leaf the connection was authenticated with, and `publicKey`.
/// A refusal is an ERROR frame with code ``RenewalMessage/refusedCode`` (6, "renewal refused").
public enum RenewalMessage: Hashable, Sendable {
    /// Asks for a new certificate.
    case renewRequest(RenewRequest)
    /// The new certificate chain, DER, leaf first.
    case renewed(certificates: [[UInt8]])

    /// RENEW_REQUEST contents.
    public struct RenewRequest: Hashable, Sendable {
        /// The lifetime wanted, in seconds (0: the longest the issuer grants).
        public var lifetimeSeconds: UInt64
        /// A new public key (DER SubjectPublicKeyInfo), or empty to keep the current one.
        public var publicKey: [UInt8]
        /// The new key's signature proving possession (empty when ``publicKey`` is empty).
        public var signature: [UInt8]

        /// Creates a request.
        public init(lifetimeSeconds: UInt64, publicKey: [UInt8] = [], signature: [UInt8] = []) {
            self.lifetimeSeconds = lifetimeSeconds
            self.publicKey = publicKey
            self.signature = signature
        }
    }

    /// Frame types.
    public enum Types {
        public static let renewRequest = FrameType(rawValue: 0x20)
        public static let renewed = FrameType(rawValue: 0x21)
    }

    /// ERROR code of a refused renewal ("renewal refused"); the message says why.
    public static let refusedCode: UInt64 = 6
    /// The longest lifetime a request may name: 100 years.
    public static let maximumLifetimeSeconds: UInt64 = 100 * 365 * 86_400
    /// The longest public key (a P-256 SubjectPublicKeyInfo is 91 bytes).
    public static let maximumPublicKeyLength = 256
    /// The longest signature (a DER P-256 ECDSA signature is at most 72 bytes).
    public static let maximumSignatureLength = 160
    /// The most certificates in a RENEWED chain.
    public static let maximumChainLength = 4
    /// The longest certificate in a RENEWED chain.
    public static let maximumCertificateLength = 8192
    /// The most bytes a RENEW_REQUEST payload holds.
    public static let maximumRequestLength = 8 + 2 + maximumPublicKeyLength + 2 + maximumSignatureLength
    /// The most bytes a RENEWED payload holds.
    public static let maximumAnswerLength = 1 + maximumChainLength * (2 + maximumCertificateLength)

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x20...0x21).contains(type.rawValue) }

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .renewRequest(let r):
            type = Types.renewRequest
            w.varint(min(r.lifetimeSeconds, Self.maximumLifetimeSeconds))
            w.lengthPrefixedBytes(r.publicKey.prefix(Self.maximumPublicKeyLength))
            w.lengthPrefixedBytes(r.signature.prefix(Self.maximumSignatureLength))
        case .renewed(let certificates):
            type = Types.renewed
            let chain = certificates.prefix(Self.maximumChainLength)
            w.varint(UInt64(chain.count))
            for c in chain { w.lengthPrefixedBytes(c.prefix(Self.maximumCertificateLength)) }
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes one of these frames, checking every bound.
    /// - Throws: ``WireError`` for a malformed payload, or `.unknownType` for a frame of another type.
    public static func decode(_ frame: Frame) throws(WireError) -> RenewalMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: RenewalMessage
        switch frame.type {
        case Types.renewRequest:
            let lifetime = try r.varint("lifetimeSeconds", max: maximumLifetimeSeconds)
            let key = try r.lengthPrefixedBytes("publicKey", max: maximumPublicKeyLength)
            let signature = try r.lengthPrefixedBytes("signature", max: maximumSignatureLength)
            guard key.isEmpty == signature.isEmpty else {
                throw WireError(.malformed, "RENEW_REQUEST: a new public key needs its signature, and a signature needs a key")
            }
            message = .renewRequest(RenewRequest(lifetimeSeconds: lifetime, publicKey: key, signature: signature))
        case Types.renewed:
            let count = try r.varint("count", max: UInt64(maximumChainLength))
            guard count > 0 else { throw WireError(.malformed, "RENEWED holds no certificate") }
            var chain: [[UInt8]] = []
            for _ in 0..<count {
                let der = try r.lengthPrefixedBytes("certificate", max: maximumCertificateLength)
                guard !der.isEmpty else { throw WireError(.malformed, "RENEWED holds an empty certificate") }
                chain.append(der)
            }
            message = .renewed(certificates: chain)
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not a renewal message")
        }
        try r.finish()
        return message
    }

    /// Fuzz entry point: decodes arbitrary bytes as RENEW_REQUEST and RENEWED payloads and traps
    /// only if a decoded message does not survive a round trip.
    public static func fuzz(_ bytes: [UInt8]) {
        for type in [Types.renewRequest, Types.renewed] {
            let frame = Frame(type: type, payload: ByteBuffer(bytes: bytes))
            guard let message = try? decode(frame) else { continue }
            precondition((try? decode(message.frame())) == message, "renewal round trip changed \(message)")
        }
    }
}
