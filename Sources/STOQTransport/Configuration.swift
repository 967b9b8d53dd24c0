/// TLS settings of an endpoint: who we are, whom we trust, what we speak.
///
/// STOQ uses TLS 1.3 through GnuTLS. Certificates and keys are PEM: the local chain
/// (leaf first), its private key (P-256 ECDSA as PKCS#8 `PRIVATE KEY` or SEC1
/// `EC PRIVATE KEY`), and optional trust roots. A peer whose chain does not verify against
/// the trust roots is refused during the handshake, and the refusing side sends a TLS alert
/// so the other side sees a handshake failure too.
public struct TLSConfiguration: Sendable {
    /// A TLS 1.3 cipher suite a configuration can be restricted to.
    public enum CipherSuite: String, Sendable, CaseIterable {
        /// TLS_AES_128_GCM_SHA256
        case aes128GCM = "AES-128-GCM"
        /// TLS_AES_256_GCM_SHA384
        case aes256GCM = "AES-256-GCM"
        /// TLS_CHACHA20_POLY1305_SHA256
        case chacha20Poly1305 = "CHACHA20-POLY1305"
    }

    /// Local certificate chain, PEM, leaf first. May be nil for a client that presents none.
    public var certificateChainPEM: String?
    /// Private key of the leaf certificate, PEM; or the RFC 7512 `pkcs11:` URI of a key in a
    /// token (``TokenKey``), which then signs the handshake without leaving the token.
    public var privateKeyPEM: String?
    /// Trust roots (CA certificates), PEM. Peers must chain to one of them when verified.
    public var trustRootsPEM: String?
    /// Application protocols offered, in preference order (default `["stoq/1"]`).
    public var alpn: [String]
    /// Server side: ask clients for a certificate and verify it against ``trustRootsPEM``
    /// (mutual TLS). Only effective when trust roots are set.
    public var requireClientCertificate: Bool
    /// Client side: verify the server's chain against ``trustRootsPEM``. `false` accepts any
    /// server (`--insecure`); never use that across an untrusted network.
    public var verifyPeer: Bool
    /// Restrict TLS 1.3 cipher suites (nil = GnuTLS defaults).
    public var cipherSuites: [CipherSuite]?
    /// Server side, with ``requireClientCertificate``: ask clients for a certificate but also
    /// accept a client that presents none (an anonymous reader, `stoq node --public-read`). A
    /// certificate that is presented is still verified against ``trustRootsPEM``. The
    /// connection's ``Connection/peerCertificateChain`` is then empty; the application decides
    /// what such a client may do. Default false: mutual TLS.
    public var allowsAnonymousClients: Bool = false
    /// Client side: instead of ``trustRootsPEM``, accept a server whose chain holds a CA
    /// certificate with this SHA-256 of its DER SubjectPublicKeyInfo (the network CA a ticket
    /// names) and verifies to it. 32 bytes; nil: verify against the trust roots as usual.
    public var pinnedCASPKISHA256: [UInt8]? = nil

    /// Creates a TLS configuration.
    /// - Parameters:
    ///   - certificateChainPEM: local chain, leaf first (nil: present no certificate).
    ///   - privateKeyPEM: the leaf's private key.
    ///   - trustRootsPEM: CA certificates to verify peers against.
    ///   - alpn: protocols offered (default `["stoq/1"]`).
    ///   - requireClientCertificate: servers require and verify client certificates (default true).
    ///   - verifyPeer: clients verify the server (default true).
    ///   - cipherSuites: optional cipher restriction.
    public init(
        certificateChainPEM: String?, privateKeyPEM: String?, trustRootsPEM: String? = nil,
        alpn: [String] = ["stoq/1"], requireClientCertificate: Bool = true, verifyPeer: Bool = true,
        cipherSuites: [CipherSuite]? = nil
    ) {
        self.certificateChainPEM = certificateChainPEM
        self.privateKeyPEM = privateKeyPEM
        self.trustRootsPEM = trustRootsPEM
        self.alpn = alpn
        self.requireClientCertificate = requireClientCertificate
        self.verifyPeer = verifyPeer
        self.cipherSuites = cipherSuites
    }

    /// GnuTLS priority string for this configuration.
    var priorityString: String {
        var p = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3"
        if let suites = cipherSuites, !suites.isEmpty {
            p += ":-CIPHER-ALL"
            for s in suites { p += ":+\(s.rawValue)" }
        }
        return p
    }

    func validate() throws(STOQError) {
        guard !alpn.isEmpty, alpn.count <= 16, alpn.allSatisfy({ !$0.isEmpty && $0.utf8.count < 256 }) else {
            throw STOQError(.invalidArgument, "ALPN list must hold 1 to 16 non-empty protocol names")
        }
        if let pin = pinnedCASPKISHA256, pin.count != 32 {
            throw STOQError(.invalidArgument, "a pinned CA fingerprint is 32 bytes (SHA-256), got \(pin.count)")
        }
        if (certificateChainPEM == nil) != (privateKeyPEM == nil) {
            throw STOQError(.invalidArgument, "a certificate chain needs its private key and vice versa")
        }
    }
}

/// A sending rate limit: a token bucket of `bytesPerSecond` with room for `burst` bytes.
/// It throttles stream data only; ACKs and control frames always go out.
public struct RateLimit: Sendable, Hashable {
    /// Sustained rate.
    public var bytesPerSecond: UInt64
    /// Bucket depth.
    public var burst: UInt64
    /// Creates a limit (burst defaults to 1/10 s worth, at least 64 KiB).
    public init(bytesPerSecond: UInt64, burst: UInt64? = nil) {
        self.bytesPerSecond = bytesPerSecond
        self.burst = burst ?? max(bytesPerSecond / 10, 64 * 1024)
    }
}

/// Scheduling class of a stream: `control` data goes before `interactive`, which goes
/// before `bulk`; streams of one class share the link round-robin.
public enum StreamPriority: Int, Sendable, CaseIterable, Comparable {
    /// Small, urgent messages.
    case control = 0
    /// Request/response traffic.
    case interactive = 1
    /// Large transfers.
    case bulk = 2

    /// Orders by urgency (control first).
    public static func < (a: StreamPriority, b: StreamPriority) -> Bool { a.rawValue < b.rawValue }
}

/// Transport settings of an endpoint and its connections.
public struct EndpointConfiguration: Sendable {
    /// Close a connection after this long without traffic (negotiated: the lower of both sides).
    public var idleTimeout: Duration = .seconds(30)
    /// Send a PING after this long without traffic, keeping an idle connection alive (nil: off).
    public var keepAliveInterval: Duration? = nil
    /// Give up a handshake after this long.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Most connections this endpoint holds at once (nil: unlimited). A client's Initial beyond
    /// it is answered with CONNECTION_CLOSE (CONNECTION_REFUSED) and a reason, before any state.
    public var maxConnections: Int? = nil
    /// Most connections accepted from one IPv6 address at once (nil: unlimited); refused the
    /// same way. Connections this endpoint dials do not count.
    public var maxConnectionsPerAddress: Int? = nil
    /// Initial receive window per stream (grown by auto-tuning up to ``maxStreamReceiveWindow``).
    public var streamReceiveWindow: UInt64 = 1 << 20
    /// Initial receive window per connection.
    public var connectionReceiveWindow: UInt64 = 4 << 20
    /// Upper bound for the stream window auto-tuning.
    public var maxStreamReceiveWindow: UInt64 = 16 << 20
    /// Upper bound for the connection window auto-tuning.
    public var maxConnectionReceiveWindow: UInt64 = 64 << 20
    /// Concurrent bidirectional streams the peer may open.
    public var maxIncomingBidirectionalStreams: UInt64 = 1024
    /// Concurrent unidirectional streams the peer may open.
    public var maxIncomingUnidirectionalStreams: UInt64 = 1024
    /// `write` suspends while a stream holds more than this many unacknowledged bytes.
    public var streamSendBufferLimit: Int = 4 << 20
    /// Per-connection sending rate limit (nil: only congestion control limits).
    public var rateLimit: RateLimit? = nil
    /// Validate client addresses with a stateless Retry before creating state (default on).
    public var addressValidation: Bool = true
    /// Use UDP generic segmentation offload when sending, if the kernel has it.
    public var useGSO: Bool = true
    /// Use UDP generic receive offload when receiving, if the kernel has it.
    public var useGRO: Bool = true
    /// Most packets in one GSO batch (also capped so a batch stays under 64 KiB).
    public var maxBatchPackets: Int = 64
    /// Ack-eliciting packets received before an ACK goes out at once (otherwise after the
    /// peer's max_ack_delay). ngtcp2's default is 2; 8 costs the receiver far fewer ACK
    /// packets at high rates (measured: about 1.6x single-connection throughput on [::1]).
    public var immediateAckThreshold: Int = 8
    /// Largest UDP payload sent (clamped to 1200...65527; the peer's max_udp_payload_size caps
    /// it too). Above 1452 the size is used at once, without probing: set it only where every
    /// hop takes it. nil (the default): automatic per connection, from the kernel's path MTU to
    /// the peer (the route's interface MTU, lowered by ICMPv6 Packet Too Big; at most 1500 when
    /// the route goes through a gateway) minus 48 bytes of IPv6 and UDP headers: 65488 on
    /// loopback, 8952 to a peer on a 9000-byte jumbo link; where that is 1452 or less, ngtcp2's
    /// own path-MTU discovery (1200 up to 1452) as before. The
    /// environment variable `STOQ_MAX_UDP_PAYLOAD` sets it for every endpoint that leaves it nil.
    public var maxUDPPayloadSize: Int? = nil
    /// SO_SNDBUF / SO_RCVBUF of the UDP socket.
    public var socketBufferSize: Int = 8 << 20
    /// UDP sockets, each with its own event loop, bound to the same address and port with
    /// `SO_REUSEPORT` (1...64; capped at the loops the event loop group has). Each connection
    /// runs on one loop: the kernel spreads clients over the sockets by address and port, a new
    /// connection is placed on the loop holding fewest, and a datagram reaching another loop's
    /// socket (after a client's address changed) is handed to its connection's loop. N > 1 lets
    /// a server with many connections use N cores; one connection still uses one. Default 1.
    public var eventLoops: Int = 1

    /// Default settings.
    public init() {}
}

extension Duration {
    var nanoseconds: UInt64 {
        let (s, a) = components
        return UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, a) / 1_000_000_000)
    }
}
