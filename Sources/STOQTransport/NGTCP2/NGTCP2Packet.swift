import CNgtcp2
import CNgtcp2Shims
import NIOCore

/// Stateless packet helpers for an endpoint: header decoding for demultiplexing, the
/// server's first-packet check, and Retry (address validation) tokens.
enum NGTCP2Packet {
    /// Length of the connection IDs STOQ issues (short-header packets carry no length).
    static let localCIDLength = 16

    struct Header {
        /// The client speaks a QUIC version we do not: answer with Version Negotiation.
        var needsVersionNegotiation = false
        var isLong: Bool
        var version: UInt32
        var dcid: ConnectionID
        var scid: ConnectionID
    }

    /// The destination connection ID of a short-header (1-RTT) packet, read straight from its
    /// bytes (STOQ's IDs are ``localCIDLength`` long); nil for long headers and runts.
    @inline(__always)
    static func shortHeaderDCID(_ packet: ByteBuffer) -> ConnectionID? {
        packet.withUnsafeReadableBytes { raw -> ConnectionID? in
            guard raw.count > localCIDLength, let base = raw.baseAddress,
                base.load(as: UInt8.self) & 0x80 == 0
            else { return nil }
            return ConnectionID(pointer: base.assumingMemoryBound(to: UInt8.self) + 1, count: localCIDLength)
        }
    }

    /// Decodes version and connection IDs; nil for garbage or versions we do not speak.
    static func decode(_ packet: ByteBuffer) -> Header? {
        packet.withUnsafeReadableBytes { raw -> Header? in
            guard let base = raw.baseAddress, raw.count > 0 else { return nil }
            var vc = ngtcp2_version_cid()
            let rv = ngtcp2_pkt_decode_version_cid(
                &vc, base.assumingMemoryBound(to: UInt8.self), raw.count, localCIDLength)
            guard rv == 0 || rv == NGTCP2_ERR_VERSION_NEGOTIATION, let d = vc.dcid,
                vc.dcidlen <= ConnectionID.maxLength, vc.scidlen <= ConnectionID.maxLength
            else { return nil }
            let dcid = ConnectionID(pointer: d, count: vc.dcidlen)
            let scid = vc.scid.map { ConnectionID(pointer: $0, count: vc.scidlen) } ?? ConnectionID()
            return Header(
                needsVersionNegotiation: rv == NGTCP2_ERR_VERSION_NEGOTIATION,
                isLong: base.load(as: UInt8.self) & 0x80 != 0, version: vc.version, dcid: dcid, scid: scid)
        }
    }

    struct Initial {
        var version: UInt32
        var dcid: ConnectionID
        var scid: ConnectionID
        var token: [UInt8]
    }

    /// Checks that `packet` may start a new connection (a client Initial).
    static func accept(_ packet: ByteBuffer) -> Initial? {
        packet.withUnsafeReadableBytes { raw -> Initial? in
            guard let base = raw.baseAddress, raw.count > 0 else { return nil }
            var hd = ngtcp2_pkt_hd()
            let rv = ngtcp2_accept(&hd, base.assumingMemoryBound(to: UInt8.self), raw.count)
            guard rv == 0 else { return nil }
            var token: [UInt8] = []
            if let t = hd.token.base, hd.token.len > 0, hd.token.len <= 512 {
                token = Array(UnsafeBufferPointer(start: t, count: hd.token.len))
            }
            return Initial(version: hd.version, dcid: ConnectionID(hd.dcid), scid: ConnectionID(hd.scid), token: token)
        }
    }

    static func isRetryToken(_ token: [UInt8]) -> Bool {
        token.first == UInt8(NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY)
    }

    private static func withSockaddr<T>(_ address: SocketAddress, _ body: (UnsafePointer<ngtcp2_sockaddr>, Int) -> T) -> T? {
        guard case .v6(let a) = address else { return nil }
        var sin6 = a.address
        return withUnsafePointer(to: &sin6) { p in
            p.withMemoryRebound(to: ngtcp2_sockaddr.self, capacity: 1) { body($0, MemoryLayout<sockaddr_in6>.size) }
        }
    }

    /// Writes a Retry packet (to the client's `scid`) carrying a fresh token.
    static func retry(
        for initial: Initial, remote: SocketAddress, secret: [UInt8], now: UInt64, allocator: ByteBufferAllocator
    ) -> ByteBuffer? {
        var token = [UInt8](repeating: 0, count: 256)
        let retrySCID = ConnectionID.random(length: localCIDLength)
        var rscid = retrySCID.ngtcp2
        var odcid = initial.dcid.ngtcp2
        let tlen: Int = withSockaddr(remote) { sa, len in
            Int(ngtcp2_crypto_generate_retry_token(
                &token, secret, secret.count, initial.version, sa, ngtcp2_socklen(len), &rscid, &odcid, now))
        } ?? -1
        guard tlen > 0 else { return nil }
        var buf = allocator.buffer(capacity: 1500)
        var dcid = initial.scid.ngtcp2
        buf.writeWithUnsafeMutableBytes(minimumWritableBytes: 1500) { dest -> Int in
            let n = ngtcp2_crypto_write_retry(
                dest.baseAddress!.assumingMemoryBound(to: UInt8.self), dest.count, initial.version, &dcid, &rscid,
                &odcid, token, tlen)
            return n > 0 ? Int(n) : 0
        }
        return buf.readableBytes > 0 ? buf : nil
    }

    /// Writes a stateless CONNECTION_CLOSE (CONNECTION_REFUSED) answering a client Initial.
    static func refuse(_ initial: Initial, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var dcid = initial.scid.ngtcp2
        var scid = initial.dcid.ngtcp2
        let reasonBytes = Array(reason.utf8.prefix(256))
        var buf = allocator.buffer(capacity: 1500)
        buf.writeWithUnsafeMutableBytes(minimumWritableBytes: 1500) { dest -> Int in
            let n = ngtcp2_crypto_write_connection_close(
                dest.baseAddress!.assumingMemoryBound(to: UInt8.self), dest.count, initial.version, &dcid, &scid,
                UInt64(NGTCP2_CONNECTION_REFUSED), reasonBytes, reasonBytes.count)
            return n > 0 ? Int(n) : 0
        }
        return buf.readableBytes > 0 ? buf : nil
    }

    /// Writes a Version Negotiation packet offering QUIC v1, answering `header`.
    static func versionNegotiation(for header: Header, allocator: ByteBufferAllocator) -> ByteBuffer? {
        let dcid = header.scid.bytes
        let scid = header.dcid.bytes
        let versions: [UInt32] = [NGTCP2_PROTO_VER_V1]
        var unused: UInt8 = 0
        _ = stoq_random(&unused, 1)
        var buf = allocator.buffer(capacity: 256)
        buf.writeWithUnsafeMutableBytes(minimumWritableBytes: 256) { dest -> Int in
            let n = ngtcp2_pkt_write_version_negotiation(
                dest.baseAddress!.assumingMemoryBound(to: UInt8.self), dest.count, unused, dcid, dcid.count, scid,
                scid.count, versions, versions.count)
            return n > 0 ? Int(n) : 0
        }
        return buf.readableBytes > 0 ? buf : nil
    }

    /// Verifies a Retry token; returns the original destination connection ID.
    static func verifyRetry(
        _ initial: Initial, remote: SocketAddress, secret: [UInt8], timeoutNanos: UInt64, now: UInt64
    ) -> ConnectionID? {
        var odcid = ngtcp2_cid()
        var dcid = initial.dcid.ngtcp2
        let rv: Int32 = withSockaddr(remote) { sa, len in
            ngtcp2_crypto_verify_retry_token(
                &odcid, initial.token, initial.token.count, secret, secret.count, initial.version, sa,
                ngtcp2_socklen(len), &dcid, timeoutNanos, now)
        } ?? -1
        return rv == 0 ? ConnectionID(odcid) : nil
    }

    /// Random bytes from GnuTLS.
    static func randomBytes(_ count: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        _ = stoq_random(&b, count)
        return b
    }
}
