#ifndef STOQ_CNGTCP2_SHIMS_H
#define STOQ_CNGTCP2_SHIMS_H
// Prefixed wrappers for ngtcp2's *_versioned macros, which Swift cannot call,
// plus two small helpers that keep the GnuTLS session setup in one place.
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>

int stoq_conn_client_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                         const ngtcp2_path *path, uint32_t version,
                         const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                         const ngtcp2_transport_params *params, void *user_data);
int stoq_conn_server_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                         const ngtcp2_path *path, uint32_t version,
                         const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                         const ngtcp2_transport_params *params, void *user_data);
int stoq_conn_read_pkt(ngtcp2_conn *conn, const ngtcp2_path *path, const uint8_t *pkt,
                       size_t pktlen, ngtcp2_tstamp ts);
ngtcp2_ssize stoq_conn_writev_stream(ngtcp2_conn *conn, ngtcp2_path *path, uint8_t *dest,
                                     size_t destlen, ngtcp2_ssize *pdatalen, uint32_t flags,
                                     int64_t stream_id, const ngtcp2_vec *datav, size_t datavcnt,
                                     ngtcp2_tstamp ts);
ngtcp2_ssize stoq_conn_write_connection_close(ngtcp2_conn *conn, ngtcp2_path *path, uint8_t *dest,
                                              size_t destlen, const ngtcp2_connection_close_error *ccerr,
                                              ngtcp2_tstamp ts);
void stoq_conn_get_conn_stat(ngtcp2_conn *conn, ngtcp2_conn_stat *cstat);
void stoq_settings_default(ngtcp2_settings *settings);
void stoq_transport_params_default(ngtcp2_transport_params *params);

/// Fills the crypto callbacks (ngtcp2_crypto_*) for a client (is_server = 0) or server.
void stoq_callbacks_init_crypto(ngtcp2_callbacks *cb, int is_server);

/// ngtcp2_crypto_get_conn for a conn_ref whose user_data is the ngtcp2_conn itself.
ngtcp2_conn *stoq_conn_ref_get_conn(ngtcp2_crypto_conn_ref *ref);

/// A connection's crypto reference plus what its TLS verification needs. `ref` comes first, so
/// a pointer to this struct is also a pointer to its `ngtcp2_crypto_conn_ref` (what ngtcp2 and
/// the GnuTLS session pointer hold).
typedef struct stoq_conn_ref {
  ngtcp2_crypto_conn_ref ref;
  /// Server: ask for a client certificate but accept a client without one (a certificate that
  /// is sent is still verified against the trust roots).
  int client_cert_optional;
  /// Client: verify the server's chain against the CA in that chain whose DER
  /// SubjectPublicKeyInfo has this SHA-256 (`has_pin` = 1), instead of configured trust roots.
  int has_pin;
  uint8_t pin[32];
  /// Why our own verification refused the peer ("" when it did not).
  char failure[256];
  /// Server requiring client certificates: chains these credentials verified recently (NULL:
  /// verify every handshake in full). Owned by the credentials, which outlive the session.
  struct stoq_verify_cache *verify_cache;
} stoq_conn_ref;
/// Client certificate chains a set of credentials (trust roots) verified recently: bounded
/// (a fixed table), each entry valid until the earliest notAfter in its chain or 5 minutes after
/// its verification, whichever comes first. Thread-safe.
typedef struct stoq_verify_cache stoq_verify_cache;
stoq_verify_cache *stoq_verify_cache_new(void);
void stoq_verify_cache_free(stoq_verify_cache *cache);
/// notBefore and notAfter (seconds since the epoch) read from a DER certificate's headers, as the
/// cache records them; -1 when the layout is not the expected one (for tests).
int stoq_x509_der_validity(const uint8_t *der, size_t len, int64_t *not_before, int64_t *not_after);
/// Verifications answered from the cache and done in full since it was made (for tests).
void stoq_verify_cache_counts(stoq_verify_cache *cache, uint64_t *hits, uint64_t *misses);

/// Creates and configures a GnuTLS session for QUIC. `alpns` holds `nalpn` NUL-terminated
/// protocol names. Returns 0 or a GnuTLS error code.
int stoq_tls_session_new(gnutls_session_t *out, int is_server,
                         gnutls_certificate_credentials_t cred, const char *priority,
                         const char *const *alpns, size_t nalpn, const char *sni,
                         int verify_peer, int require_client_cert,
                         ngtcp2_crypto_conn_ref *conn_ref);

/// Installs the verification a `stoq_conn_ref` asks for (an optional client certificate on a
/// server, a CA pin on a client). Call after `stoq_tls_session_new` with the same `conn_ref`.
void stoq_tls_session_set_verification(gnutls_session_t session, stoq_conn_ref *conn_ref);

/// SHA-256 of the DER SubjectPublicKeyInfo of a DER certificate into `out` (32 bytes).
/// Returns 0 or a GnuTLS error code.
int stoq_x509_spki_sha256(const uint8_t *der, size_t len, uint8_t *out);

/// Copies the negotiated ALPN into buf (NUL-terminated); returns its length or -1.
int stoq_tls_selected_alpn(gnutls_session_t session, char *buf, size_t buflen);

/// Number of certificates the peer presented; `stoq_tls_peer_cert` copies the DER of
/// certificate `index` into buf (returns its length, or -needed if buf is too small).
unsigned stoq_tls_peer_cert_count(gnutls_session_t session);
long stoq_tls_peer_cert(gnutls_session_t session, unsigned index, uint8_t *buf, size_t buflen);

/// Human-readable reason why the peer certificate failed verification (or "" if it did not).
int stoq_tls_verify_failure(gnutls_session_t session, char *buf, size_t buflen);

/// Loads a PEM key pair and optional trust roots into fresh credentials. Returns 0 or a
/// GnuTLS error code; on error `*out` is NULL.
int stoq_tls_credentials_new(gnutls_certificate_credentials_t *out, const char *cert_pem,
                             size_t cert_len, const char *key_pem, size_t key_len,
                             const char *trust_pem, size_t trust_len);

/// Fills a random buffer from GnuTLS (nonce quality).
int stoq_random(uint8_t *dest, size_t len);

/* Keys in a PKCS#11 token (RFC 7512 `pkcs11:` URIs), through GnuTLS's PKCS#11 support. The
 * modules are p11-kit's configured ones, or only the one in $STOQ_PKCS11_MODULE when set. The
 * PIN comes from the URI (`pin-value=`, `pin-source=`) or from $STOQ_PKCS11_PIN. */

/// Opens the private key a `pkcs11:` URI names. Returns 0 or a GnuTLS error code.
int stoq_pkcs11_privkey_open(gnutls_privkey_t *out, const char *uri);
/// The DER SubjectPublicKeyInfo of a private key's public half into buf; returns its length, or
/// a negative GnuTLS error code (GNUTLS_E_SHORT_MEMORY_BUFFER when buf is too small).
long stoq_privkey_public_der(gnutls_privkey_t key, uint8_t *buf, size_t buflen);
/// Signs `data` with SHA-256 (ECDSA: a DER signature) into sig; returns its length or a negative
/// GnuTLS error code.
long stoq_privkey_sign_sha256(gnutls_privkey_t key, const uint8_t *data, size_t len, uint8_t *sig, size_t siglen);
/// Releases a key from `stoq_pkcs11_privkey_open`.
void stoq_privkey_free(gnutls_privkey_t key);
/// Generates a P-256 key pair inside the token `token_uri` names (sensitive, not extractable),
/// labelled `label` with the object id `id`; its DER SubjectPublicKeyInfo goes into spki (returns
/// its length) or a negative GnuTLS error code.
long stoq_pkcs11_generate_p256(const char *token_uri, const char *label, const uint8_t *id, size_t idlen,
                               uint8_t *spki, size_t spkilen);
/// Like `stoq_tls_credentials_new`, with the private key in a token (`key_uri`). GnuTLS checks
/// that the key belongs to the certificate.
int stoq_tls_credentials_new_pkcs11(gnutls_certificate_credentials_t *out, const char *cert_pem,
                                    size_t cert_len, const char *key_uri,
                                    const char *trust_pem, size_t trust_len);

/// The kernel's path MTU towards `remote` (IPv6 header included): the MTU of the route's
/// interface, lowered by any ICMPv6 Packet Too Big the kernel has seen for that destination,
/// and at most 1500 when the route goes through a gateway (or the kernel does not say whether
/// it does): beyond a router only the first hop's MTU is known. Asked on a throwaway UDP socket
/// bound to `local`'s address (port 0, so the source address and scope choose the route) and
/// connected to `remote`, plus one netlink route lookup. Returns the MTU, or -errno.
int stoq_path_mtu(const struct sockaddr_in6 *local, const struct sockaddr_in6 *remote);

#endif
