import CNgtcp2
import Collections
import NIOCore

/// Bytes queued on one stream's send side. ngtcp2 keeps pointers into this memory until
/// the peer acknowledges it, so the chunks live at stable addresses we own and are freed
/// only when acknowledged (or when the buffer dies, after the stream is gone).
final class SendBuffer {
    private struct Chunk {
        let base: UnsafeMutableRawPointer
        let count: Int
    }
    private var chunks: Deque<Chunk> = []
    /// Stream offset of `chunks.first`.
    private var headOffset: UInt64 = 0
    /// Everything below this offset was acknowledged by the peer.
    private(set) var ackedOffset: UInt64 = 0
    /// Everything below this offset was handed to ngtcp2 (sent at least once).
    private(set) var sentOffset: UInt64 = 0
    /// Total bytes ever appended.
    private(set) var endOffset: UInt64 = 0
    // Cursor of the first unsent byte: chunk index and position within it.
    private var sendIndex = 0
    private var sendPos = 0

    init() {}

    deinit {
        for chunk in chunks { chunk.base.deallocate() }
    }

    /// Bytes not yet handed to ngtcp2.
    var unsent: UInt64 { endOffset - sentOffset }
    /// Bytes held (unsent + in flight, not yet acknowledged).
    var buffered: UInt64 { endOffset - ackedOffset }

    /// Copies `buffer`'s readable bytes into the queue.
    func append(_ buffer: ByteBuffer) {
        let n = buffer.readableBytes
        guard n > 0 else { return }
        let base = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 1)
        buffer.withUnsafeReadableBytes { src in
            base.copyMemory(from: src.baseAddress!, byteCount: n)
        }
        chunks.append(Chunk(base: base, count: n))
        endOffset += UInt64(n)
    }

    /// Describes up to `max` unsent regions in `vecs`; returns the count and whether they
    /// cover all unsent bytes.
    func fill(_ vecs: UnsafeMutablePointer<ngtcp2_vec>, max: Int) -> (count: Int, coversAll: Bool) {
        var i = sendIndex
        var pos = sendPos
        var n = 0
        while n < max && i < chunks.count {
            let chunk = chunks[i]
            vecs[n] = ngtcp2_vec(
                base: (chunk.base + pos).assumingMemoryBound(to: UInt8.self), len: chunk.count - pos)
            n += 1
            i += 1
            pos = 0
        }
        return (n, i >= chunks.count)
    }

    /// ngtcp2 took `count` more bytes.
    func consumed(_ count: Int) {
        var left = count
        sentOffset += UInt64(count)
        while left > 0 && sendIndex < chunks.count {
            let avail = chunks[sendIndex].count - sendPos
            if left >= avail {
                left -= avail
                sendIndex += 1
                sendPos = 0
            } else {
                sendPos += left
                left = 0
            }
        }
    }

    /// The peer acknowledged `[offset, offset + length)`; frees fully acknowledged chunks.
    func acknowledged(offset: UInt64, length: UInt64) {
        let end = offset + length
        if end > ackedOffset { ackedOffset = end }
        while let first = chunks.first, headOffset + UInt64(first.count) <= ackedOffset, sendIndex > 0 {
            headOffset += UInt64(first.count)
            first.base.deallocate()
            chunks.removeFirst()
            sendIndex -= 1
        }
    }
}
