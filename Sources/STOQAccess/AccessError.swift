import STOQErrors

/// An error from building, reading or checking an access grant or a revocation list.
///
/// Compare errors by ``code``; ``reason`` is for people.
public typealias AccessError = CodedError<AccessErrorDomain>

/// The family of ``AccessError``.
public enum AccessErrorDomain: CodedErrorDomain {}

/// The kinds of failure of ``AccessError``. New codes may be added.
extension ErrorCode where Domain == AccessErrorDomain {
    /// The bytes or text are not a grant (or revocation list), or break a bound.
    public static let malformed = Self("malformed")
    /// A signature, the certificate or the publisher id does not check out.
    public static let badSignature = Self("badSignature")
    /// The grant's not-after time has passed.
    public static let expired = Self("expired")
    /// The grant's publisher revoked it.
    public static let revoked = Self("revoked")
    /// The grant is bound to another peer.
    public static let wrongPeer = Self("wrongPeer")
    /// The grant does not carry the right, or its scope does not cover the request.
    public static let notCovered = Self("notCovered")
    /// A narrowing would widen the grant, or the holder lacks the key to narrow it.
    public static let invalidNarrowing = Self("invalidNarrowing")
}

/// Lowercase base32 without padding (RFC 4648 alphabet, `a`–`z`, `2`–`7`): the text form of grants.
enum Base32 {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = (buffer << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 {
            let v: UInt32
            switch c {
            case 97...122: v = UInt32(c - 97)
            case 50...55: v = UInt32(c - 50 + 26)
            default: return nil
            }
            buffer = (buffer << 5) | v
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xff))
                bits -= 8
            }
        }
        // Leftover bits must be zero padding of fewer than 5 bits.
        guard bits < 5, buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}
