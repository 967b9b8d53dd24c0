import Foundation

/// The publisher secret kept in a store directory: `publisher.key`, 32 random bytes, mode 0600.
///
/// The key is what opens the content put into the store (it seals every manifest's key table), so it
/// is never replaced: ``create(directory:)`` refuses when a file is already there, and callers create
/// one only for a store that holds no content yet (see ``state(directory:)``).
public enum PublisherKeyFile {
    /// What the store directory holds.
    public enum State: Sendable {
        /// A readable 32-byte key.
        case present(PublisherKeys)
        /// No `publisher.key`.
        case missing
        /// A `publisher.key` that cannot be used; the reason says why (permissions, size).
        case unreadable(String)
    }

    /// The key file's path in `directory`.
    public static func path(in directory: String) -> String { directory + "/publisher.key" }

    /// Looks at the key file of a store directory, without changing anything.
    public static func state(directory: String) -> State {
        let p = path(in: directory)
        guard Posix.exists(p) else { return .missing }
        do { return .present(try load(path: p)) } catch let e as ContentError { return .unreadable(e.reason) } catch { return .unreadable("\(error)") }
    }

    /// Reads a key file (a store's, or one given with `--publisher-key`).
    /// - Throws: `.notFound`, `.io` (e.g. permission denied), `.invalidArgument` when it is not 32 bytes.
    public static func load(path: String) throws -> PublisherKeys {
        let info = try Posix.info(path, followLinks: true)
        guard info.isRegular else { throw ContentError(.invalidArgument, "\(path) is \(info.kindDescription), not a key file") }
        let bytes = try Posix.readFile(path)
        guard bytes.count == 32 else {
            throw ContentError(.invalidArgument, "\(path) is \(bytes.count) bytes; a publisher key file is exactly 32 bytes (is it the right file, or truncated?)")
        }
        return try PublisherKeys(secret: bytes)
    }

    /// Writes a new random key; never replaces an existing file (the file appears whole or not at all).
    /// - Throws: `.invalidArgument` when a key file already exists, `.io`/`.diskFull` on write errors.
    public static func create(directory: String) throws -> PublisherKeys {
        let p = path(in: directory)
        let keys = PublisherKeys.random()
        let secret = keys.secret.withUnsafeBytes { Array($0) }
        let tmp = "\(directory)/tmp/.tmp-key-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = try FileDescriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        do {
            try fd.writeAll(secret)
            try fd.sync()
            fd.close()
        } catch {
            fd.close(); unlink(tmp)
            throw error
        }
        defer { unlink(tmp) }
        // link(2) fails when the name exists, so a key another process wrote meanwhile is kept.
        guard link(tmp, p) == 0 else {
            if errno == EEXIST { throw ContentError(.invalidArgument, "\(p) already exists; stoq never replaces a publisher key") }
            throw Posix.error("link", p)
        }
        try Posix.syncDirectory(directory)
        return keys
    }
}
