/// # STOQTransport
///
/// QUIC over IPv6 for STOQ, built on ngtcp2 0.12 and GnuTLS (TLS 1.3) from Debian.
///
/// Layers, bottom up:
/// - `NGTCP2/`: the only code that touches the C libraries. `NGTCP2Connection` owns an
///   `ngtcp2_conn` and its `gnutls_session_t`; `TLSCredentials` owns the certificate
///   credentials; `SendBuffer` owns stream bytes until the peer acknowledges them;
///   `NGTCP2Packet` decodes headers and makes/checks Retry tokens.
/// - `QUICConnection`: a sans-IO state machine (`handle…`/`poll…`, explicit clock) with the
///   send scheduler (priority classes, round-robin, token-bucket rate limit).
/// - `EndpointCore`/`ConnectionCore`/`StreamCore`: the event-loop side — routing by
///   connection ID, Retry, GSO/GRO, one timer per connection, continuations.
/// - Public async API: ``Endpoint``, ``Connection``, ``QUICStream``, ``STOQError``.
///
/// Goals: correct QUIC (ngtcp2 does the protocol), mutual TLS with a network CA, IPv6 only,
/// back-pressure end to end, no per-packet allocation on the hot path.
/// Non-goals: 0-RTT, HTTP/3, datagrams (RFC 9221), IPv4.
public enum STOQTransportModule {}
