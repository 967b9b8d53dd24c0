// The one funnel for file-system calls in STOQContent (in the manner of NIOPosix/System.swift):
// every call retries EINTR and failures become a `ContentError` that names the file and the errno,
// with ENOSPC/EDQUOT mapped to `.diskFull`. Raw buffers appear only here and in the chunk loop.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file descriptor owned by this value's owner; `close()` must be called (or use `withFile`).
struct FileDescriptor: Sendable {
    let raw: Int32
    let path: String

    /// Opens a file.
    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws -> FileDescriptor {
        while true {
            let fd = Glibc.open(path, flags, mode)
            if fd >= 0 { return FileDescriptor(raw: fd, path: path) }
            if errno == EINTR { continue }
            throw Posix.error("open", path)
        }
    }

    /// Opens a file read-only.
    static func openForReading(_ path: String) throws -> FileDescriptor {
        try open(path, flags: O_RDONLY | O_CLOEXEC)
    }

    /// Opens a regular file read-only, refusing anything else without blocking: the open is
    /// non-blocking (a FIFO with no writer would otherwise wait forever) and `fstat` of the open
    /// descriptor checks the type, so a path swapped after an earlier check is caught too.
    /// - Throws: `.invalidArgument` naming the kind of file for a FIFO, socket, device or directory.
    static func openRegularForReading(_ path: String) throws -> FileDescriptor {
        let fd = try open(path, flags: O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        var st = stat()
        guard fstat(fd.raw, &st) == 0 else { let e = Posix.error("stat", path); fd.close(); throw e }
        let format = st.st_mode & S_IFMT
        guard format == S_IFREG else {
            fd.close()
            throw ContentError(.invalidArgument, "\(path) is \(Posix.describe(format: format)), not a regular file; stoq reads only regular files (a FIFO or device would never end)")
        }
        // Regular files ignore O_NONBLOCK, but clear it so the descriptor behaves as usual.
        let flags = fcntl(fd.raw, F_GETFL)
        if flags >= 0 { _ = fcntl(fd.raw, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }

    /// Closes the descriptor.
    func close() { _ = Glibc.close(raw) }

    /// Reads up to `count` bytes at `offset` (fewer only at end of file).
    func pread(count: Int, at offset: Int64) throws -> [UInt8] {
        // Uninitialized capacity: the bytes are filled by pread, and only the bytes read are kept.
        try [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            initialized = try preadFully(UnsafeMutableRawBufferPointer(buf), at: offset)
        }
    }

    /// Reads up to `count` bytes at `offset` into `buffer`, reusing its storage (it is grown to `count`
    /// bytes when shorter); returns the number of bytes read (fewer than `count` only at end of file).
    func pread(into buffer: inout [UInt8], count: Int, at offset: Int64) throws -> Int {
        // Grown without zeroing: pread overwrites the bytes, and only the bytes read are used.
        if buffer.count < count { buffer = [UInt8](unsafeUninitializedCapacity: count) { _, n in n = count } }
        return try buffer.withUnsafeMutableBytes { try preadFully(UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), at: offset) }
    }

    /// Fills `buf` from `offset` until it is full or the file ends; returns the bytes read.
    private func preadFully(_ buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var got = 0
        while got < buf.count {
            let n = Glibc.pread(raw, buf.baseAddress! + got, buf.count - got, off_t(offset) + off_t(got))
            if n > 0 { got += n; continue }
            if n == 0 { break }
            if errno == EINTR { continue }
            throw Posix.error("read", path)
        }
        return got
    }

    /// Reads the whole file.
    func readAll() throws -> [UInt8] {
        var out = [UInt8]()
        var offset: Int64 = 0
        while true {
            let part = try pread(count: 1 << 20, at: offset)
            out += part
            offset += Int64(part.count)
            if part.count < 1 << 20 { return out }
        }
    }

    /// Writes all of `bytes`.
    func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(raw, bytes.baseAddress! + done, bytes.count - done)
            if n >= 0 { done += n; continue }
            if errno == EINTR { continue }
            throw Posix.error("write", path)
        }
    }

    /// Writes all of `bytes`.
    func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAll($0) }
    }

    /// fsync(2).
    func sync() throws {
        while fsync(raw) != 0 {
            if errno == EINTR { continue }
            throw Posix.error("fsync", path)
        }
    }

    /// The file size.
    func size() throws -> Int64 {
        var st = stat()
        guard fstat(raw, &st) == 0 else { throw Posix.error("stat", path) }
        return Int64(st.st_size)
    }
}

/// File-system helpers.
enum Posix {
    /// A `ContentError` for the current errno.
    static func error(_ call: String, _ path: String, errnoValue: Int32 = errno) -> ContentError {
        let msg = String(cString: strerror(errnoValue))
        if errnoValue == ENOSPC || errnoValue == EDQUOT {
            return ContentError(.diskFull, "\(call) \(path): \(msg); the disk holding the store is full — free space or point --store elsewhere (the store is left consistent)")
        }
        if errnoValue == ENOENT { return ContentError(.notFound, "\(call) \(path): \(msg)") }
        return ContentError(.io, "\(call) \(path): \(msg) (errno \(errnoValue))")
    }

    /// Reads a whole file.
    static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY | O_CLOEXEC)
        defer { fd.close() }
        return try fd.readAll()
    }

    /// Writes a file durably: temp file (in `tempDirectory`, which must be on the same file system, or
    /// else in the destination's directory), fsync, rename, fsync of the directory.
    /// On failure the temp file is removed and the destination is untouched.
    static func writeFileAtomically(_ path: String, _ bytes: UnsafeRawBufferPointer, mode: mode_t = 0o644, durable: Bool = true,
                                    tempDirectory: String? = nil) throws {
        let dir = parent(path)
        let tmp = "\(tempDirectory ?? dir)/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = try FileDescriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: mode)
        do {
            try fd.writeAll(bytes)
            if durable { try fd.sync() }
            fd.close()
        } catch {
            fd.close()
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            let e = Posix.error("rename", path)
            unlink(tmp)
            throw e
        }
        if durable { try syncDirectory(dir) }
    }

    /// fsync of a directory, so a rename in it is durable.
    static func syncDirectory(_ dir: String) throws {
        let fd = try FileDescriptor.open(dir, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { fd.close() }
        try fd.sync()
    }

    /// The directory part of a path.
    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// mkdir -p.
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let p = parent(path)
        if p != path, !p.isEmpty, p != "/" , p != "." { try makeDirectories(p, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST { throw Posix.error("mkdir", path) }
    }

    /// Whether `path` is a directory (not following a final symlink).
    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// lstat fields we need.
    struct Info {
        var isDirectory: Bool
        var isRegular: Bool
        var isSymlink: Bool
        var mode: UInt32
        var size: Int64
        var mtime: Int64
        /// The S_IFMT bits.
        var format: mode_t

        init(_ st: stat) {
            format = st.st_mode & S_IFMT
            isDirectory = format == S_IFDIR
            isRegular = format == S_IFREG
            isSymlink = format == S_IFLNK
            mode = UInt32(st.st_mode & 0o7777)
            size = Int64(st.st_size)
            mtime = Int64(st.st_mtim.tv_sec)
        }

        /// "a FIFO", "a socket", … for messages.
        var kindDescription: String { Posix.describe(format: format) }
    }

    /// A file type in words, for messages (``describeFileFormat(_:)`` for other modules).
    static func describe(format: mode_t) -> String {
        switch format {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFLNK: return "a symbolic link"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        default: return "a special file"
        }
    }

    /// lstat(2), or stat(2) with `followLinks`.
    static func info(_ path: String, followLinks: Bool = false) throws -> Info {
        var st = stat()
        guard fstatat(AT_FDCWD, path, &st, followLinks ? 0 : AT_SYMLINK_NOFOLLOW) == 0 else { throw Posix.error("stat", path) }
        return Info(st)
    }

    /// The target of a symbolic link, as written (not resolved).
    /// - Throws: `.io` when `path` is not a link, `.invalidName` when the target is not UTF-8.
    static func readLink(_ path: String) throws -> String {
        var buf = [UInt8](repeating: 0, count: 4097)
        let n = buf.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { readlink(path, $0, b.count) }
        }
        guard n >= 0 else { throw Posix.error("readlink", path) }
        guard n < buf.count else { throw ContentError(.tooLarge, "the target of \(path) is longer than 4096 bytes") }
        guard let s = String(validating: buf[0..<n], as: UTF8.self) else {
            throw ContentError(.invalidName, "the target of \(path) is not UTF-8")
        }
        return s
    }

    /// symlink(2): creates a link at `path` pointing at `target` (as written).
    static func symlink(_ target: String, at path: String) throws {
        if Glibc.symlink(target, path) != 0 { throw Posix.error("symlink", path) }
    }

    /// Whether something exists at `path`.
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Entry names of a directory, sorted, without "." and "..".
    static func listDirectory(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw Posix.error("opendir", path) }
        defer { closedir(d) }
        var names = [String]()
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// unlink(2); a missing file is not an error.
    static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw Posix.error("unlink", path) }
    }

    /// chmod(2).
    static func chmod(_ path: String, _ mode: UInt32) throws {
        if Glibc.chmod(path, mode_t(mode)) != 0 { throw Posix.error("chmod", path) }
    }

    /// mkdir(2) of one level; an existing directory is fine.
    static func makeDirectory(_ path: String, mode: UInt32 = 0o755) throws {
        if mkdir(path, mode_t(mode)) != 0 {
            if errno == EEXIST && isDirectory(path) { return }
            throw Posix.error("mkdir", path)
        }
    }

    /// The process's available processor count.
    static var processorCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}

// glibc declares syncfs(2) only under _GNU_SOURCE, which the Glibc module does not define; bind the
// symbol directly (int(int), the same ABI in Swift and C on our Linux targets).
@_silgen_name("syncfs") private func c_syncfs(_ fd: Int32) -> Int32

extension Posix {
    /// Flushes the file system holding `path` (one call instead of an fsync per chunk file).
    static func syncFileSystem(_ path: String) throws {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { fd.close() }
        while c_syncfs(fd.raw) != 0 {
            if errno == EINTR { continue }
            throw Posix.error("syncfs", path)
        }
    }

    /// An exclusive advisory lock on `path` (created if needed), held until `unlock` or process exit.
    static func lockExclusive(_ path: String) throws -> FileDescriptor {
        let fd = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o644)
        // Another process may hold the store briefly (a `stoq` command) or for long (a running node):
        // wait up to 10 s, then say so instead of hanging.
        var waited = 0
        while flock(fd.raw, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            guard errno == EWOULDBLOCK, waited < 10_000 else {
                let busy = errno == EWOULDBLOCK
                let e = busy
                    ? ContentError(.io, "the store at \(path.hasSuffix("/lock") ? String(path.dropLast(5)) : path) is in use by another process (a running stoq node or command); to add content to a running origin, upload it with `stoq put PATH --node ORIGIN --cert CERT --key KEY --ca CA`, otherwise stop that process or use another --store")
                    : Posix.error("flock", path)
                fd.close()
                throw e
            }
            usleep(50_000)
            waited += 50
        }
        return fd
    }
}

/// A file type (the `S_IFMT` bits of a mode) in words for messages: "a FIFO (named pipe)", "a socket", ….
public func describeFileFormat(_ format: mode_t) -> String { Posix.describe(format: format) }
