import CNgtcp2
import CNgtcp2Shims
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The network path of a packet: our local socket address and the peer's.
public struct QUICPath: Hashable, Sendable, CustomStringConvertible {
    /// Local address.
    public var local: SocketAddress
    /// Remote address.
    public var remote: SocketAddress
    /// Creates a path.
    public init(local: SocketAddress, remote: SocketAddress) {
        self.local = local
        self.remote = remote
    }
    /// `local -> remote`.
    public var description: String { "\(local) -> \(remote)" }
}

/// Bytes ngtcp2 lends for the duration of one callback; copy them out with ``write(to:)``.
struct LentBytes {
    fileprivate let base: UnsafePointer<UInt8>?
    /// Number of bytes.
    let count: Int

    /// Appends the bytes to `buffer`.
    func write(to buffer: inout ByteBuffer) {
        guard let base, count > 0 else { return }
        buffer.writeBytes(UnsafeRawBufferPointer(start: base, count: count))
    }
}

/// Callbacks from ngtcp2, delivered synchronously while a call into the connection runs.
protocol NGTCP2ConnectionDelegate: AnyObject {
    func ngtcp2HandshakeCompleted()
    func ngtcp2HandshakeConfirmed()
    func ngtcp2StreamOpened(_ streamID: Int64)
    func ngtcp2StreamData(_ streamID: Int64, _ data: LentBytes, fin: Bool)
    func ngtcp2StreamAcked(_ streamID: Int64, offset: UInt64, length: UInt64)
    func ngtcp2StreamClosed(_ streamID: Int64, applicationCode: UInt64?)
    func ngtcp2StreamReset(_ streamID: Int64, applicationCode: UInt64)
    func ngtcp2StopSending(_ streamID: Int64, applicationCode: UInt64)
    func ngtcp2ExtendMaxStreamData(_ streamID: Int64)
    func ngtcp2ExtendMaxStreams()
    func ngtcp2NewConnectionID(_ id: ConnectionID)
    func ngtcp2RemoveConnectionID(_ id: ConnectionID)
}

/// Everything needed to create one ngtcp2 connection.
struct NGTCP2ConnectionSetup {
    var isServer: Bool
    var version: UInt32 = 1
    var dcid: ConnectionID
    var scid: ConnectionID
    var originalDCID: ConnectionID?
    var retrySCID: ConnectionID?
    var token: [UInt8] = []
    var path: QUICPath
    var now: UInt64
    var streamWindow: UInt64
    var connectionWindow: UInt64
    var maxStreamWindow: UInt64
    var maxConnectionWindow: UInt64
    var maxStreamsBidi: UInt64
    var maxStreamsUni: UInt64
    var idleTimeoutNanos: UInt64
    var handshakeTimeoutNanos: UInt64
    var keepAliveNanos: UInt64?
    /// Packets received before an ACK is sent at once (ngtcp2 default 2).
    var ackThreshold: Int
    /// Largest UDP payload to send (nil: ngtcp2's default, 1452, with its path-MTU discovery).
    var maxUDPPayloadSize: Int? = nil
    var statelessResetSecret: [UInt8]
    // TLS
    var credentials: TLSCredentials
    var priority: String
    var alpn: [String]
    var serverName: String?
    var verifyPeer: Bool
    var requireClientCertificate: Bool
    /// Server: accept clients without a certificate (see ``TLSConfiguration/allowsAnonymousClients``).
    var allowsAnonymousClients: Bool = false
    /// Client: the network CA's SPKI SHA-256 the server's chain must verify to.
    var pinnedCA: [UInt8]? = nil
}

/// Owns one `ngtcp2_conn` and its GnuTLS session. Not thread-safe: one owner drives it.
final class NGTCP2Connection {
    enum WriteStatus {
        case ok
        case writeMore
        case streamBlocked
        case streamShut
        case failed(Int32)
    }

    struct WriteResult {
        var packetLength: Int
        var consumed: Int
        var status: WriteStatus
    }

    enum ReadOutcome {
        case ok
        /// The peer closed the connection (we are draining).
        case draining
        /// Drop the connection without sending anything.
        case drop
        /// The TLS handshake failed on our side (alert to send).
        case tlsFailure
        /// Any other protocol failure; send a CONNECTION_CLOSE with this library error.
        case failed(Int32)
    }

    /// How the peer closed the connection.
    struct CloseInfo {
        var isApplication: Bool
        var isIdle: Bool
        var code: UInt64
        var reason: String
    }

    private var conn: OpaquePointer!
    private var session: OpaquePointer?
    private let connRef: UnsafeMutablePointer<stoq_conn_ref>
    private let readPath: UnsafeMutablePointer<ngtcp2_path_storage>
    private let writePath: UnsafeMutablePointer<ngtcp2_path_storage>
    private let vecs: UnsafeMutablePointer<ngtcp2_vec>
    private static let maxVecs = 16
    private var readPathValue: QUICPath
    /// Path of the last packet written (converted only when it changes).
    private(set) var currentWritePath: QUICPath
    private let lastWriteSockaddrs: UnsafeMutablePointer<ngtcp2_path_storage>
    let credentials: TLSCredentials
    let isServer: Bool
    private let resetSecret: [UInt8]
    weak var delegate: NGTCP2ConnectionDelegate?
    private let allocator = ByteBufferAllocator()

    init(_ s: NGTCP2ConnectionSetup) throws(STOQError) {
        self.isServer = s.isServer
        self.credentials = s.credentials
        self.resetSecret = s.statelessResetSecret
        self.readPathValue = s.path
        self.currentWritePath = s.path
        connRef = .allocate(capacity: 1)
        connRef.initialize(to: stoq_conn_ref())
        connRef.pointee.ref = ngtcp2_crypto_conn_ref(get_conn: stoq_conn_ref_get_conn, user_data: nil)
        if s.isServer {
            connRef.pointee.client_cert_optional = (s.allowsAnonymousClients && s.requireClientCertificate && s.credentials.hasTrustRoots) ? 1 : 0
            connRef.pointee.verify_cache = s.credentials.verifyCache
        } else if let pin = s.pinnedCA, pin.count == 32 {
            connRef.pointee.has_pin = 1
            withUnsafeMutableBytes(of: &connRef.pointee.pin) { $0.copyBytes(from: pin) }
        }
        readPath = .allocate(capacity: 1)
        readPath.initialize(to: ngtcp2_path_storage())
        writePath = .allocate(capacity: 1)
        writePath.initialize(to: ngtcp2_path_storage())
        lastWriteSockaddrs = .allocate(capacity: 1)
        lastWriteSockaddrs.initialize(to: ngtcp2_path_storage())
        vecs = .allocate(capacity: Self.maxVecs)
        vecs.initialize(repeating: ngtcp2_vec(), count: Self.maxVecs)
        Self.store(s.path, in: readPath)
        Self.store(s.path, in: lastWriteSockaddrs)
        ngtcp2_path_storage_zero(writePath)

        var cb = ngtcp2_callbacks()
        stoq_callbacks_init_crypto(&cb, s.isServer ? 1 : 0)
        Self.installCallbacks(&cb)

        var settings = ngtcp2_settings()
        stoq_settings_default(&settings)
        settings.initial_ts = s.now
        settings.cc_algo = NGTCP2_CC_ALGO_CUBIC
        settings.max_window = s.maxConnectionWindow
        settings.max_stream_window = s.maxStreamWindow
        settings.handshake_timeout = s.handshakeTimeoutNanos
        settings.ack_thresh = s.ackThreshold
        // ngtcp2 0.12's PMTUD probes at most 1492 - 48 bytes; a larger size (the kernel's path
        // MTU says the path takes it: loopback, jumbo frames) is used at once, without shaping.
        if let configured = s.maxUDPPayloadSize {
            let payload = min(max(configured, 1200), Self.maxUDPPayload)
            settings.max_tx_udp_payload_size = payload
            settings.no_tx_udp_payload_size_shaping = payload > Self.ethernetPayload ? 1 : 0
        }

        var params = ngtcp2_transport_params()
        stoq_transport_params_default(&params)
        params.initial_max_stream_data_bidi_local = s.streamWindow
        params.initial_max_stream_data_bidi_remote = s.streamWindow
        params.initial_max_stream_data_uni = s.streamWindow
        params.initial_max_data = s.connectionWindow
        params.initial_max_streams_bidi = s.maxStreamsBidi
        params.initial_max_streams_uni = s.maxStreamsUni
        params.max_idle_timeout = s.idleTimeoutNanos
        params.active_connection_id_limit = 4
        if s.isServer {
            params.original_dcid = (s.originalDCID ?? s.dcid).ngtcp2
            if let retry = s.retrySCID {
                params.retry_scid = retry.ngtcp2
                params.retry_scid_present = 1
            }
            var scid = s.scid.ngtcp2
            withUnsafeMutableBytes(of: &params.stateless_reset_token) { tok in
                _ = ngtcp2_crypto_generate_stateless_reset_token(
                    tok.baseAddress!.assumingMemoryBound(to: UInt8.self), s.statelessResetSecret,
                    s.statelessResetSecret.count, &scid)
            }
            params.stateless_reset_token_present = 1
        }

        var dcid = s.dcid.ngtcp2
        var scid = s.scid.ngtcp2
        var newConn: OpaquePointer?
        let userData = Unmanaged.passUnretained(self).toOpaque()
        let rv: Int32 = s.token.withUnsafeBufferPointer { tok in
            if let base = tok.baseAddress, tok.count > 0 {
                settings.token = ngtcp2_vec(base: UnsafeMutablePointer(mutating: base), len: tok.count)
            }
            if s.isServer {
                return stoq_conn_server_new(
                    &newConn, &dcid, &scid, &readPath.pointee.path, s.version, &cb, &settings, &params,
                    userData)
            } else {
                return stoq_conn_client_new(
                    &newConn, &dcid, &scid, &readPath.pointee.path, s.version, &cb, &settings, &params,
                    userData)
            }
        }
        guard rv == 0, let newConn else {
            throw STOQError(.internalError, "ngtcp2 could not create the connection: \(ngtcp2ErrorString(rv))")
        }
        conn = newConn
        connRef.pointee.ref.user_data = UnsafeMutableRawPointer(newConn)
        if let keepAlive = s.keepAliveNanos {
            ngtcp2_conn_set_keep_alive_timeout(newConn, keepAlive)
        }

        // GnuTLS session.
        let alpnC = s.alpn.map { strdup($0) }
        defer { alpnC.forEach { free($0) } }
        var newSession: gnutls_session_t?
        let alpnPtrs: [UnsafePointer<CChar>?] = alpnC.map { UnsafePointer($0) }
        // The conn_ref struct starts with the ngtcp2_crypto_conn_ref (CNgtcp2Shims.h).
        let cryptoRef = UnsafeMutableRawPointer(connRef).assumingMemoryBound(to: ngtcp2_crypto_conn_ref.self)
        let optionalClientCertificate = connRef.pointee.client_cert_optional != 0
        let pinned = connRef.pointee.has_pin != 0
        let trv: Int32 = alpnPtrs.withUnsafeBufferPointer { alpns in
            stoq_tls_session_new(
                &newSession, s.isServer ? 1 : 0, s.credentials.raw, s.priority, alpns.baseAddress,
                alpns.count, s.serverName, (s.verifyPeer && !pinned) ? 1 : 0,
                (s.requireClientCertificate && s.credentials.hasTrustRoots && !optionalClientCertificate) ? 1 : 0, cryptoRef)
        }
        if trv == 0, let newSession, optionalClientCertificate || pinned {
            stoq_tls_session_set_verification(newSession, connRef)
        }
        guard trv == 0, let newSession else {
            throw STOQError(.invalidArgument, "could not set up TLS: \(gnutlsErrorString(trv)); check the cipher restriction and ALPN list")
        }
        session = newSession
        ngtcp2_conn_set_tls_native_handle(newConn, UnsafeMutableRawPointer(newSession))
    }

    deinit {
        if let conn { ngtcp2_conn_del(conn) }
        if let session { gnutls_deinit(session) }
        connRef.deallocate()
        readPath.deallocate()
        writePath.deallocate()
        lastWriteSockaddrs.deallocate()
        vecs.deallocate()
    }

    // MARK: Paths

    /// Largest UDP payload over IPv6 (65535 - 8 bytes of UDP header).
    static let maxUDPPayload = 65527
    /// UDP payload of a 1500-byte Ethernet MTU over IPv6 (1500 - 40 - 8).
    static let ethernetPayload = 1452

    /// IPv6 (40) plus UDP (8) header bytes: the UDP payload of a datagram is the MTU minus these.
    static let ipv6UDPHeaders = 48

    /// The kernel's path MTU from `path.local` to `path.remote` (the route's interface MTU, or
    /// lower after an ICMPv6 Packet Too Big), or nil when it cannot tell (no route, not IPv6).
    /// Costs a throwaway socket: ask once per connection, not per packet.
    static func pathMTU(_ path: QUICPath) -> Int? {
        guard case .v6(let l) = path.local, case .v6(let r) = path.remote else { return nil }
        var la = l.address
        var ra = r.address
        let mtu = stoq_path_mtu(&la, &ra)
        return mtu >= 1280 ? Int(mtu) : nil
    }

    /// The UDP payload size to use on `path` when none is configured: the kernel's path MTU
    /// minus the IPv6 and UDP headers when that is above ngtcp2's own PMTUD ceiling (1452),
    /// otherwise nil (ngtcp2's default, 1200 raised by its path-MTU discovery up to 1452).
    static func automaticPayloadSize(pathMTU: Int?) -> Int? {
        guard let mtu = pathMTU else { return nil }
        let payload = min(mtu - ipv6UDPHeaders, maxUDPPayload)
        return payload > ethernetPayload ? payload : nil
    }

    private static func store(_ path: QUICPath, in storage: UnsafeMutablePointer<ngtcp2_path_storage>) {
        guard case .v6(let l) = path.local, case .v6(let r) = path.remote else {
            ngtcp2_path_storage_zero(storage)
            return
        }
        var la = l.address
        var ra = r.address
        withUnsafePointer(to: &la) { lp in
            withUnsafePointer(to: &ra) { rp in
                lp.withMemoryRebound(to: ngtcp2_sockaddr.self, capacity: 1) { lp in
                    rp.withMemoryRebound(to: ngtcp2_sockaddr.self, capacity: 1) { rp in
                        ngtcp2_path_storage_init(
                            storage, lp, ngtcp2_socklen(MemoryLayout<sockaddr_in6>.size), rp,
                            ngtcp2_socklen(MemoryLayout<sockaddr_in6>.size), nil)
                    }
                }
            }
        }
    }

    private static func load(_ path: UnsafePointer<ngtcp2_path>) -> QUICPath? {
        guard let l = address(path.pointee.local), let r = address(path.pointee.remote) else { return nil }
        return QUICPath(local: l, remote: r)
    }

    private static func address(_ a: ngtcp2_addr) -> SocketAddress? {
        guard let p = a.addr, a.addrlen >= MemoryLayout<sockaddr_in6>.size else { return nil }
        let sin6 = UnsafeRawPointer(p).loadUnaligned(as: sockaddr_in6.self)
        guard sin6.sin6_family == sa_family_t(AF_INET6) else { return nil }
        return SocketAddress(sin6)
    }

    // MARK: Packets

    /// Feeds one received UDP payload.
    func read(_ packet: ByteBuffer, path: QUICPath, now: UInt64) -> ReadOutcome {
        if path != readPathValue {
            readPathValue = path
            Self.store(path, in: readPath)
        }
        let rv = packet.withUnsafeReadableBytes { raw -> Int32 in
            guard let base = raw.baseAddress else { return 0 }
            return stoq_conn_read_pkt(
                conn, &readPath.pointee.path, base.assumingMemoryBound(to: UInt8.self), raw.count, now)
        }
        switch rv {
        case 0: return .ok
        case NGTCP2_ERR_DRAINING: return .draining
        case NGTCP2_ERR_DROP_CONN: return .drop
        case NGTCP2_ERR_CRYPTO: return .tlsFailure
        case NGTCP2_ERR_DISCARD_PKT: return .ok
        default: return .failed(rv)
        }
    }

    /// Largest UDP payload ngtcp2 will write now.
    var maxPacketSize: Int { ngtcp2_conn_get_max_tx_udp_payload_size(conn) }

    /// Writes at most one packet at the writer index of `buffer` (capacity must already be
    /// reserved), optionally carrying data of `streamID` from `data`.
    func writePacket(
        into buffer: inout ByteBuffer, maxSize: Int, streamID: Int64, data: SendBuffer?, fin: Bool,
        now: UInt64
    ) -> WriteResult {
        var count = 0
        var flags: UInt32 = 0
        if streamID >= 0 {
            flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_MORE)
            if let data {
                let (n, all) = data.fill(vecs, max: Self.maxVecs)
                count = n
                if fin && all { flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) }
            } else if fin {
                flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN)
            }
        }
        var pdatalen: ngtcp2_ssize = -1
        var result: ngtcp2_ssize = 0
        let vecs = self.vecs
        let conn = self.conn
        let writePath = self.writePath
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: maxSize) { dest -> Int in
            result = stoq_conn_writev_stream(
                conn, &writePath.pointee.path, dest.baseAddress!.assumingMemoryBound(to: UInt8.self),
                min(maxSize, dest.count), &pdatalen, flags, streamID, count > 0 ? vecs : nil, count, now)
            return result > 0 ? Int(result) : 0
        }
        let consumed = Int(pdatalen)
        if consumed > 0, let data { data.consumed(consumed) }
        if result > 0 {
            noteWritePath()
            return WriteResult(packetLength: Int(result), consumed: consumed, status: .ok)
        }
        switch Int32(result) {
        case 0: return WriteResult(packetLength: 0, consumed: consumed, status: .ok)
        case NGTCP2_ERR_WRITE_MORE: return WriteResult(packetLength: 0, consumed: consumed, status: .writeMore)
        case NGTCP2_ERR_STREAM_DATA_BLOCKED:
            return WriteResult(packetLength: 0, consumed: consumed, status: .streamBlocked)
        case NGTCP2_ERR_STREAM_SHUT_WR, NGTCP2_ERR_STREAM_NOT_FOUND:
            return WriteResult(packetLength: 0, consumed: consumed, status: .streamShut)
        default: return WriteResult(packetLength: 0, consumed: consumed, status: .failed(Int32(result)))
        }
    }

    /// Whether the path of the packet just written differs from the last one.
    private(set) var writePathChanged = false

    private func noteWritePath() {
        let a = writePath.pointee.path
        let b = lastWriteSockaddrs.pointee.path
        let same =
            a.local.addrlen == b.local.addrlen && a.remote.addrlen == b.remote.addrlen
            && memcmp(a.local.addr, b.local.addr, Int(a.local.addrlen)) == 0
            && memcmp(a.remote.addr, b.remote.addr, Int(a.remote.addrlen)) == 0
        writePathChanged = false
        if !same, let p = withUnsafePointer(to: &writePath.pointee.path, { Self.load($0) }) {
            currentWritePath = p
            Self.store(p, in: lastWriteSockaddrs)
            writePathChanged = true
        }
    }

    /// Writes a CONNECTION_CLOSE packet. Exactly one of the reasons applies:
    /// an application close (`applicationCode`), a TLS alert, or a library error.
    func writeConnectionClose(
        into buffer: inout ByteBuffer, applicationCode: UInt64?, reason: String, tlsAlert: Bool,
        libraryError: Int32?, now: UInt64
    ) -> Int {
        var ccerr = ngtcp2_connection_close_error()
        var reasonBytes = Array(reason.utf8.prefix(512))
        let size = max(maxPacketSize, 1200)
        var written = 0
        reasonBytes.withUnsafeMutableBufferPointer { r in
            if let code = applicationCode {
                ngtcp2_connection_close_error_set_application_error(&ccerr, code, r.baseAddress, r.count)
            } else if tlsAlert {
                ngtcp2_connection_close_error_set_transport_error_tls_alert(
                    &ccerr, ngtcp2_conn_get_tls_alert(conn), r.baseAddress, r.count)
            } else {
                ngtcp2_connection_close_error_set_transport_error_liberr(
                    &ccerr, libraryError ?? 0, r.baseAddress, r.count)
            }
            let conn = self.conn
            let writePath = self.writePath
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { dest -> Int in
                let n = stoq_conn_write_connection_close(
                    conn, &writePath.pointee.path, dest.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    min(size, dest.count), &ccerr, now)
                written = n > 0 ? Int(n) : 0
                return written
            }
        }
        if written > 0 { noteWritePath() }
        return written
    }

    /// How the peer closed the connection (valid after `.draining`).
    var peerClose: CloseInfo {
        var ccerr = ngtcp2_connection_close_error()
        ngtcp2_conn_get_connection_close_error(conn, &ccerr)
        var reason = ""
        if let r = ccerr.reason, ccerr.reasonlen > 0 {
            reason = String(decoding: UnsafeBufferPointer(start: r, count: ccerr.reasonlen), as: UTF8.self)
        }
        return CloseInfo(
            isApplication: ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION,
            isIdle: ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT_IDLE_CLOSE,
            code: ccerr.error_code, reason: reason)
    }

    // MARK: Timers

    /// Next deadline in nanoseconds (`UInt64.max` if none).
    var expiry: UInt64 { ngtcp2_conn_get_expiry(conn) }

    enum ExpiryOutcome { case ok, idle, handshakeTimeout, failed(Int32) }

    func handleExpiry(now: UInt64) -> ExpiryOutcome {
        let rv = ngtcp2_conn_handle_expiry(conn, now)
        switch rv {
        case 0: return .ok
        case NGTCP2_ERR_IDLE_CLOSE: return .idle
        case NGTCP2_ERR_HANDSHAKE_TIMEOUT: return .handshakeTimeout
        default: return .failed(rv)
        }
    }

    // MARK: Streams

    /// Opens a local stream; nil when the peer's stream limit is reached.
    func openStream(bidirectional: Bool) -> Int64? {
        var id: Int64 = -1
        let rv =
            bidirectional
            ? ngtcp2_conn_open_bidi_stream(conn, &id, nil) : ngtcp2_conn_open_uni_stream(conn, &id, nil)
        return rv == 0 ? id : nil
    }

    func shutdownStreamWrite(_ id: Int64, code: UInt64) { _ = ngtcp2_conn_shutdown_stream_write(conn, id, code) }
    func shutdownStreamRead(_ id: Int64, code: UInt64) { _ = ngtcp2_conn_shutdown_stream_read(conn, id, code) }
    func extendStreamOffset(_ id: Int64, by n: UInt64) { _ = ngtcp2_conn_extend_max_stream_offset(conn, id, n) }
    func extendConnectionOffset(by n: UInt64) { ngtcp2_conn_extend_max_offset(conn, n) }
    func extendMaxStreams(bidirectional: Bool, by n: UInt64) {
        if bidirectional { ngtcp2_conn_extend_max_streams_bidi(conn, Int(n)) } else { ngtcp2_conn_extend_max_streams_uni(conn, Int(n)) }
    }
    var streamsBidiLeft: UInt64 { ngtcp2_conn_get_streams_bidi_left(conn) }
    var streamsUniLeft: UInt64 { ngtcp2_conn_get_streams_uni_left(conn) }

    // MARK: Migration, state, statistics

    /// Client only: moves the connection to `path` at once (path validation still runs).
    func migrate(to path: QUICPath, now: UInt64) -> Bool {
        let storage = UnsafeMutablePointer<ngtcp2_path_storage>.allocate(capacity: 1)
        defer { storage.deallocate() }
        Self.store(path, in: storage)
        let rv = ngtcp2_conn_initiate_immediate_migration(conn, &storage.pointee.path, now)
        if rv == NGTCP2_ERR_CONN_ID_BLOCKED {
            // No unused connection ID of the peer's is left (several moves in quick succession use
            // them up faster than the peer replaces the retired ones): move anyway, keeping the
            // current one. The peer sees what a NAT rebinding looks like and validates the new path;
            // without this the connection stayed on the old socket, which the caller then closes.
            ngtcp2_conn_set_local_addr(conn, &storage.pointee.path.local)
            return true
        }
        return rv == 0
    }

    var isHandshakeCompleted: Bool { ngtcp2_conn_get_handshake_completed(conn) != 0 }

    /// All source connection IDs currently in use by this connection.
    var sourceConnectionIDs: [ConnectionID] {
        let n = ngtcp2_conn_get_num_scid(conn)
        var cids = [ngtcp2_cid](repeating: ngtcp2_cid(), count: n)
        let got = ngtcp2_conn_get_scid(conn, &cids)
        return cids.prefix(got).map(ConnectionID.init)
    }

    struct Stat {
        var smoothedRTT: UInt64
        var minRTT: UInt64
        var cwnd: UInt64
        var bytesInFlight: UInt64
    }

    var stat: Stat {
        var s = ngtcp2_conn_stat()
        stoq_conn_get_conn_stat(conn, &s)
        return Stat(smoothedRTT: s.smoothed_rtt, minRTT: s.min_rtt, cwnd: s.cwnd, bytesInFlight: s.bytes_in_flight)
    }

    // MARK: TLS

    var negotiatedALPN: String? {
        guard let session else { return nil }
        var buf = [CChar](repeating: 0, count: 256)
        let n = stoq_tls_selected_alpn(session, &buf, buf.count)
        guard n >= 0 else { return nil }
        return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    var peerCertificates: [[UInt8]] {
        guard let session else { return [] }
        let count = stoq_tls_peer_cert_count(session)
        var out: [[UInt8]] = []
        for i in 0..<count {
            var buf = [UInt8](repeating: 0, count: 4096)
            var n = stoq_tls_peer_cert(session, i, &buf, buf.count)
            if n < 0 {
                buf = [UInt8](repeating: 0, count: Int(-n))
                n = stoq_tls_peer_cert(session, i, &buf, buf.count)
            }
            if n > 0 { out.append(Array(buf.prefix(Int(n)))) }
        }
        return out
    }

    /// Why our verification of the peer's certificate failed, or nil if it did not.
    var verifyFailure: String? {
        guard let session else { return nil }
        var buf = [CChar](repeating: 0, count: 512)
        let n = stoq_tls_verify_failure(session, &buf, buf.count)
        guard n > 0 else { return nil }
        return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The TLS alert this side raised (after `.tlsFailure`).
    var localTLSAlert: UInt8 { ngtcp2_conn_get_tls_alert(conn) }

    static func alertName(_ alert: UInt8) -> String {
        guard let s = gnutls_alert_get_name(gnutls_alert_description_t(UInt32(alert))) else { return "alert \(alert)" }
        return String(cString: s)
    }

    // MARK: Callbacks (C -> Swift)

    fileprivate func newConnectionID(_ cid: UnsafeMutablePointer<ngtcp2_cid>, _ token: UnsafeMutablePointer<UInt8>, _ len: Int) -> Int32 {
        var bytes = [UInt8](repeating: 0, count: len)
        _ = stoq_random(&bytes, len)
        bytes.withUnsafeBufferPointer { b in
            ngtcp2_cid_init(cid, b.baseAddress, len)
        }
        guard ngtcp2_crypto_generate_stateless_reset_token(token, resetSecret, resetSecret.count, cid) == 0 else {
            return NGTCP2_ERR_CALLBACK_FAILURE
        }
        delegate?.ngtcp2NewConnectionID(ConnectionID(cid.pointee))
        return 0
    }


    private static func installCallbacks(_ cb: inout ngtcp2_callbacks) {
        cb.handshake_completed = { _, ud in
            me(ud).delegate?.ngtcp2HandshakeCompleted()
            return 0
        }
        cb.handshake_confirmed = { _, ud in
            me(ud).delegate?.ngtcp2HandshakeConfirmed()
            return 0
        }
        cb.recv_stream_data = { _, flags, sid, _, data, len, ud, _ in
            let c = me(ud)
            let fin = flags & UInt32(NGTCP2_STREAM_DATA_FLAG_FIN) != 0
            c.delegate?.ngtcp2StreamData(sid, LentBytes(base: data, count: len), fin: fin)
            return 0
        }
        cb.acked_stream_data_offset = { _, sid, offset, len, ud, _ in
            me(ud).delegate?.ngtcp2StreamAcked(sid, offset: offset, length: len)
            return 0
        }
        cb.stream_open = { _, sid, ud in
            me(ud).delegate?.ngtcp2StreamOpened(sid)
            return 0
        }
        cb.stream_close = { _, flags, sid, code, ud, _ in
            let set = flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0
            me(ud).delegate?.ngtcp2StreamClosed(sid, applicationCode: set ? code : nil)
            return 0
        }
        cb.stream_reset = { _, sid, _, code, ud, _ in
            me(ud).delegate?.ngtcp2StreamReset(sid, applicationCode: code)
            return 0
        }
        cb.stream_stop_sending = { _, sid, code, ud, _ in
            me(ud).delegate?.ngtcp2StopSending(sid, applicationCode: code)
            return 0
        }
        cb.extend_max_stream_data = { _, sid, _, ud, _ in
            me(ud).delegate?.ngtcp2ExtendMaxStreamData(sid)
            return 0
        }
        cb.extend_max_local_streams_bidi = { _, _, ud in
            me(ud).delegate?.ngtcp2ExtendMaxStreams()
            return 0
        }
        cb.extend_max_local_streams_uni = { _, _, ud in
            me(ud).delegate?.ngtcp2ExtendMaxStreams()
            return 0
        }
        cb.get_new_connection_id = { _, cid, token, len, ud in
            guard let cid, let token else { return NGTCP2_ERR_CALLBACK_FAILURE }
            return me(ud).newConnectionID(cid, token, len)
        }
        cb.remove_connection_id = { _, cid, ud in
            if let cid { me(ud).delegate?.ngtcp2RemoveConnectionID(ConnectionID(cid.pointee)) }
            return 0
        }
    }
}

private func me(_ ud: UnsafeMutableRawPointer?) -> NGTCP2Connection {
    Unmanaged<NGTCP2Connection>.fromOpaque(ud!).takeUnretainedValue()
}

