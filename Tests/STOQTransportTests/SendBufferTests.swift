import CNgtcp2
import NIOCore
import Testing

@testable import STOQTransport

@Suite struct SendBufferTests {
    /// The bytes the next `fill` describes, joined.
    private func unsentBytes(_ b: SendBuffer) -> [UInt8] {
        let vecs = UnsafeMutablePointer<ngtcp2_vec>.allocate(capacity: 16)
        defer { vecs.deallocate() }
        let (n, _) = b.fill(vecs, max: 16)
        var out = [UInt8]()
        for i in 0..<n { out += UnsafeBufferPointer(start: vecs[i].base, count: vecs[i].len) }
        return out
    }

    /// A large write is sent from the caller's own storage; the caller changing its copy
    /// afterwards does not change what is sent.
    @Test func aLargeWriteIsKeptByReference() {
        let b = SendBuffer()
        var block = ByteBuffer(repeating: 7, count: 64 * 1024)
        b.append(block)
        let vecs = UnsafeMutablePointer<ngtcp2_vec>.allocate(capacity: 4)
        defer { vecs.deallocate() }
        let (n, all) = b.fill(vecs, max: 4)
        #expect(n == 1 && all && vecs[0].len == 64 * 1024)
        let same = block.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress!) == UnsafeRawPointer(vecs[0].base!) }
        #expect(same)
        block.setInteger(UInt8(9), at: 0)  // copy-on-write on the caller's side
        #expect(vecs[0].base![0] == 7)
    }

    /// Small writes share a tail block, also after all of it was sent, and nothing is lost or
    /// sent twice.
    @Test func smallWritesCoalesceIntoTheTail() {
        let b = SendBuffer()
        b.append(ByteBuffer(bytes: [1, 2, 3]))
        b.append(ByteBuffer(bytes: [4, 5]))
        #expect(unsentBytes(b) == [1, 2, 3, 4, 5])
        b.consumed(5)
        #expect(b.unsent == 0 && unsentBytes(b).isEmpty)
        b.append(ByteBuffer(bytes: [6, 7]))
        #expect(unsentBytes(b) == [6, 7])
        b.consumed(1)
        b.append(ByteBuffer(repeating: 8, count: 8 * 1024))
        let rest = unsentBytes(b)
        #expect(rest.count == 1 + 8 * 1024 && rest.first == 7 && rest.last == 8)
        b.consumed(rest.count)
        b.acknowledged(offset: 0, length: b.endOffset)
        #expect(b.buffered == 0 && b.unsent == 0)
    }
}
