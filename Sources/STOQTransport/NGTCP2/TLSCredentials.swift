import CNgtcp2
import CNgtcp2Shims
import STOQIdentity

/// Owns one `gnutls_certificate_credentials_t` (key pair + trust roots).
///
/// Every session created from it keeps a strong reference, so replacing an endpoint's
/// credentials (certificate rotation) never frees the ones live sessions still use.
final class TLSCredentials {
    let raw: gnutls_certificate_credentials_t
    let hasTrustRoots: Bool
    /// Client chains these trust roots verified recently (servers requiring client certificates
    /// skip re-verifying the same chain; see `stoq_verify_cache` in CNgtcp2Shims.h). Nil without
    /// trust roots.
    let verifyCache: OpaquePointer?

    init(certificateChainPEM: String?, privateKeyPEM: String?, trustRootsPEM: String?) throws(STOQError) {
        var out: gnutls_certificate_credentials_t?
        let cert = Array((certificateChainPEM ?? "").utf8)
        let key = Array((privateKeyPEM ?? "").utf8)
        let trust = Array((trustRootsPEM ?? "").utf8)
        if let keyURI = privateKeyPEM, PKCS11URI.isURI(keyURI) {
            // The key is in a token: GnuTLS signs the handshake there (TokenKey.swift).
            let rv = cert.withUnsafeBufferPointer { c in
                trust.withUnsafeBufferPointer { t in
                    c.withMemoryRebound(to: CChar.self) { c in
                        t.withMemoryRebound(to: CChar.self) { t in
                            stoq_tls_credentials_new_pkcs11(&out, c.baseAddress, c.count, keyURI, t.baseAddress, t.count)
                        }
                    }
                }
            }
            guard rv == 0, let out else {
                throw TokenKey.error(rv, "could not use the certificate with the key \(PKCS11URI.redacted(keyURI)) in the token")
            }
            self.raw = out
            self.hasTrustRoots = !trust.isEmpty
            self.verifyCache = trust.isEmpty ? nil : stoq_verify_cache_new()
            return
        }
        let rv = cert.withUnsafeBufferPointer { c in
            key.withUnsafeBufferPointer { k in
                trust.withUnsafeBufferPointer { t in
                    c.withMemoryRebound(to: CChar.self) { c in
                        k.withMemoryRebound(to: CChar.self) { k in
                            t.withMemoryRebound(to: CChar.self) { t in
                                stoq_tls_credentials_new(
                                    &out, c.baseAddress, c.count, k.baseAddress, k.count,
                                    t.baseAddress, t.count)
                            }
                        }
                    }
                }
            }
        }
        guard rv == 0, let out else {
            throw STOQError(
                .invalidArgument,
                "could not load the TLS certificate, key or trust roots: \(gnutlsErrorString(rv)); check that they are PEM files (certificate chain, PKCS#8 or SEC1 key)")
        }
        self.raw = out
        self.hasTrustRoots = !trust.isEmpty
        self.verifyCache = trust.isEmpty ? nil : stoq_verify_cache_new()
    }

    deinit {
        gnutls_certificate_free_credentials(raw)
        stoq_verify_cache_free(verifyCache)
    }

    /// notBefore and notAfter (seconds since the epoch) as the verification cache reads them from
    /// a DER certificate (tests); nil when it cannot read them (the chain is then not cached).
    static func cachedValidity(der: [UInt8]) -> (notBefore: Int64, notAfter: Int64)? {
        var notBefore: Int64 = 0, notAfter: Int64 = 0
        let rv = der.withUnsafeBufferPointer { stoq_x509_der_validity($0.baseAddress, $0.count, &notBefore, &notAfter) }
        return rv == 0 ? (notBefore, notAfter) : nil
    }

    /// Client-chain verifications answered from ``verifyCache`` and done in full (tests).
    var verifyCacheCounts: (hits: UInt64, misses: UInt64) {
        guard let verifyCache else { return (0, 0) }
        var hits: UInt64 = 0, misses: UInt64 = 0
        stoq_verify_cache_counts(verifyCache, &hits, &misses)
        return (hits, misses)
    }
}

func gnutlsErrorString(_ code: Int32) -> String {
    guard let s = gnutls_strerror(code) else { return "GnuTLS error \(code)" }
    return String(cString: s)
}

func ngtcp2ErrorString(_ code: Int32) -> String {
    guard let s = ngtcp2_strerror(code) else { return "ngtcp2 error \(code)" }
    return String(cString: s)
}
