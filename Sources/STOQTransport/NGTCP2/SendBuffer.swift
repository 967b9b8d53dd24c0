import CNgtcp2
import Collections
import NIOCore

/// Bytes queued on one stream's send side. ngtcp2 keeps pointers into this memory until
/// the peer acknowledges it, so every chunk lives at a stable address we own and is released
/// only when acknowledged (or when the buffer dies, after the stream is gone).
///
/// Large writes are kept by reference, not copied: the chunk holds the caller's `ByteBuffer`
/// (a copy-on-write value whose storage never moves while we hold it and never write to it),
/// so a file block read into a `ByteBuffer` is encrypted straight from the memory it was read
/// into. Small writes (under ``coalesceLimit`` bytes, e.g. frame headers) are copied into a
/// fixed-capacity tail block instead, so a stream of tiny writes does not become a long list of
/// tiny `ngtcp2_vec`s.
final class SendBuffer {
    /// Writes shorter than this are copied into a shared tail block; longer ones are referenced.
    static let coalesceLimit = 4 * 1024
    /// Capacity of a tail block that small writes are copied into.
    static let tailCapacity = 16 * 1024

    private struct Chunk {
        /// Start of the bytes (inside `owner`'s storage, or `owned`).
        let base: UnsafeRawPointer
        /// Bytes in the chunk (grows only for a tail block).
        var count: Int
        /// Keeps referenced bytes alive and in place; nil for a tail block.
        let owner: ByteBuffer?
        /// Storage of a tail block (freed with the chunk); nil for a referenced chunk.
        let owned: UnsafeMutableRawPointer?
        /// Capacity of `owned`.
        let capacity: Int
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
        for chunk in chunks { chunk.owned?.deallocate() }
    }

    /// Bytes not yet handed to ngtcp2.
    var unsent: UInt64 { endOffset - sentOffset }
    /// Bytes held (unsent + in flight, not yet acknowledged).
    var buffered: UInt64 { endOffset - ackedOffset }

    /// Queues `buffer`'s readable bytes: by reference when large, copied into the tail block
    /// when small.
    func append(_ buffer: ByteBuffer) {
        let n = buffer.readableBytes
        guard n > 0 else { return }
        endOffset += UInt64(n)
        if n < Self.coalesceLimit {
            appendCopy(buffer, n)
            return
        }
        // The pointer stays valid while `owner` holds the storage: nobody writes through our
        // copy, and a write through the caller's copy reallocates (copy-on-write) on their side.
        let base = buffer.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress!) }
        chunks.append(Chunk(base: base, count: n, owner: buffer, owned: nil, capacity: n))
    }

    private func appendCopy(_ buffer: ByteBuffer, _ n: Int) {
        let last = chunks.count - 1
        if last >= 0, let tail = chunks[last].owned, chunks[last].capacity - chunks[last].count >= n {
            // Bytes already handed to ngtcp2 stay where they are; the new ones go after them.
            // If the whole tail was sent, move the cursor back onto its end.
            if sendIndex > last {
                sendIndex = last
                sendPos = chunks[last].count
            }
            buffer.withUnsafeReadableBytes { src in
                (tail + chunks[last].count).copyMemory(from: src.baseAddress!, byteCount: n)
            }
            chunks[last].count += n
            return
        }
        let capacity = max(n, Self.tailCapacity)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
        buffer.withUnsafeReadableBytes { src in storage.copyMemory(from: src.baseAddress!, byteCount: n) }
        chunks.append(Chunk(base: UnsafeRawPointer(storage), count: n, owner: nil, owned: storage, capacity: capacity))
    }

    /// Describes up to `max` unsent regions in `vecs`; returns the count and whether they
    /// cover all unsent bytes.
    func fill(_ vecs: UnsafeMutablePointer<ngtcp2_vec>, max: Int) -> (count: Int, coversAll: Bool) {
        var i = sendIndex
        var pos = sendPos
        var n = 0
        while n < max && i < chunks.count {
            let chunk = chunks[i]
            if chunk.count > pos {
                vecs[n] = ngtcp2_vec(
                    base: UnsafeMutablePointer(mutating: (chunk.base + pos).assumingMemoryBound(to: UInt8.self)),
                    len: chunk.count - pos)
                n += 1
            }
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

    /// The peer acknowledged `[offset, offset + length)`; releases fully acknowledged chunks.
    func acknowledged(offset: UInt64, length: UInt64) {
        let end = offset + length
        if end > ackedOffset { ackedOffset = end }
        while let first = chunks.first, headOffset + UInt64(first.count) <= ackedOffset, sendIndex > 0 {
            headOffset += UInt64(first.count)
            first.owned?.deallocate()
            chunks.removeFirst()
            sendIndex -= 1
        }
    }
}
