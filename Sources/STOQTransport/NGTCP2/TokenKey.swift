import CNgtcp2
import CNgtcp2Shims
import Crypto
import Foundation
import STOQIdentity
import X509

/// A P-256 private key in a PKCS#11 token (a hardware security module, a smart card, SoftHSM2),
/// named by an RFC 7512 `pkcs11:` URI and used through GnuTLS's PKCS#11 support: it signs inside
/// the token and is never read out.
///
/// Modules: p11-kit's configured ones (Debian's `softhsm2` registers itself), or only the one in
/// `STOQ_PKCS11_MODULE` when that is set. PIN: the URI's `pin-value=` or `pin-source=`, else
/// `STOQ_PKCS11_PIN`. `@unchecked Sendable`: the GnuTLS key is used under a lock.
public final class TokenKey: CertificateSigner, @unchecked Sendable {
    /// The URI, without a PIN (for messages).
    public let uri: String
    /// The public key, DER SubjectPublicKeyInfo.
    public let publicKeyDER: [UInt8]
    /// The public key.
    public let publicKey: Certificate.PublicKey
    private let raw: gnutls_privkey_t
    private let lock = NSLock()

    /// Opens the key `uri` names.
    /// - Throws: ``STOQError`` `.invalidArgument` saying what failed (no such object, a wrong or
    ///   missing PIN, not a P-256 key).
    public init(uri: String) throws(STOQError) {
        let shown = PKCS11URI.redacted(uri)
        guard PKCS11URI.isURI(uri) else {
            throw STOQError(.invalidArgument, "\(uri) is not a PKCS#11 URI; a key in a token is named like 'pkcs11:token=NAME;object=LABEL;type=private'")
        }
        var key: gnutls_privkey_t?
        let rv = stoq_pkcs11_privkey_open(&key, uri)
        guard rv == 0, let key else { throw Self.error(rv, "cannot open the key \(shown)") }
        var der = [UInt8](repeating: 0, count: 512)
        let n = stoq_privkey_public_der(key, &der, der.count)
        guard n > 0 else {
            stoq_privkey_free(key)
            throw Self.error(Int32(truncatingIfNeeded: n), "cannot read the public key of \(shown)")
        }
        der.removeSubrange(Int(n)...)
        guard let p256 = try? P256.Signing.PublicKey(derRepresentation: der) else {
            stoq_privkey_free(key)
            throw STOQError(.invalidArgument, "the key \(shown) is not a P-256 (secp256r1) ECDSA key; STOQ certificates use P-256: generate one with `stoq certs keygen`")
        }
        self.uri = shown
        self.raw = key
        self.publicKeyDER = der
        self.publicKey = Certificate.PublicKey(p256)
    }

    deinit { stoq_privkey_free(raw) }

    /// Signs SHA-256(`message`) in the token: a DER ECDSA signature.
    public func signSHA256(_ message: [UInt8]) throws -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: 256)
        let n = lock.withLock { stoq_privkey_sign_sha256(raw, message, message.count, &signature, signature.count) }
        guard n > 0 else { throw Self.error(Int32(truncatingIfNeeded: n), "the token could not sign with \(uri)") }
        return Array(signature[..<Int(n)])
    }

    /// Generates a P-256 key pair inside a token: private, sensitive and not extractable (it never
    /// leaves the token), labelled `label`.
    /// - Parameters:
    ///   - token: a URI naming the token, e.g. `pkcs11:token=stoq` (with `pin-value=` or
    ///     `STOQ_PKCS11_PIN` for the login).
    ///   - label: the object label (`object=` in the key's URI).
    /// - Returns: the URI of the new private key (without a PIN) and its public key (DER SPKI).
    public static func generate(token: String, label: String) throws(STOQError) -> (uri: String, publicKeyDER: [UInt8]) {
        let shown = PKCS11URI.redacted(token)
        guard PKCS11URI.isURI(token) else {
            throw STOQError(.invalidArgument, "\(token) is not a PKCS#11 URI; name the token like 'pkcs11:token=NAME'")
        }
        guard !label.isEmpty, label.utf8.count <= 64, label.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw STOQError(.invalidArgument, "'\(label)' is not a usable key label: use 1–64 letters, digits, '-', '_' or '.'")
        }
        var id = [UInt8](repeating: 0, count: 8)
        _ = stoq_random(&id, id.count)
        var spki = [UInt8](repeating: 0, count: 512)
        let n = stoq_pkcs11_generate_p256(token, label, id, id.count, &spki, spki.count)
        guard n > 0 else { throw error(Int32(truncatingIfNeeded: n), "cannot generate a key in \(shown)") }
        // The key's URI: the token's attributes (no PIN, no object) plus this object.
        let tokenPart = shown.dropFirst("pkcs11:".count).split(separator: "?").first.map(String.init) ?? ""
        let kept = tokenPart.split(separator: ";").filter { attribute in
            let name = attribute.split(separator: "=").first.map { $0.lowercased() } ?? ""
            return ["token", "manufacturer", "serial", "model", "library-description", "library-manufacturer", "library-version", "slot-id", "slot-description", "slot-manufacturer"].contains(name)
        }
        let idText = id.map { String(format: "%%%02x", $0) }.joined()
        let uri = "pkcs11:" + (kept + ["object=\(label)", "id=\(idText)", "type=private"]).joined(separator: ";")
        return (uri, Array(spki[..<Int(n)]))
    }

    static func error(_ code: Int32, _ what: String) -> STOQError {
        let hint: String
        switch code {
        case GNUTLS_E_PKCS11_PIN_ERROR, GNUTLS_E_PKCS11_USER_ERROR:
            hint = "the token needs its user PIN: put it in STOQ_PKCS11_PIN, or pin-source=FILE / pin-value=PIN in the URI"
        case GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE, GNUTLS_E_PKCS11_REQUESTED_OBJECT_NOT_AVAILBLE:
            hint = "no such object in any token: list them with `p11tool --list-all --login 'pkcs11:token=NAME'`, and check the token's module is configured (p11-kit, or STOQ_PKCS11_MODULE=/path/to/module.so)"
        case GNUTLS_E_CERTIFICATE_KEY_MISMATCH:
            hint = "the key is not the one the certificate was issued for: give the key the certificate certifies, or certify this one with `stoq certs issue --key-uri URI`"
        case GNUTLS_E_PKCS11_TOKEN_ERROR, GNUTLS_E_PKCS11_SLOT_ERROR, GNUTLS_E_PKCS11_LOAD_ERROR:
            hint = "the token or its module is not available: check STOQ_PKCS11_MODULE (or p11-kit's module configuration) and that the token is present"
        default:
            hint = "check the URI with `p11tool --list-all --login URI`"
        }
        return STOQError(.invalidArgument, "\(what): \(gnutlsErrorString(code)); \(hint)")
    }
}

/// Opens the signer of a node's (or a CA's) key, wherever the key is: a `pkcs11:` URI gives a
/// ``TokenKey`` (it signs in the token), a PEM key file a ``SoftwareSigner``.
public enum KeySigner {
    /// Opens `key`, a key file path or a `pkcs11:` URI.
    /// - Parameter certificate: when given, the key must be this certificate's.
    /// - Throws: ``STOQError`` `.invalidArgument` saying what failed (no such file or object, a
    ///   wrong PIN, not a P-256 key, not the certificate's key).
    public static func open(_ key: String, certificate: Certificate? = nil) throws(STOQError) -> any CertificateSigner {
        let signer: any CertificateSigner
        if PKCS11URI.isURI(key) {
            signer = try TokenKey(uri: key)
        } else {
            do { signer = try SoftwareSigner(pem: PEMFile.read(key)) } catch {
                throw STOQError(.invalidArgument, "cannot use the key \(key): \(error.reason)")
            }
        }
        if let certificate, signer.publicKey != certificate.publicKey {
            throw STOQError(.invalidArgument, "the certificate and the given key do not match: \(PKCS11URI.redacted(key)) is not the key certificate \(CertificateInfo(certificate).commonName ?? "?") was issued for")
        }
        return signer
    }
}
