// The one place STOQInterop calls the file system directly: a regular file read in large blocks
// with pread, each block straight into the ByteBuffer QUIC will send from (no intermediate Data,
// no 4 KiB reads). Raw pointers appear only here.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOCore
import STOQExchange

/// A regular file open for reading, in blocks.
struct BlockFile: ~Copyable {
    private let fd: Int32
    let path: String

    /// Opens a regular file read-only; a FIFO, device or directory is refused without blocking.
    init(path: String) throws(NodeError) {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw NodeError(.notFound, "cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw NodeError(.notFound, "\(path) is not a regular file")
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Reads up to `count` bytes at `offset` into a new buffer of that capacity; fewer only at
    /// the end of the file (an empty buffer there).
    func read(count: Int, at offset: Int64, allocator: ByteBufferAllocator) throws(NodeError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        var failure: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dest in
            var got = 0
            while got < count {
                let n = pread(fd, dest.baseAddress! + got, count - got, off_t(offset) + off_t(got))
                if n > 0 { got += n; continue }
                if n == 0 { break }
                if errno == EINTR { continue }
                failure = errno
                break
            }
            return got
        }
        if failure != 0 { throw NodeError(.unavailable, "reading \(path) failed: \(String(cString: strerror(failure)))") }
        return buffer
    }
}
