#include "CNgtcp2Shims.h"
#include <string.h>
#include <gnutls/crypto.h>

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
      gnutls_session_set_verify_cert(session, NULL, 0);
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
