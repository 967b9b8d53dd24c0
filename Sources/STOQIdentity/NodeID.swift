import Crypto
import SwiftASN1
import X509

/// The identity of a STOQ node: the SHA-256 digest of its certificate's DER-encoded
/// SubjectPublicKeyInfo.
///
/// A node id names a key, not a certificate: a renewed certificate for the same key keeps the id,
/// and nobody can claim an id without holding the private key (the TLS handshake proves it).
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The 32 bytes of the digest.
    public let bytes: [UInt8]

    /// The number of bytes in a node id.
    public static let byteCount = 32

    /// Wraps 32 raw bytes.
    /// - Throws: ``IdentityError/malformedNodeID`` when `bytes` is not 32 bytes long.
    public init(bytes: some Sequence<UInt8>) throws(IdentityError) {
        let array = Array(bytes)
        guard array.count == Self.byteCount else {
            throw IdentityError(.malformedNodeID, "a node id has \(Self.byteCount) bytes, got \(array.count)")
        }
        self.bytes = array
    }

    /// The node id of a public key.
    public init(publicKey: Certificate.PublicKey) {
        var serializer = DER.Serializer()
        // Serializing a parsed public key cannot fail: it was decoded from (or built as) valid DER.
        try! serializer.serialize(publicKey)
        self.init(subjectPublicKeyInfoDER: serializer.serializedBytes)
    }

    /// The node id of a DER-encoded SubjectPublicKeyInfo.
    public init(subjectPublicKeyInfoDER der: some Sequence<UInt8>) {
        self.bytes = Array(SHA256.hash(data: Array(der)))
    }

    /// The node id of the key in a DER-encoded X.509 certificate.
    /// - Throws: ``IdentityError/malformedCertificate`` when the bytes are not a certificate.
    public init(certificateDER der: [UInt8]) throws(IdentityError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw IdentityError(.malformedCertificate, "cannot parse the peer certificate: \(error)")
        }
        self.init(publicKey: certificate.publicKey)
    }

    /// The node id of a TLS peer's leaf certificate (DER), without a full X.509 parse when the key
    /// is the usual one.
    ///
    /// For a certificate whose SubjectPublicKeyInfo is a P-256 key in its one canonical DER form
    /// (ecPublicKey, namedCurve prime256v1, uncompressed point: the keys STOQ issues) the id is the
    /// SHA-256 of those 91 bytes, found by walking the certificate's outer DER headers: these are
    /// the bytes ``init(certificateDER:)`` would re-serialize, so the id is the same. Any other key
    /// or layout takes ``init(certificateDER:)``.
    ///
    /// Only for a certificate the TLS handshake has already accepted: the handshake parsed it and
    /// checked a signature (CertificateVerify) made with this key, so the point is on the curve,
    /// which the full parse would otherwise check. Server handshakes used to spend about a tenth
    /// of their CPU re-parsing the client's certificate here.
    public init(handshakeCertificateDER der: [UInt8]) throws(IdentityError) {
        if let spki = Self.p256SubjectPublicKeyInfo(in: der) {
            self.init(subjectPublicKeyInfoDER: der[spki])
        } else {
            try self.init(certificateDER: der)
        }
    }

    /// DER header of a P-256 SubjectPublicKeyInfo with an uncompressed point (RFC 5480): 27 bytes,
    /// then the 64 bytes of X and Y.
    static let p256SPKIPrefix: [UInt8] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,
        0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
    ]

    /// The byte range of the SubjectPublicKeyInfo of `der` when it is a canonical P-256 key;
    /// nil for anything else (another key type, a malformed header, lengths past the end).
    static func p256SubjectPublicKeyInfo(in der: [UInt8]) -> Range<Int>? {
        // One TLV header at i: (tag, start of contents, end of element), bounded by `limit`.
        func header(_ i: Int, _ limit: Int) -> (tag: UInt8, body: Int, end: Int)? {
            guard i + 2 <= limit else { return nil }
            let tag = der[i]
            let first = Int(der[i + 1])
            var length = 0, body = i + 2
            if first < 0x80 {
                length = first
            } else {
                let n = first & 0x7F
                guard n >= 1, n <= 3, body + n <= limit else { return nil }
                for k in 0..<n { length = length << 8 | Int(der[body + k]) }
                body += n
            }
            guard length <= limit - body else { return nil }
            return (tag, body, body + length)
        }
        guard let cert = header(0, der.count), cert.tag == 0x30, cert.end == der.count,
              let tbs = header(cert.body, cert.end), tbs.tag == 0x30 else { return nil }
        var i = tbs.body
        if let version = header(i, tbs.end), version.tag == 0xA0 { i = version.end }
        // serialNumber, signature, issuer, validity, subject
        for tag: UInt8 in [0x02, 0x30, 0x30, 0x30, 0x30] {
            guard let field = header(i, tbs.end), field.tag == tag else { return nil }
            i = field.end
        }
        guard let spki = header(i, tbs.end), spki.tag == 0x30, spki.end - i == 91,
              der[i..<(i + Self.p256SPKIPrefix.count)].elementsEqual(Self.p256SPKIPrefix) else { return nil }
        return i..<spki.end
    }

    /// Parses the 64-character lowercase or uppercase hex form.
    public init?(hex: String) {
        guard let decoded = Hex.decode(hex), decoded.count == Self.byteCount else { return nil }
        self.bytes = decoded
    }

    /// The full id in lowercase hex (64 characters).
    public var hex: String { Hex.encode(bytes) }

    /// The first 8 bytes in hex: enough to tell nodes apart in logs and tables.
    public var short: String { Hex.encode(bytes.prefix(8)) }

    public var description: String { short }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}

/// Hexadecimal: lowercase out, either case in. The package's one hex codec (ids, keys, digests,
/// logs in every module and the CLI); it lives here, in the lowest module all of them import.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Encodes bytes as lowercase hex.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes hex (either case); `nil` on odd length or a non-hex character.
    public static func decode(_ string: String) -> [UInt8]? {
        let utf8 = Array(string.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
