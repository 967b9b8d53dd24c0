import CNghttp3
import Collections
import NIOCore

/// Limits an HTTP/3 connection enforces on what its peer sends.
public struct HTTP3Limits: Sendable {
    /// Largest header section accepted (sum of name and value lengths plus 32 per field, as
    /// RFC 9114 §4.2.2 counts it); advertised in SETTINGS_MAX_FIELD_SECTION_SIZE. Larger
    /// requests are answered 431.
    public var maxFieldSectionSize: Int = 16 * 1024
    /// Most header fields in one section.
    public var maxHeaderFields: Int = 128
    /// Request body bytes read and discarded (GET and HEAD carry none); beyond it the server
    /// asks the client to stop sending (STOP_SENDING with H3_NO_ERROR).
    public var maxRequestBody: Int = 64 * 1024
    /// Concurrent request streams a client may open (QUIC MAX_STREAMS for bidirectional streams).
    public var maxConcurrentRequests: Int = 100

    /// Default limits.
    public init() {}
}

/// An HTTP/3 failure: a stable code, the HTTP/3 error code sent to the peer when there is one,
/// and a reason written for people.
public struct HTTP3Error: Error, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public enum Code: Sendable, Hashable {
        /// The peer broke HTTP/3 or QPACK; the connection is closed with ``HTTP3Error/wireCode``.
        case protocolViolation
        /// The listener cannot start: bad address, certificate, or port taken.
        case cannotListen
        /// nghttp3 failed unexpectedly (out of memory, a state it refused).
        case internalError
    }

    /// The failure kind.
    public let code: Code
    /// The HTTP/3 application error code (RFC 9114 §8.1) sent to the peer, if any.
    public let wireCode: UInt64?
    /// What happened and what to do, for people.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String, wireCode: UInt64? = nil) {
        self.code = code
        self.reason = reason
        self.wireCode = wireCode
    }

    /// The reason.
    public var description: String { reason }
}

/// HTTP/3 application error codes (RFC 9114 §8.1) used by the server.
public enum HTTP3ErrorCode {
    /// No error: graceful close, or "stop sending, the response is complete".
    public static let noError: UInt64 = 0x100
    /// A general protocol error.
    public static let generalProtocolError: UInt64 = 0x101
    /// An internal error: used to reset a response whose body failed mid-way.
    public static let internalError: UInt64 = 0x102
    /// The request was refused before any processing.
    public static let requestRejected: UInt64 = 0x10B
    /// The request or its response was cancelled.
    public static let requestCancelled: UInt64 = 0x10C
}

/// A sans-IO HTTP/3 connection over nghttp3: feed it the bytes received on each QUIC stream,
/// take out the bytes to write on each stream and events. It never touches a socket; a driver
/// moves bytes between it and the QUIC connection.
///
/// The driver hands every written byte to a transport that keeps its own copy until it is
/// acknowledged, so bytes taken with ``pollWrite()`` count as acknowledged at once and nghttp3
/// frees them. Not thread-safe: one owner drives it.
final class HTTP3Connection {
    /// Whether this side serves or asks.
    enum Role { case server, client }

    /// Something the driver must act on.
    enum Event: Equatable {
        /// A complete header section arrived: a request (server) or a response (client).
        /// `endStream` is true when no body follows.
        case headers(Int64, fields: [HTTPField], endStream: Bool)
        /// A header section exceeded ``HTTP3Limits``; the server answers 431.
        case headersTooLarge(Int64)
        /// Body bytes arrived (client: the response body; server: a request body to discard).
        case data(Int64, [UInt8])
        /// The peer finished its side of the stream.
        case endStream(Int64)
        /// The response body source of the stream ran dry: provide the next piece with
        /// ``provideBody(_:_:)``.
        case needBody(Int64)
        /// nghttp3 asks to send STOP_SENDING on the stream.
        case stopSending(Int64, code: UInt64)
        /// nghttp3 asks to reset the stream.
        case resetStream(Int64, code: UInt64)
        /// nghttp3 forgot the stream.
        case streamClosed(Int64, code: UInt64)
        /// The peer started a graceful shutdown (GOAWAY).
        case goaway(Int64)
    }

    /// One write: bytes for a QUIC stream, and whether they end it.
    struct Write {
        var streamID: Int64
        var bytes: ByteBuffer
        var fin: Bool
    }

    /// A header field as received (`:method` and other pseudo-headers included).
    struct HTTPField: Equatable {
        var name: String
        var value: String
    }

    /// The response body source of one stream: pieces copied into memory nghttp3 may point at
    /// until they are acknowledged.
    private final class BodySource {
        /// Pieces not yet acknowledged, oldest first.
        var pieces: Deque<UnsafeMutableRawBufferPointer> = []
        /// Pieces already handed to nghttp3 (a prefix of `pieces`).
        var handedOut = 0
        /// Bytes of the first piece already acknowledged.
        var ackedInFirst = 0
        /// The source has given its last piece.
        var eof = false
        /// A piece was asked for and has not arrived.
        var pulling = false

        func free() {
            for p in pieces { p.deallocate() }
            pieces.removeAll()
            handedOut = 0
        }
        deinit { free() }
    }

    /// Headers being collected for one stream.
    private struct PendingHeaders {
        var fields: [HTTPField] = []
        var size = 0
        var tooLarge = false
    }

    let role: Role
    let limits: HTTP3Limits
    private var conn: OpaquePointer?
    private var events: Deque<Event> = []
    private var bodies: [Int64: BodySource] = [:]
    private var pendingHeaders: [Int64: PendingHeaders] = [:]
    /// Cumulative client bidirectional streams allowed (server), told to nghttp3 for GOAWAY.
    private var maxClientBidi: UInt64
    /// A callback failed with this (a fatal error the next call returns).
    private var callbackError: HTTP3Error?

    /// Creates a connection.
    /// - Throws: ``HTTP3Error`` `.internalError` when nghttp3 cannot allocate it.
    init(role: Role, limits: HTTP3Limits = HTTP3Limits()) throws(HTTP3Error) {
        self.role = role
        self.limits = limits
        self.maxClientBidi = UInt64(max(1, limits.maxConcurrentRequests))
        var callbacks = nghttp3_callbacks()
        callbacks.acked_stream_data = { _, sid, n, user, _ in
            HTTP3Connection.from(user).ackedBody(sid, n)
            return 0
        }
        callbacks.stream_close = { _, sid, code, user, _ in
            HTTP3Connection.from(user).closed(sid, code)
            return 0
        }
        callbacks.recv_data = { _, sid, data, len, user, _ in
            HTTP3Connection.from(user).receivedData(sid, data, len)
            return 0
        }
        callbacks.deferred_consume = { _, _, _, _, _ in 0 }
        callbacks.begin_headers = { _, sid, user, _ in
            HTTP3Connection.from(user).pendingHeaders[sid] = PendingHeaders()
            return 0
        }
        callbacks.recv_header = { _, sid, _, name, value, _, user, _ in
            HTTP3Connection.from(user).receivedHeader(sid, name, value)
            return 0
        }
        callbacks.end_headers = { _, sid, fin, user, _ in
            HTTP3Connection.from(user).endHeaders(sid, fin: fin != 0)
            return 0
        }
        // Trailers are read and dropped: nothing here uses them.
        callbacks.begin_trailers = { _, _, _, _ in 0 }
        callbacks.recv_trailer = { _, _, _, _, _, _, _, _ in 0 }
        callbacks.end_trailers = { _, _, _, _, _ in 0 }
        callbacks.stop_sending = { _, sid, code, user, _ in
            HTTP3Connection.from(user).events.append(.stopSending(sid, code: code))
            return 0
        }
        callbacks.end_stream = { _, sid, user, _ in
            HTTP3Connection.from(user).events.append(.endStream(sid))
            return 0
        }
        callbacks.reset_stream = { _, sid, code, user, _ in
            HTTP3Connection.from(user).events.append(.resetStream(sid, code: code))
            return 0
        }
        callbacks.shutdown = { _, id, user in
            HTTP3Connection.from(user).events.append(.goaway(id))
            return 0
        }
        var settings = nghttp3_settings()
        nghttp3_settings_default_versioned(NGHTTP3_SETTINGS_VERSION, &settings)
        settings.max_field_section_size = UInt64(max(1024, limits.maxFieldSectionSize))
        // No dynamic table for the peer's encoder: header blocks never wait on the encoder
        // stream, so nothing is buffered for a blocked stream.
        settings.qpack_max_dtable_capacity = 0
        settings.qpack_blocked_streams = 0
        var c: OpaquePointer?
        let user = Unmanaged.passUnretained(self).toOpaque()
        let rv: Int32
        switch role {
        case .server:
            rv = nghttp3_conn_server_new_versioned(&c, NGHTTP3_CALLBACKS_VERSION, &callbacks, NGHTTP3_SETTINGS_VERSION, &settings, nil, user)
        case .client:
            rv = nghttp3_conn_client_new_versioned(&c, NGHTTP3_CALLBACKS_VERSION, &callbacks, NGHTTP3_SETTINGS_VERSION, &settings, nil, user)
        }
        guard rv == 0, let c else {
            throw HTTP3Error(.internalError, "nghttp3 could not create a connection: \(Self.describe(rv))")
        }
        conn = c
        if role == .server {
            nghttp3_conn_set_max_client_streams_bidi(c, maxClientBidi)
        }
    }

    deinit {
        if let conn { nghttp3_conn_del(conn) }
        for b in bodies.values { b.free() }
    }

    private static func from(_ user: UnsafeMutableRawPointer?) -> HTTP3Connection {
        // nghttp3 passes back the pointer given at creation, which is this live object.
        Unmanaged<HTTP3Connection>.fromOpaque(user!).takeUnretainedValue()
    }

    static func describe(_ rv: Int32) -> String {
        String(cString: nghttp3_strerror(rv))
    }

    private func check(_ rv: Int32, _ what: String) throws(HTTP3Error) {
        guard rv != 0 else { return }
        let code = nghttp3_err_infer_quic_app_error_code(rv)
        throw HTTP3Error(
            rv <= NGHTTP3_ERR_FATAL ? .internalError : .protocolViolation,
            "\(what): \(Self.describe(rv))", wireCode: code)
    }

    // MARK: Setup

    /// Binds the three unidirectional streams this side opened: control, QPACK encoder and decoder.
    func bind(control: Int64, qpackEncoder: Int64, qpackDecoder: Int64) throws(HTTP3Error) {
        guard let conn else { return }
        try check(nghttp3_conn_bind_control_stream(conn, control), "binding the HTTP/3 control stream")
        try check(nghttp3_conn_bind_qpack_streams(conn, qpackEncoder, qpackDecoder), "binding the QPACK streams")
    }

    // MARK: Input

    /// Feeds bytes received on a QUIC stream (`fin` with the last ones).
    /// - Throws: ``HTTP3Error`` when the peer broke HTTP/3: close the connection with its
    ///   ``HTTP3Error/wireCode``.
    func handle(streamID: Int64, bytes: UnsafeRawBufferPointer, fin: Bool) throws(HTTP3Error) {
        guard let conn else { return }
        let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let rv = nghttp3_conn_read_stream(conn, streamID, base, bytes.count, fin ? 1 : 0)
        if let e = callbackError { callbackError = nil; throw e }
        if rv < 0 {
            let code = nghttp3_err_infer_quic_app_error_code(Int32(truncatingIfNeeded: rv))
            throw HTTP3Error(
                .protocolViolation,
                "the peer broke HTTP/3 on stream \(streamID): \(Self.describe(Int32(truncatingIfNeeded: rv)))", wireCode: code)
        }
    }

    /// Feeds bytes received on a QUIC stream.
    func handle(streamID: Int64, buffer: ByteBuffer?, fin: Bool) throws(HTTP3Error) {
        let result: Result<Void, HTTP3Error> = (buffer ?? ByteBuffer()).withUnsafeReadableBytes { raw in
            do throws(HTTP3Error) {
                try handle(streamID: streamID, bytes: raw, fin: fin)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// The peer reset its side of a stream, or the stream is gone: nghttp3 forgets its reading state.
    func shutdownRead(_ streamID: Int64) {
        guard let conn else { return }
        _ = nghttp3_conn_shutdown_stream_read(conn, streamID)
    }

    /// The QUIC stream closed (both sides done, or reset): nghttp3 forgets it.
    /// - Throws: when it was a critical stream (control, QPACK): close the connection.
    func closeStream(_ streamID: Int64, code: UInt64) throws(HTTP3Error) {
        guard let conn else { return }
        let rv = nghttp3_conn_close_stream(conn, streamID, code)
        bodies[streamID]?.free()
        bodies[streamID] = nil
        pendingHeaders[streamID] = nil
        if role == .server && streamID & 0x3 == 0 {
            // The transport grants the client one more request stream for each one closed.
            maxClientBidi &+= 1
            nghttp3_conn_set_max_client_streams_bidi(conn, maxClientBidi)
        }
        if rv == NGHTTP3_ERR_STREAM_NOT_FOUND { return }
        try check(rv, "closing stream \(streamID)")
    }

    // MARK: Output

    /// Submits a response's header section; with `hasBody` its body follows through
    /// ``Event/needBody(_:)`` and ``provideBody(_:_:)``, otherwise the stream ends after it.
    func submitResponse(_ streamID: Int64, status: Int, headers: [(name: String, value: String)], hasBody: Bool) throws(HTTP3Error) {
        guard let conn else { return }
        let fields = [(":status", String(status))] + headers.map { ($0.name, $0.value) }
        var rv: Int32 = 0
        if hasBody { bodies[streamID] = BodySource() }
        Self.withNV(fields) { nva, count in
            if hasBody {
                var reader = nghttp3_data_reader(read_data: { _, sid, vec, veccnt, flags, user, _ in
                    HTTP3Connection.from(user).readBody(sid, vec, veccnt, flags)
                })
                rv = nghttp3_conn_submit_response(conn, streamID, nva, count, &reader)
            } else {
                rv = nghttp3_conn_submit_response(conn, streamID, nva, count, nil)
            }
        }
        if rv != 0 { bodies[streamID] = nil }
        try check(rv, "submitting the response on stream \(streamID)")
    }

    /// Submits a request without a body (client side; tests use it).
    func submitRequest(_ streamID: Int64, headers: [(name: String, value: String)]) throws(HTTP3Error) {
        guard let conn else { return }
        var rv: Int32 = 0
        Self.withNV(headers.map { ($0.name, $0.value) }) { nva, count in
            rv = nghttp3_conn_submit_request(conn, streamID, nva, count, nil, nil)
        }
        try check(rv, "submitting the request on stream \(streamID)")
    }

    /// Hands the next body piece of a stream to nghttp3; `nil` ends the body.
    func provideBody(_ streamID: Int64, _ piece: [UInt8]?) {
        guard let conn, let source = bodies[streamID] else { return }
        source.pulling = false
        if let piece {
            if !piece.isEmpty {
                let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: piece.count, alignment: 1)
                memory.copyBytes(from: piece)
                source.pieces.append(memory)
            }
        } else {
            source.eof = true
        }
        _ = nghttp3_conn_resume_stream(conn, streamID)
    }

    /// Abandons the response of a stream: no more body is read and nghttp3 stops writing to it.
    func abandonResponse(_ streamID: Int64) {
        guard let conn else { return }
        bodies[streamID]?.free()
        bodies[streamID] = nil
        nghttp3_conn_shutdown_stream_write(conn, streamID)
    }

    /// nghttp3 may write no more to the stream until ``unblock(_:)`` (the driver's queue for it is full).
    func block(_ streamID: Int64) {
        guard let conn else { return }
        nghttp3_conn_block_stream(conn, streamID)
    }

    /// The driver's queue for the stream has room again.
    func unblock(_ streamID: Int64) {
        guard let conn else { return }
        _ = nghttp3_conn_unblock_stream(conn, streamID)
    }

    /// Tells the client to open no new requests (GOAWAY with the next stream id).
    func submitShutdownNotice() {
        guard let conn else { return }
        _ = nghttp3_conn_submit_shutdown_notice(conn)
    }

    /// Starts refusing new requests (the final GOAWAY).
    func shutdown() {
        guard let conn else { return }
        _ = nghttp3_conn_shutdown(conn)
    }

    /// The next bytes to write, or nil when nothing is ready.
    /// - Throws: ``HTTP3Error`` when nghttp3 fails: close the connection.
    func pollWrite() throws(HTTP3Error) -> Write? {
        guard let conn else { return nil }
        var vecs = [nghttp3_vec](repeating: nghttp3_vec(), count: 16)
        var streamID: Int64 = -1
        var fin: Int32 = 0
        let n = vecs.withUnsafeMutableBufferPointer { v in
            nghttp3_conn_writev_stream(conn, &streamID, &fin, v.baseAddress, v.count)
        }
        if let e = callbackError { callbackError = nil; throw e }
        if n < 0 {
            let rv = Int32(truncatingIfNeeded: n)
            throw HTTP3Error(
                .internalError, "HTTP/3 could not produce its next frames: \(Self.describe(rv))",
                wireCode: nghttp3_err_infer_quic_app_error_code(rv))
        }
        guard streamID >= 0 else { return nil }
        var total = 0
        for i in 0..<Int(n) { total += vecs[i].len }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(total)
        for i in 0..<Int(n) where vecs[i].len > 0 {
            if let base = vecs[i].base { buffer.writeBytes(UnsafeRawBufferPointer(start: base, count: vecs[i].len)) }
        }
        try check(nghttp3_conn_add_write_offset(conn, streamID, total), "accounting bytes written on stream \(streamID)")
        // The transport keeps its own copy until the peer acknowledges it: nghttp3 may free its own.
        if total > 0 {
            try check(nghttp3_conn_add_ack_offset(conn, streamID, UInt64(total)), "accounting bytes sent on stream \(streamID)")
        }
        return Write(streamID: streamID, bytes: buffer, fin: fin != 0)
    }

    /// The next event, or nil.
    func pollEvent() -> Event? { events.popFirst() }

    // MARK: Callbacks

    private func ackedBody(_ streamID: Int64, _ count: UInt64) {
        guard let source = bodies[streamID] else { return }
        var left = Int(clamping: count)
        while left > 0, let first = source.pieces.first {
            let remaining = first.count - source.ackedInFirst
            if left >= remaining {
                left -= remaining
                first.deallocate()
                source.pieces.removeFirst()
                source.handedOut = max(0, source.handedOut - 1)
                source.ackedInFirst = 0
            } else {
                source.ackedInFirst += left
                left = 0
            }
        }
    }

    private func readBody(
        _ streamID: Int64, _ vec: UnsafeMutablePointer<nghttp3_vec>?, _ veccnt: Int, _ flags: UnsafeMutablePointer<UInt32>?
    ) -> nghttp3_ssize {
        guard let source = bodies[streamID], let vec else { return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE) }
        var filled = 0
        while filled < veccnt && source.handedOut < source.pieces.count {
            let piece = source.pieces[source.handedOut]
            vec[filled] = nghttp3_vec(base: piece.baseAddress?.assumingMemoryBound(to: UInt8.self), len: piece.count)
            filled += 1
            source.handedOut += 1
        }
        let allOut = source.handedOut == source.pieces.count
        if allOut && source.eof {
            flags?.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
            return nghttp3_ssize(filled)
        }
        if allOut && !source.pulling {
            // Ask for the next piece now, while these are sent.
            source.pulling = true
            events.append(.needBody(streamID))
        }
        return filled > 0 ? nghttp3_ssize(filled) : nghttp3_ssize(NGHTTP3_ERR_WOULDBLOCK)
    }

    private func closed(_ streamID: Int64, _ code: UInt64) {
        bodies[streamID]?.free()
        bodies[streamID] = nil
        pendingHeaders[streamID] = nil
        events.append(.streamClosed(streamID, code: code))
    }

    private func receivedData(_ streamID: Int64, _ data: UnsafePointer<UInt8>?, _ count: Int) {
        guard let data, count > 0 else { return }
        events.append(.data(streamID, Array(UnsafeBufferPointer(start: data, count: count))))
    }

    private func receivedHeader(_ streamID: Int64, _ name: OpaquePointer?, _ value: OpaquePointer?) {
        guard var pending = pendingHeaders[streamID] else { return }
        let n = nghttp3_rcbuf_get_buf(name)
        let v = nghttp3_rcbuf_get_buf(value)
        pending.size += n.len + v.len + 32
        if pending.tooLarge || pending.size > limits.maxFieldSectionSize || pending.fields.count >= limits.maxHeaderFields {
            pending.tooLarge = true
            pending.fields = []
        } else {
            pending.fields.append(HTTPField(name: Self.string(n), value: Self.string(v)))
        }
        pendingHeaders[streamID] = pending
    }

    private func endHeaders(_ streamID: Int64, fin: Bool) {
        guard let pending = pendingHeaders.removeValue(forKey: streamID) else { return }
        if pending.tooLarge {
            events.append(.headersTooLarge(streamID))
        } else {
            events.append(.headers(streamID, fields: pending.fields, endStream: fin))
        }
    }

    private static func string(_ v: nghttp3_vec) -> String {
        guard let base = v.base, v.len > 0 else { return "" }
        return String(decoding: UnsafeBufferPointer(start: base, count: v.len), as: UTF8.self)
    }

    /// Calls `body` with an nghttp3_nv array of `fields`, valid for the call only (nghttp3
    /// copies the fields it is given).
    private static func withNV(_ fields: [(String, String)], _ body: (UnsafePointer<nghttp3_nv>, Int) -> Void) {
        var storage = [UInt8]()
        var spans = [(Int, Int, Int, Int)]()
        for (name, value) in fields {
            let n = storage.count
            storage.append(contentsOf: name.utf8)
            let v = storage.count
            storage.append(contentsOf: value.utf8)
            spans.append((n, v - n, v, storage.count - v))
        }
        storage.append(0)  // never empty, so the base address exists
        storage.withUnsafeMutableBufferPointer { raw in
            guard let base = raw.baseAddress else { return }
            var nva = spans.map { s in
                nghttp3_nv(
                    name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3,
                    flags: UInt8(NGHTTP3_NV_FLAG_NONE))
            }
            let count = nva.count
            // Never empty, so the array has storage; nghttp3 reads `count` entries only.
            nva.append(nghttp3_nv())
            nva.withUnsafeBufferPointer { buffer in
                guard let first = buffer.baseAddress else { return }
                body(first, count)
            }
        }
    }
}
