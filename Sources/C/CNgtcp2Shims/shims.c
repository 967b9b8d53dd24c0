#include "CNgtcp2Shims.h"
#include <string.h>
#include <gnutls/crypto.h>
#include <gnutls/abstract.h>
#include <stdio.h>
#include <stdlib.h>

int stoq_conn_client_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                         const ngtcp2_path *path, uint32_t version,
                         const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                         const ngtcp2_transport_params *params, void *user_data) {
  return ngtcp2_conn_client_new(pconn, dcid, scid, path, version, callbacks, settings, params,
                                NULL, user_data);
}

int stoq_conn_server_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                         const ngtcp2_path *path, uint32_t version,
                         const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                         const ngtcp2_transport_params *params, void *user_data) {
  return ngtcp2_conn_server_new(pconn, dcid, scid, path, version, callbacks, settings, params,
                                NULL, user_data);
}

int stoq_conn_read_pkt(ngtcp2_conn *conn, const ngtcp2_path *path, const uint8_t *pkt,
                       size_t pktlen, ngtcp2_tstamp ts) {
  ngtcp2_pkt_info pi = {0};
  return ngtcp2_conn_read_pkt(conn, path, &pi, pkt, pktlen, ts);
}

ngtcp2_ssize stoq_conn_writev_stream(ngtcp2_conn *conn, ngtcp2_path *path, uint8_t *dest,
                                     size_t destlen, ngtcp2_ssize *pdatalen, uint32_t flags,
                                     int64_t stream_id, const ngtcp2_vec *datav, size_t datavcnt,
                                     ngtcp2_tstamp ts) {
  return ngtcp2_conn_writev_stream(conn, path, NULL, dest, destlen, pdatalen, flags, stream_id,
                                   datav, datavcnt, ts);
}

ngtcp2_ssize stoq_conn_write_connection_close(ngtcp2_conn *conn, ngtcp2_path *path, uint8_t *dest,
                                              size_t destlen, const ngtcp2_connection_close_error *ccerr,
                                              ngtcp2_tstamp ts) {
  return ngtcp2_conn_write_connection_close(conn, path, NULL, dest, destlen, ccerr, ts);
}

void stoq_conn_get_conn_stat(ngtcp2_conn *conn, ngtcp2_conn_stat *cstat) {
  ngtcp2_conn_get_conn_stat(conn, cstat);
}

void stoq_settings_default(ngtcp2_settings *settings) { ngtcp2_settings_default(settings); }

void stoq_transport_params_default(ngtcp2_transport_params *params) {
  ngtcp2_transport_params_default(params);
}

static void stoq_rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx) {
  (void)rand_ctx;
  (void)gnutls_rnd(GNUTLS_RND_RANDOM, dest, destlen);
}

void stoq_callbacks_init_crypto(ngtcp2_callbacks *cb, int is_server) {
  if (is_server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->rand = stoq_rand_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
}

ngtcp2_conn *stoq_conn_ref_get_conn(ngtcp2_crypto_conn_ref *ref) {
  return (ngtcp2_conn *)ref->user_data;
}

/* ---- Verified client chains ---------------------------------------------------------------
 * A server that requires client certificates verifies the same few chains over and over (nodes
 * and operators reconnect). A chain GnuTLS verified against these credentials' trust roots is
 * remembered by the SHA-256 of every certificate the client sent (length-prefixed, in order), so
 * a later handshake that presents exactly the same bytes skips the path building and signature
 * checks. Safe because:
 *  - the verdict depends only on those bytes, the trust roots and the time: the cache belongs to
 *    one credentials object (new trust roots are new credentials, with an empty cache), and an
 *    entry holds only from the latest notBefore to the earliest notAfter of the sent chain, and
 *    for at most STOQ_VERIFY_CACHE_TTL seconds after the verification;
 *  - the client still proves its key in every handshake (GnuTLS checks CertificateVerify
 *    whatever this function answers), so a cached chain is no use without its private key;
 *  - only successes are cached, and GnuTLS holds no CRLs here (revocation is the application's,
 *    checked after the handshake, unchanged);
 *  - the table is fixed-size (STOQ_VERIFY_CACHE_SLOTS, direct-mapped by digest): a flood of
 *    distinct chains only evicts entries, it cannot grow memory. */
#include <pthread.h>
#include <time.h>

static void stoq_fail(stoq_conn_ref *ref, const char *text);

#define STOQ_VERIFY_CACHE_SLOTS 512
#define STOQ_VERIFY_CACHE_TTL 300

typedef struct {
  uint8_t digest[32];
  int64_t not_before;  /* latest notBefore in the chain */
  int64_t valid_until; /* earliest notAfter in the chain, at most verification + TTL */
  int used;
} stoq_verify_entry;

struct stoq_verify_cache {
  pthread_mutex_t lock;
  uint64_t hits, misses;
  stoq_verify_entry slots[STOQ_VERIFY_CACHE_SLOTS];
};

stoq_verify_cache *stoq_verify_cache_new(void) {
  stoq_verify_cache *cache = calloc(1, sizeof *cache);
  if (cache != NULL) pthread_mutex_init(&cache->lock, NULL);
  return cache;
}

void stoq_verify_cache_free(stoq_verify_cache *cache) {
  if (cache == NULL) return;
  pthread_mutex_destroy(&cache->lock);
  free(cache);
}

void stoq_verify_cache_counts(stoq_verify_cache *cache, uint64_t *hits, uint64_t *misses) {
  pthread_mutex_lock(&cache->lock);
  *hits = cache->hits;
  *misses = cache->misses;
  pthread_mutex_unlock(&cache->lock);
}

static int stoq_chain_digest(const gnutls_datum_t *certs, unsigned n, uint8_t out[32]) {
  gnutls_hash_hd_t h;
  if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) return -1;
  for (unsigned i = 0; i < n; i++) {
    uint8_t len[4] = {(uint8_t)(certs[i].size >> 24), (uint8_t)(certs[i].size >> 16),
                      (uint8_t)(certs[i].size >> 8), (uint8_t)certs[i].size};
    gnutls_hash(h, len, 4);
    gnutls_hash(h, certs[i].data, certs[i].size);
  }
  gnutls_hash_deinit(h, out);
  return 0;
}

static int stoq_verify_cache_hit(stoq_verify_cache *cache, const uint8_t digest[32], int64_t now) {
  stoq_verify_entry *e = &cache->slots[((unsigned)digest[0] << 8 | digest[1]) % STOQ_VERIFY_CACHE_SLOTS];
  pthread_mutex_lock(&cache->lock);
  int hit = e->used && memcmp(e->digest, digest, 32) == 0 && now >= e->not_before && now < e->valid_until;
  if (hit) cache->hits++; else cache->misses++;
  pthread_mutex_unlock(&cache->lock);
  return hit;
}

/* One DER header at der[*i] (bounded by end): its tag, and the extent of its contents. */
static int stoq_der_header(const uint8_t *der, size_t end, size_t *i, uint8_t *tag, size_t *body, size_t *stop) {
  if (*i + 2 > end) return -1;
  *tag = der[*i];
  size_t len = der[*i + 1], at = *i + 2;
  if (len >= 0x80) {
    size_t n = len & 0x7F;
    if (n < 1 || n > 3 || at + n > end) return -1;
    len = 0;
    for (size_t k = 0; k < n; k++) len = len << 8 | der[at + k];
    at += n;
  }
  if (len > end - at) return -1;
  *body = at;
  *stop = at + len;
  *i = *stop;
  return 0;
}

/* UTCTime (YYMMDDHHMMSSZ, RFC 5280 §4.1.2.5.1) or GeneralizedTime (YYYYMMDDHHMMSSZ) to seconds
 * since the epoch; -1 for any other form. */
static int stoq_der_time(const uint8_t *p, size_t len, uint8_t tag, int64_t *out) {
  size_t digits = tag == 0x17 ? 12 : tag == 0x18 ? 14 : 0;
  if (digits == 0 || len != digits + 1 || p[digits] != 'Z') return -1;
  int v[7] = {0};
  for (size_t k = 0; k < digits; k++) if (p[k] < '0' || p[k] > '9') return -1;
  size_t at = 0;
  int year;
  if (tag == 0x17) {
    year = (p[0] - '0') * 10 + (p[1] - '0');
    year += year < 50 ? 2000 : 1900;
    at = 2;
  } else {
    year = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    at = 4;
  }
  for (int k = 0; k < 5; k++, at += 2) v[k] = (p[at] - '0') * 10 + (p[at + 1] - '0');
  if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 31 || v[2] > 23 || v[3] > 59 || v[4] > 60) return -1;
  struct tm t = {0};
  t.tm_year = year - 1900;
  t.tm_mon = v[0] - 1;
  t.tm_mday = v[1];
  t.tm_hour = v[2];
  t.tm_min = v[3];
  t.tm_sec = v[4];
  *out = (int64_t)timegm(&t);
  return 0;
}

/* notBefore and notAfter of a DER certificate, read from its headers (the certificate has just
 * been verified by GnuTLS, which parsed it in full); -1 if the layout is not the expected one. */
static int stoq_der_validity(const uint8_t *der, size_t len, int64_t *not_before, int64_t *not_after) {
  size_t i = 0, body, stop, end;
  uint8_t tag;
  if (stoq_der_header(der, len, &i, &tag, &body, &stop) < 0 || tag != 0x30) return -1;
  i = body;
  end = stop;
  if (stoq_der_header(der, end, &i, &tag, &body, &stop) < 0 || tag != 0x30) return -1; /* tbsCertificate */
  i = body;
  end = stop;
  size_t probe = i;
  if (stoq_der_header(der, end, &probe, &tag, &body, &stop) < 0) return -1;
  if (tag == 0xA0) i = probe; /* [0] version */
  const uint8_t skip[3] = {0x02, 0x30, 0x30}; /* serialNumber, signature, issuer */
  for (int k = 0; k < 3; k++) {
    if (stoq_der_header(der, end, &i, &tag, &body, &stop) < 0 || tag != skip[k]) return -1;
  }
  if (stoq_der_header(der, end, &i, &tag, &body, &stop) < 0 || tag != 0x30) return -1; /* validity */
  size_t j = body, vend = stop, tb, ts;
  if (stoq_der_header(der, vend, &j, &tag, &tb, &ts) < 0 || stoq_der_time(der + tb, ts - tb, tag, not_before) < 0) return -1;
  if (stoq_der_header(der, vend, &j, &tag, &tb, &ts) < 0 || stoq_der_time(der + tb, ts - tb, tag, not_after) < 0) return -1;
  return 0;
}

/* Remembers a chain that has just verified; its validity window comes from the certificates
 * (a chain whose dates cannot be read is simply not cached). */
static void stoq_verify_cache_put(stoq_verify_cache *cache, const uint8_t digest[32],
                                  const gnutls_datum_t *certs, unsigned n, int64_t now) {
  int64_t not_before = INT64_MIN, valid_until = now + STOQ_VERIFY_CACHE_TTL;
  for (unsigned i = 0; i < n; i++) {
    int64_t activation, expiration;
    if (stoq_der_validity(certs[i].data, certs[i].size, &activation, &expiration) < 0) return;
    if (activation > not_before) not_before = activation;
    if (expiration < valid_until) valid_until = expiration;
  }
  if (valid_until <= now || not_before > now) return;
  stoq_verify_entry *e = &cache->slots[((unsigned)digest[0] << 8 | digest[1]) % STOQ_VERIFY_CACHE_SLOTS];
  pthread_mutex_lock(&cache->lock);
  memcpy(e->digest, digest, 32);
  e->not_before = not_before;
  e->valid_until = valid_until;
  e->used = 1;
  pthread_mutex_unlock(&cache->lock);
}

/* For tests: the validity window stoq_verify_cache_put would read from a DER certificate. */
int stoq_x509_der_validity(const uint8_t *der, size_t len, int64_t *not_before, int64_t *not_after) {
  return stoq_der_validity(der, len, not_before, not_after);
}

/* Verifies the client's chain (n > 0 certificates) against the credentials' trust roots the way
 * gnutls_certificate_verify_peers2 does, answered from the cache when the client sent a chain
 * these credentials verified recently. 0: verified; 1: refused (status printed into
 * ref->failure); < 0: a GnuTLS error. */
static int stoq_verify_client_chain(gnutls_session_t session, stoq_conn_ref *ref,
                                    const gnutls_datum_t *certs, unsigned n) {
  stoq_verify_cache *cache = ref != NULL ? ref->verify_cache : NULL;
  uint8_t digest[32];
  int64_t now = (int64_t)time(NULL);
  int keyed = cache != NULL && stoq_chain_digest(certs, n, digest) == 0;
  if (keyed && stoq_verify_cache_hit(cache, digest, now)) return 0;
  unsigned status = 0;
  int rv = gnutls_certificate_verify_peers2(session, &status);
  if (rv < 0) return rv;
  if (status != 0) {
    gnutls_datum_t out;
    if (ref != NULL && gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      snprintf(ref->failure, sizeof ref->failure, "%.*s", (int)out.size, (const char *)out.data);
      gnutls_free(out.data);
    }
    return 1;
  }
  if (keyed) stoq_verify_cache_put(cache, digest, certs, n, now);
  return 0;
}

/* Server requiring a client certificate: what gnutls_session_set_verify_cert(session, NULL, 0)
 * does (the same verification and error codes), with the cache. */
static int stoq_verify_required_client(gnutls_session_t session) {
  stoq_conn_ref *ref = (stoq_conn_ref *)gnutls_session_get_ptr(session);
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (certs == NULL || n == 0) return GNUTLS_E_NO_CERTIFICATE_FOUND;
  int rv = stoq_verify_client_chain(session, ref, certs, n);
  if (rv < 0) {
    if (ref != NULL) stoq_fail(ref, gnutls_strerror(rv));
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  return rv == 0 ? 0 : GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
}

int stoq_tls_session_new(gnutls_session_t *out, int is_server,
                         gnutls_certificate_credentials_t cred, const char *priority,
                         const char *const *alpns, size_t nalpn, const char *sni,
                         int verify_peer, int require_client_cert,
                         ngtcp2_crypto_conn_ref *conn_ref) {
  gnutls_session_t session;
  unsigned flags = is_server ? (GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET)
                             : GNUTLS_CLIENT;
  int rv = gnutls_init(&session, flags | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv != 0) return rv;
  rv = gnutls_priority_set_direct(session, priority, NULL);
  if (rv != 0) goto fail;
  rv = is_server ? ngtcp2_crypto_gnutls_configure_server_session(session)
                 : ngtcp2_crypto_gnutls_configure_client_session(session);
  if (rv != 0) { rv = GNUTLS_E_INTERNAL_ERROR; goto fail; }
  gnutls_session_set_ptr(session, conn_ref);
  rv = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, cred);
  if (rv != 0) goto fail;
  if (nalpn > 0) {
    gnutls_datum_t datums[16];
    if (nalpn > 16) nalpn = 16;
    for (size_t i = 0; i < nalpn; i++) {
      datums[i].data = (unsigned char *)alpns[i];
      datums[i].size = (unsigned)strlen(alpns[i]);
    }
    rv = gnutls_alpn_set_protocols(session, datums, (unsigned)nalpn, GNUTLS_ALPN_MANDATORY);
    if (rv != 0) goto fail;
  }
  if (is_server) {
    if (require_client_cert) {
      gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
      if (((stoq_conn_ref *)conn_ref)->verify_cache != NULL) {
        gnutls_session_set_verify_function(session, stoq_verify_required_client);
      } else {
        gnutls_session_set_verify_cert(session, NULL, 0);
      }
    }
  } else {
    /* RFC 6066 §3: SNI carries DNS names only, never an IP literal. */
    if (sni != NULL && sni[0] != '\0' && strchr(sni, ':') == NULL) {
      gnutls_server_name_set(session, GNUTLS_NAME_DNS, sni, strlen(sni));
    }
    if (verify_peer) {
      gnutls_session_set_verify_cert(session, NULL, 0);
    }
  }
  *out = session;
  return 0;
fail:
  gnutls_deinit(session);
  return rv;
}

int stoq_tls_selected_alpn(gnutls_session_t session, char *buf, size_t buflen) {
  gnutls_datum_t alpn;
  if (gnutls_alpn_get_selected_protocol(session, &alpn) != 0) return -1;
  if (alpn.size + 1 > buflen) return -1;
  memcpy(buf, alpn.data, alpn.size);
  buf[alpn.size] = '\0';
  return (int)alpn.size;
}

unsigned stoq_tls_peer_cert_count(gnutls_session_t session) {
  unsigned n = 0;
  if (gnutls_certificate_get_peers(session, &n) == NULL) return 0;
  return n;
}

long stoq_tls_peer_cert(gnutls_session_t session, unsigned index, uint8_t *buf, size_t buflen) {
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (certs == NULL || index >= n) return 0;
  if (certs[index].size > buflen) return -(long)certs[index].size;
  memcpy(buf, certs[index].data, certs[index].size);
  return (long)certs[index].size;
}

int stoq_tls_verify_failure(gnutls_session_t session, char *buf, size_t buflen) {
  stoq_conn_ref *ref = (stoq_conn_ref *)gnutls_session_get_ptr(session);
  if (ref != NULL && ref->failure[0] != '\0' && buflen > 0) {
    size_t n = strnlen(ref->failure, sizeof ref->failure);
    if (n > buflen - 1) n = buflen - 1;
    memcpy(buf, ref->failure, n);
    buf[n] = '\0';
    return (int)n;
  }
  unsigned status = gnutls_session_get_verify_cert_status(session);
  if (buflen == 0) return -1;
  buf[0] = '\0';
  if (status == 0) return 0;
  gnutls_datum_t out;
  if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) != 0) {
    return -1;
  }
  size_t n = out.size < buflen - 1 ? out.size : buflen - 1;
  memcpy(buf, out.data, n);
  buf[n] = '\0';
  gnutls_free(out.data);
  return (int)n;
}

int stoq_tls_credentials_new(gnutls_certificate_credentials_t *out, const char *cert_pem,
                             size_t cert_len, const char *key_pem, size_t key_len,
                             const char *trust_pem, size_t trust_len) {
  gnutls_certificate_credentials_t cred;
  *out = NULL;
  int rv = gnutls_certificate_allocate_credentials(&cred);
  if (rv != 0) return rv;
  if (cert_pem != NULL && cert_len > 0) {
    gnutls_datum_t cert = {(unsigned char *)cert_pem, (unsigned)cert_len};
    gnutls_datum_t key = {(unsigned char *)key_pem, (unsigned)key_len};
    rv = gnutls_certificate_set_x509_key_mem(cred, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (rv < 0) goto fail;
  }
  if (trust_pem != NULL && trust_len > 0) {
    gnutls_datum_t trust = {(unsigned char *)trust_pem, (unsigned)trust_len};
    rv = gnutls_certificate_set_x509_trust_mem(cred, &trust, GNUTLS_X509_FMT_PEM);
    if (rv < 0) goto fail;
    if (rv == 0) { rv = GNUTLS_E_NO_CERTIFICATE_FOUND; goto fail; }
  }
  *out = cred;
  return 0;
fail:
  gnutls_certificate_free_credentials(cred);
  return rv;
}

int stoq_random(uint8_t *dest, size_t len) { return gnutls_rnd(GNUTLS_RND_RANDOM, dest, len); }

int stoq_x509_spki_sha256(const uint8_t *der, size_t len, uint8_t *out) {
  gnutls_x509_crt_t crt;
  gnutls_pubkey_t pub;
  gnutls_datum_t in = {(unsigned char *)der, (unsigned)len}, spki = {NULL, 0};
  int rv = gnutls_x509_crt_init(&crt);
  if (rv < 0) return rv;
  rv = gnutls_x509_crt_import(crt, &in, GNUTLS_X509_FMT_DER);
  if (rv < 0) { gnutls_x509_crt_deinit(crt); return rv; }
  rv = gnutls_pubkey_init(&pub);
  if (rv < 0) { gnutls_x509_crt_deinit(crt); return rv; }
  rv = gnutls_pubkey_import_x509(pub, crt, 0);
  if (rv >= 0) rv = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &spki);
  if (rv >= 0) rv = gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size, out);
  gnutls_free(spki.data);
  gnutls_pubkey_deinit(pub);
  gnutls_x509_crt_deinit(crt);
  return rv < 0 ? rv : 0;
}

static void stoq_fail(stoq_conn_ref *ref, const char *text) {
  snprintf(ref->failure, sizeof ref->failure, "%s", text);
}

/* Server with optional client certificates: no certificate is fine (an anonymous reader);
 * a certificate that is sent must verify against the trust roots. */
static int stoq_verify_optional_client(gnutls_session_t session) {
  stoq_conn_ref *ref = (stoq_conn_ref *)gnutls_session_get_ptr(session);
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (certs == NULL || n == 0) return 0;
  int rv = stoq_verify_client_chain(session, ref, certs, n);
  if (rv < 0) { if (ref) stoq_fail(ref, gnutls_strerror(rv)); return -1; }
  return rv == 0 ? 0 : -1;
}

/* Client pinning the network CA: the server's chain must hold a certificate whose SPKI
 * SHA-256 is the pin, and the chain must verify with that certificate as the only root. */
static int stoq_verify_pinned_server(gnutls_session_t session) {
  stoq_conn_ref *ref = (stoq_conn_ref *)gnutls_session_get_ptr(session);
  if (ref == NULL) return -1;
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (certs == NULL || n == 0) { stoq_fail(ref, "the node sent no certificate"); return -1; }
  if (n > 16) { stoq_fail(ref, "the node sent more than 16 certificates"); return -1; }
  gnutls_x509_crt_t chain[16];
  unsigned loaded = 0;
  int root = -1, result = -1;
  for (unsigned i = 0; i < n; i++) {
    if (gnutls_x509_crt_init(&chain[i]) < 0) goto done;
    loaded++;
    if (gnutls_x509_crt_import(chain[i], &certs[i], GNUTLS_X509_FMT_DER) < 0) {
      stoq_fail(ref, "the node sent a certificate that does not parse");
      goto done;
    }
    uint8_t digest[32];
    if (root < 0 && i > 0 && stoq_x509_spki_sha256(certs[i].data, certs[i].size, digest) == 0 &&
        memcmp(digest, ref->pin, 32) == 0) {
      root = (int)i;
    }
  }
  if (root < 0) {
    if (n == 1) {
      stoq_fail(ref, "the node sent no CA certificate with its own: it does not accept readers without "
                     "a certificate (it runs without --public-read)");
    } else {
      stoq_fail(ref, "the node's certificate chain does not include the network CA the ticket names");
    }
    goto done;
  }
  gnutls_x509_trust_list_t list;
  if (gnutls_x509_trust_list_init(&list, 0) < 0) goto done;
  gnutls_x509_crt_t ca;
  if (gnutls_x509_crt_init(&ca) < 0) { gnutls_x509_trust_list_deinit(list, 1); goto done; }
  if (gnutls_x509_crt_import(ca, &certs[root], GNUTLS_X509_FMT_DER) < 0 ||
      gnutls_x509_trust_list_add_cas(list, &ca, 1, 0) != 1) {
    gnutls_x509_crt_deinit(ca);
    gnutls_x509_trust_list_deinit(list, 1);
    goto done;
  }
  unsigned status = 0;
  int rv = gnutls_x509_trust_list_verify_crt2(list, chain, (unsigned)root, NULL, 0, 0, &status, NULL);
  gnutls_x509_trust_list_deinit(list, 1);
  if (rv < 0) { stoq_fail(ref, gnutls_strerror(rv)); goto done; }
  if (status != 0) {
    gnutls_datum_t out;
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      snprintf(ref->failure, sizeof ref->failure, "%.*s", (int)out.size, (const char *)out.data);
      gnutls_free(out.data);
    } else {
      stoq_fail(ref, "the node's certificate does not verify against the network CA");
    }
    goto done;
  }
  result = 0;
done:
  for (unsigned i = 0; i < loaded; i++) gnutls_x509_crt_deinit(chain[i]);
  return result;
}

void stoq_tls_session_set_verification(gnutls_session_t session, stoq_conn_ref *ref) {
  ref->failure[0] = '\0';
  if (ref->has_pin) {
    gnutls_session_set_verify_function(session, stoq_verify_pinned_server);
  } else if (ref->client_cert_optional) {
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST);
    gnutls_session_set_verify_function(session, stoq_verify_optional_client);
  }
}

/* ---- Keys in a PKCS#11 token ------------------------------------------------------------- */
#include <gnutls/pkcs11.h>
#include <pthread.h>
#include <stdlib.h>

static pthread_once_t stoq_pkcs11_once = PTHREAD_ONCE_INIT;
static int stoq_pkcs11_status = 0;

/* The PIN from $STOQ_PKCS11_PIN (a PIN in the URI is used by GnuTLS before it asks). A PIN that
 * was wrong is not offered again, so a wrong PIN cannot lock the token by retries. */
static int stoq_pkcs11_pin(void *userdata, int attempt, const char *token_url, const char *token_label,
                           unsigned flags, char *pin, size_t pin_max) {
  (void)userdata; (void)token_url; (void)token_label;
  const char *env = getenv("STOQ_PKCS11_PIN");
  if (env == NULL || attempt > 0 || (flags & GNUTLS_PIN_WRONG)) return GNUTLS_E_PKCS11_PIN_ERROR;
  size_t n = strlen(env);
  if (n + 1 > pin_max) return GNUTLS_E_PKCS11_PIN_ERROR;
  memcpy(pin, env, n + 1);
  return 0;
}

static void stoq_pkcs11_setup(void) {
  const char *module = getenv("STOQ_PKCS11_MODULE");
  if (module != NULL && module[0] != '\0') {
    stoq_pkcs11_status = gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL);
    if (stoq_pkcs11_status == 0) stoq_pkcs11_status = gnutls_pkcs11_add_provider(module, NULL);
  } else {
    stoq_pkcs11_status = gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_AUTO, NULL);
  }
  gnutls_pkcs11_set_pin_function(stoq_pkcs11_pin, NULL);
}

static int stoq_pkcs11_ready(void) {
  pthread_once(&stoq_pkcs11_once, stoq_pkcs11_setup);
  return stoq_pkcs11_status;
}

int stoq_pkcs11_privkey_open(gnutls_privkey_t *out, const char *uri) {
  *out = NULL;
  int rv = stoq_pkcs11_ready();
  if (rv < 0) return rv;
  gnutls_privkey_t key;
  rv = gnutls_privkey_init(&key);
  if (rv < 0) return rv;
  gnutls_privkey_set_pin_function(key, stoq_pkcs11_pin, NULL);
  rv = gnutls_privkey_import_url(key, uri, 0);
  if (rv < 0) { gnutls_privkey_deinit(key); return rv; }
  *out = key;
  return 0;
}

long stoq_privkey_public_der(gnutls_privkey_t key, uint8_t *buf, size_t buflen) {
  gnutls_pubkey_t pub;
  gnutls_datum_t der = {NULL, 0};
  int rv = gnutls_pubkey_init(&pub);
  if (rv < 0) return rv;
  rv = gnutls_pubkey_import_privkey(pub, key, 0, 0);
  if (rv >= 0) rv = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der);
  gnutls_pubkey_deinit(pub);
  if (rv < 0) return rv;
  long n = (long)der.size;
  if (der.size > buflen) n = GNUTLS_E_SHORT_MEMORY_BUFFER; else memcpy(buf, der.data, der.size);
  gnutls_free(der.data);
  return n;
}

long stoq_privkey_sign_sha256(gnutls_privkey_t key, const uint8_t *data, size_t len, uint8_t *sig, size_t siglen) {
  gnutls_datum_t in = {(unsigned char *)data, (unsigned)len}, out = {NULL, 0};
  int rv = gnutls_privkey_sign_data(key, GNUTLS_DIG_SHA256, 0, &in, &out);
  if (rv < 0) return rv;
  long n = (long)out.size;
  if (out.size > siglen) n = GNUTLS_E_SHORT_MEMORY_BUFFER; else memcpy(sig, out.data, out.size);
  gnutls_free(out.data);
  return n;
}

void stoq_privkey_free(gnutls_privkey_t key) {
  if (key != NULL) gnutls_privkey_deinit(key);
}

long stoq_pkcs11_generate_p256(const char *token_uri, const char *label, const uint8_t *id, size_t idlen,
                               uint8_t *spki, size_t spkilen) {
  int rv = stoq_pkcs11_ready();
  if (rv < 0) return rv;
  gnutls_datum_t cid = {(unsigned char *)id, (unsigned)idlen}, pub = {NULL, 0};
  rv = gnutls_pkcs11_privkey_generate3(
      token_uri, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), label, &cid,
      GNUTLS_X509_FMT_DER, &pub, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN,
      GNUTLS_PKCS11_OBJ_FLAG_LOGIN | GNUTLS_PKCS11_OBJ_FLAG_MARK_SENSITIVE | GNUTLS_PKCS11_OBJ_FLAG_MARK_PRIVATE);
  if (rv < 0) return rv;
  long n = (long)pub.size;
  if (pub.size > spkilen) n = GNUTLS_E_SHORT_MEMORY_BUFFER; else memcpy(spki, pub.data, pub.size);
  gnutls_free(pub.data);
  return n;
}

int stoq_tls_credentials_new_pkcs11(gnutls_certificate_credentials_t *out, const char *cert_pem,
                                    size_t cert_len, const char *key_uri,
                                    const char *trust_pem, size_t trust_len) {
  gnutls_certificate_credentials_t cred;
  gnutls_pcert_st pcerts[16];
  unsigned npcerts = 16;
  gnutls_privkey_t key = NULL;
  *out = NULL;
  int rv = stoq_pkcs11_privkey_open(&key, key_uri);
  if (rv < 0) return rv;
  rv = gnutls_certificate_allocate_credentials(&cred);
  if (rv < 0) { gnutls_privkey_deinit(key); return rv; }
  gnutls_datum_t cert = {(unsigned char *)cert_pem, (unsigned)cert_len};
  rv = gnutls_pcert_list_import_x509_raw(pcerts, &npcerts, &cert, GNUTLS_X509_FMT_PEM, 0);
  if (rv < 0) { gnutls_privkey_deinit(key); goto fail; }
  /* On success the credentials own the certificates and the key. */
  rv = gnutls_certificate_set_key(cred, NULL, 0, pcerts, (int)npcerts, key);
  if (rv < 0) {
    for (unsigned i = 0; i < npcerts; i++) gnutls_pcert_deinit(&pcerts[i]);
    gnutls_privkey_deinit(key);
    goto fail;
  }
  if (trust_pem != NULL && trust_len > 0) {
    gnutls_datum_t trust = {(unsigned char *)trust_pem, (unsigned)trust_len};
    rv = gnutls_certificate_set_x509_trust_mem(cred, &trust, GNUTLS_X509_FMT_PEM);
    if (rv < 0) goto fail;
    if (rv == 0) { rv = GNUTLS_E_NO_CERTIFICATE_FOUND; goto fail; }
  }
  *out = cred;
  return 0;
fail:
  gnutls_certificate_free_credentials(cred);
  return rv;
}

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* 1 when the kernel's route to `remote` goes through a gateway (the peer is beyond a router),
   0 when it is on-link or local, -1 when the kernel did not say. One RTM_GETROUTE request on a
   netlink socket: the kernel answers it while sending, so the read does not wait. */
static int stoq_route_has_gateway(const struct sockaddr_in6 *remote) {
  struct {
    struct nlmsghdr nh;
    struct rtmsg rt;
    char attrs[64];
  } req;
  memset(&req, 0, sizeof(req));
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  req.nh.nlmsg_type = RTM_GETROUTE;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.rt.rtm_family = AF_INET6;
  req.rt.rtm_dst_len = 128;
  struct rtattr *rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
  rta->rta_type = RTA_DST;
  rta->rta_len = RTA_LENGTH(sizeof(remote->sin6_addr));
  memcpy(RTA_DATA(rta), &remote->sin6_addr, sizeof(remote->sin6_addr));
  req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  if (remote->sin6_scope_id != 0) {
    int oif = (int)remote->sin6_scope_id;
    rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
    rta->rta_type = RTA_OIF;
    rta->rta_len = RTA_LENGTH(sizeof(oif));
    memcpy(RTA_DATA(rta), &oif, sizeof(oif));
    req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -1;
  int result = -1;
  union {
    struct nlmsghdr nh;
    char bytes[8192];
  } reply;
  if (send(fd, &req, req.nh.nlmsg_len, 0) == (ssize_t)req.nh.nlmsg_len) {
    ssize_t n = recv(fd, &reply, sizeof(reply), MSG_DONTWAIT);
    struct nlmsghdr *nh = &reply.nh;
    if (n > 0 && NLMSG_OK(nh, (size_t)n) && nh->nlmsg_type == RTM_NEWROUTE &&
        nh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct rtmsg))) {
      struct rtmsg *rt = NLMSG_DATA(nh);
      int len = (int)RTM_PAYLOAD(nh);
      result = 0;
      for (struct rtattr *a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == RTA_GATEWAY || a->rta_type == RTA_VIA || a->rta_type == RTA_MULTIPATH) result = 1;
      }
    }
  }
  close(fd);
  return result;
}

int stoq_path_mtu(const struct sockaddr_in6 *local, const struct sockaddr_in6 *remote) {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rv = 0;
  if (local && !IN6_IS_ADDR_UNSPECIFIED(&local->sin6_addr)) {
    struct sockaddr_in6 src = *local;
    src.sin6_port = 0;
    if (bind(fd, (const struct sockaddr *)&src, sizeof(src)) != 0) rv = -errno;
  }
  if (rv == 0 && connect(fd, (const struct sockaddr *)remote, sizeof(*remote)) != 0) rv = -errno;
  if (rv == 0) {
    int mtu = 0;
    socklen_t len = sizeof(mtu);
    rv = getsockopt(fd, IPPROTO_IPV6, IPV6_MTU, &mtu, &len) == 0 ? mtu : -errno;
  }
  close(fd);
  /* Beyond a router the kernel knows the first hop's MTU only: trust no more than Ethernet's
     there (ngtcp2's path-MTU discovery takes it from 1200), so a jumbo LAN routed to a
     1500-byte internet does not send datagrams the next hop would fragment or drop. */
  if (rv > 1500 && stoq_route_has_gateway(remote) != 0) rv = 1500;
  return rv;
}
