import NIOCore

/// A QUIC stream. Read it as an `AsyncSequence` of `ByteBuffer` (the flow-control window
/// opens only as you consume), write with ``write(_:)`` (suspends while the send buffer is
/// full), end with ``finish()``.
///
/// One task reads and one task writes at a time.
public final class QUICStream: AsyncSequence, Sendable {
    /// Element type: received bytes.
    public typealias Element = ByteBuffer
    let core: StreamCore

    init(core: StreamCore) { self.core = core }

    /// The QUIC stream ID.
    public var id: Int64 { core.id }
    /// Whether both sides can send.
    public var isBidirectional: Bool { id & 0x2 == 0 }

    /// Next received bytes; nil after the peer's FIN.
    /// - Throws: ``STOQError`` `.streamReset` if the peer reset the stream, or the
    ///   connection's close error.
    public func read() async throws -> ByteBuffer? {
        let core = self.core
        return try await withCheckedThrowingContinuation { cont in
            core.connection.eventLoop.execute { core.read(cont) }
        }
    }

    /// Reads until FIN.
    /// - Parameter limit: most bytes accepted; more is an error (`.flowControl`).
    public func readAll(limit: Int = 64 << 20) async throws -> ByteBuffer {
        var all = ByteBuffer()
        while let chunk = try await read() {
            guard all.readableBytes + chunk.readableBytes <= limit else {
                throw STOQError(.flowControl, "stream \(id) carried more than the \(limit) bytes allowed")
            }
            var chunk = chunk
            all.writeBuffer(&chunk)
        }
        return all
    }

    /// Queues bytes; returns when the stream's send buffer has room again.
    public func write(_ buffer: ByteBuffer) async throws {
        let core = self.core
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, Error>) in
            core.connection.eventLoop.execute { core.write(buffer, cont) }
        }
    }

    /// Queues bytes; returns when the stream's send buffer has room again.
    public func write(_ bytes: some Sequence<UInt8>) async throws {
        try await write(ByteBuffer(bytes: bytes))
    }

    /// Sends FIN after the queued bytes.
    public func finish() async throws {
        let core = self.core
        try await core.connection.eventLoop.submit { core.finish() }.get()
    }

    /// Changes the stream's scheduling class.
    public func setPriority(_ priority: StreamPriority) async {
        let core = self.core
        try? await core.connection.eventLoop.submit {
            core.quic.setPriority(core.id, priority)
            core.connection.kick()
        }.get()
    }

    /// Abandons sending (RESET_STREAM with `code`).
    public func reset(code: UInt64) async {
        let core = self.core
        try? await core.connection.eventLoop.submit { core.reset(code: code) }.get()
    }

    /// Asks the peer to stop sending (STOP_SENDING with `code`).
    public func stopSending(code: UInt64) async {
        let core = self.core
        try? await core.connection.eventLoop.submit { core.stopSending(code: code) }.get()
    }

    /// Abandons the stream in both directions: RESET_STREAM and STOP_SENDING with `code`, and
    /// a read or write waiting on it ends with ``STOQError/Code/streamReset``. For a server that
    /// gives up on a peer's request (too slow, too large) or on a response the peer does not read.
    public func abort(code: UInt64) async {
        let core = self.core
        try? await core.connection.eventLoop.submit { core.abort(code: code) }.get()
    }

    /// Waits until this side is done with the stream: it closed (every byte sent was
    /// acknowledged and the peer finished), was reset or aborted locally, the peer stopped it,
    /// or the connection closed.
    public func done() async {
        let core = self.core
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            core.connection.eventLoop.execute { core.waitDone(cont) }
        }
    }

    /// Bytes the peer has acknowledged on this stream and bytes written to it so far (nil when
    /// the stream is gone or receive-only): how a server sees whether a peer reads its response.
    public func sendProgress() async -> (acknowledged: UInt64, written: UInt64)? {
        let core = self.core
        return try? await core.connection.eventLoop.submit { core.sendProgress }.get()
    }

    /// Iterator reading with ``read()``.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: QUICStream
        /// Next bytes, nil after FIN.
        public mutating func next() async throws -> ByteBuffer? { try await stream.read() }
    }

    /// Makes an iterator.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}
