#ifndef STOQ_CNGTCP2_SHIMS_H
#define STOQ_CNGTCP2_SHIMS_H
// Prefixed wrappers for ngtcp2's *_versioned macros, which Swift cannot call.
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <gnutls/gnutls.h>
#endif
