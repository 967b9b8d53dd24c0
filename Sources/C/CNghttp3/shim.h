#ifndef STOQ_CNGHTTP3_SHIM_H
#define STOQ_CNGHTTP3_SHIM_H
// nghttp3 (HTTP/3 framing and QPACK) for STOQHTTP's HTTP/3 server. Its *_new and
// *_default entry points are macros over *_versioned functions; Swift calls the versioned
// functions directly with NGHTTP3_CALLBACKS_VERSION / NGHTTP3_SETTINGS_VERSION, so no C
// shim is needed.
#include <nghttp3/nghttp3.h>
#endif
