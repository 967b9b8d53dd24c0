import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import STOQErrors
import STOQIdentity

/// A node's append-only, hash-chained audit trail of transfers, kept in segment files in one
/// directory (`STORE/audit/`, see ``AuditSegment``).
///
/// Appending writes each record with one `write(2)` (no fsync); ``appendHead(_:)`` writes a
/// signed head and fsyncs the segment, and the node signs a head every ``Settings`` interval and
/// when it stops. So a crash of the process loses no record written, and a crash of the machine
/// loses at most the records after the last signed head. A record cut short by a crash is
/// dropped when the trail is opened again.
///
/// Growth is bounded: a segment is closed at ``Settings/segmentBytes`` and the oldest segments
/// beyond ``Settings/maximumSegments`` are deleted; each segment starts with the count and
/// chain hash it continues from, so the chain of the segments kept can be checked.
///
/// `@unchecked Sendable`: state behind `lock`.
public final class AuditTrail: @unchecked Sendable {
    /// Sizes.
    public struct Settings: Sendable, Hashable {
        /// Bytes after which a segment is closed and a new one begun (default 16 MiB).
        public var segmentBytes: Int
        /// Segments kept; older ones are deleted (default 64, about 1 GiB).
        public var maximumSegments: Int
        /// Creates settings.
        public init(segmentBytes: Int = 16 << 20, maximumSegments: Int = 64) {
            self.segmentBytes = max(4096, segmentBytes)
            self.maximumSegments = max(2, maximumSegments)
        }
    }

    /// The directory.
    public let directory: String
    /// The settings.
    public let settings: Settings
    /// What opening found and repaired (a torn record dropped, a damaged segment left behind), for the log.
    public let recovery: String?

    private let lock = NSLock()
    private var fd: Int32 = -1
    private var segment: UInt64 = 0
    private var segmentLength = 0
    private var count: UInt64 = 0
    private var hash: [UInt8] = AuditRecord.genesis
    private var signedCount: UInt64?

    /// The file holding the latest signed head (``AuditHead`` bytes), in the directory.
    public static let headFileName = "head"

    /// Opens (creating if needed) the trail in `directory`, dropping a torn last record.
    /// - Throws: ``AuditError`` `.storage` when the directory or a segment cannot be used.
    public init(directory: String, settings: Settings = Settings()) throws(AuditError) {
        self.directory = directory
        self.settings = settings
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AuditError(.storage, "cannot create the audit directory \(directory): \(error.localizedDescription); check its permissions")
        }
        var notes: [String] = []
        let existing = AuditSegment.segments(in: directory)
        var resumed = false
        if let last = existing.last {
            let path = directory + "/" + AuditSegment.fileName(last)
            let bytes = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            do throws(AuditError) {
                let parsed = try AuditSegment.parse(bytes, name: AuditSegment.fileName(last))
                if let first = parsed.frames.first, first.kind == .start, let start = AuditSegment.decodeStart(first.payload) {
                    var c = start.count, h = start.hash
                    for f in parsed.frames.dropFirst() where f.kind == .record && f.payload.count > 32 {
                        c += 1
                        h = Array(f.payload.suffix(32))
                    }
                    for f in parsed.frames where f.kind == .head {
                        if let head = AuditHead(decoding: f.payload) { signedCount = head.count }
                    }
                    count = c
                    hash = h
                    segment = last
                    if parsed.tornBytes > 0 {
                        guard truncate(path, off_t(parsed.validLength)) == 0 else {
                            throw AuditError(.storage, "cannot drop the torn record at the end of \(path): \(String(cString: strerror(errno)))")
                        }
                        notes.append("dropped a torn record (\(parsed.tornBytes) bytes) at the end of \(AuditSegment.fileName(last)), left by a crash")
                    }
                    fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
                    guard fd >= 0 else { throw AuditError(.storage, "cannot open \(path) for appending: \(String(cString: strerror(errno)))") }
                    segmentLength = parsed.validLength
                    resumed = true
                } else if parsed.frames.isEmpty {
                    // A segment cut short while it was begun: begin it again from the one before.
                    unlink(path)
                    if let previous = existing.dropLast().last, let state = Self.endState(directory: directory, segment: previous) {
                        (count, hash) = state
                    }
                    segment = last - 1
                    notes.append("removed \(AuditSegment.fileName(last)), begun but never written (a crash during rotation)")
                } else {
                    throw AuditError(.broken, "\(AuditSegment.fileName(last)) does not begin with a START frame")
                }
            } catch {
                guard error.code == .broken else { throw error }
                // Leave the damaged segment for `stoq audit verify` to report; continue in a new one.
                segment = last
                notes.append("the last segment is damaged (\(error.reason)); continuing in a new segment, `stoq audit verify` will report the damage")
            }
        }
        recovery = notes.isEmpty ? nil : notes.joined(separator: "; ")
        if !resumed {
            lock.lock()
            defer { lock.unlock() }
            try beginSegmentLocked(segment + 1)
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The count and hash a finished segment ends with (nil: unreadable).
    static func endState(directory: String, segment: UInt64) -> (UInt64, [UInt8])? {
        let name = AuditSegment.fileName(segment)
        guard let data = FileManager.default.contents(atPath: directory + "/" + name),
              let parsed = try? AuditSegment.parse([UInt8](data), name: name),
              let first = parsed.frames.first, let start = AuditSegment.decodeStart(first.payload) else { return nil }
        var c = start.count, h = start.hash
        for f in parsed.frames.dropFirst() where f.kind == .record && f.payload.count > 32 {
            c += 1
            h = Array(f.payload.suffix(32))
        }
        return (c, h)
    }

    /// Records written, and the chain hash after the last.
    public var state: (count: UInt64, hash: [UInt8]) { lock.withLock { (count, hash) } }

    /// Records written since the last signed head (all of them when none was signed).
    public var unsigned: UInt64 { lock.withLock { count - (signedCount ?? 0) } }

    /// Whether a head was ever signed, or records came since the last one.
    public var needsHead: Bool { lock.withLock { signedCount != count } }

    /// Appends records (one `write(2)` for the batch); ids of the wrong length are dropped.
    /// - Throws: ``AuditError`` `.storage` when the write fails.
    public func append(_ records: [AuditRecord]) throws(AuditError) {
        lock.lock()
        defer { lock.unlock() }
        do {
            var batch: [UInt8] = []
            for r in records where r.isWellFormed {
                let body = r.encoded()
                let h = AuditRecord.chainHash(previous: hash, index: count, record: body)
                batch += AuditSegment.frame(.record, body + h)
                count += 1
                hash = h
            }
            guard !batch.isEmpty else { return }
            try writeLocked(batch)
            if segmentLength >= settings.segmentBytes { try beginSegmentLocked(segment + 1) }
        }
    }

    /// Writes a signed head, fsyncs the segment and replaces the ``headFileName`` file.
    /// - Throws: ``AuditError`` `.storage`.
    public func appendHead(_ head: AuditHead) throws(AuditError) {
        do {
            lock.lock()
            defer { lock.unlock() }
            try writeLocked(AuditSegment.frame(.head, head.encoded()))
            guard fsync(fd) == 0 else { throw AuditError(.storage, "cannot sync the audit log: \(String(cString: strerror(errno)))") }
            signedCount = head.count
        }
        let path = directory + "/" + Self.headFileName
        do { try Data(head.encoded()).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw AuditError(.storage, "cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// Syncs the open segment to disk.
    public func sync() { lock.withLock { if fd >= 0 { _ = fsync(fd) } } }

    private func writeLocked(_ bytes: [UInt8]) throws(AuditError) {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AuditError(.storage, "cannot write the audit log in \(directory): \(String(cString: strerror(errno))); free space or fix permissions")
            }
            done += n
        }
        segmentLength += bytes.count
    }

    private func beginSegmentLocked(_ n: UInt64) throws(AuditError) {
        if fd >= 0 { _ = fsync(fd); close(fd); fd = -1 }
        let path = directory + "/" + AuditSegment.fileName(n)
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AuditError(.storage, "cannot create \(path): \(String(cString: strerror(errno)))") }
        segment = n
        segmentLength = 0
        try writeLocked(AuditSegment.magic + AuditSegment.frame(.start, AuditSegment.start(segment: n, count: count, hash: hash)))
        _ = fsync(fd)
        // Bounded growth: the oldest segments go.
        let all = AuditSegment.segments(in: directory)
        if all.count > settings.maximumSegments {
            for old in all.prefix(all.count - settings.maximumSegments) { unlink(directory + "/" + AuditSegment.fileName(old)) }
        }
    }
}

/// Signs audit heads with a node's certificate key (ECDSA P-256), reading the certificate file
/// each time so a renewed certificate is picked up; the key file too, unless the key is given
/// open (a key in a token, which signs there).
public struct AuditSigner: Sendable {
    /// The certificate chain (PEM) file.
    public let certificatePath: String
    /// The private key (PEM) file, or the `pkcs11:` URI of the key in a token.
    public let keyPath: String
    /// The key, when it is open already (a key in a token): it signs instead of `keyPath`'s file.
    public let key: (any CertificateSigner)?

    /// Creates a signer.
    public init(certificatePath: String, keyPath: String, key: (any CertificateSigner)? = nil) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.key = key
    }

    /// Signs `count` and `hash` now.
    /// - Throws: ``AuditError`` `.badHead` when the key is not P-256, is not the certificate's, or
    ///   the files cannot be read.
    public func sign(count: UInt64, hash: [UInt8], timeMilliseconds: UInt64) throws(AuditError) -> AuditHead {
        do {
            guard let leaf = try PEMFile.certificateDERs(in: PEMFile.read(certificatePath)).first else {
                throw AuditError(.badHead, "\(certificatePath) holds no certificate")
            }
            let signer: any CertificateSigner = try key ?? SoftwareSigner(pem: PEMFile.read(keyPath))
            let id = try NodeID(certificateDER: leaf)
            guard NodeID(publicKey: signer.publicKey) == id else {
                throw AuditError(.badHead, "the key \(PKCS11URI.redacted(keyPath)) is not the key of the certificate in \(certificatePath)")
            }
            return try AuditHead.sign(count: count, hash: hash, timeMilliseconds: timeMilliseconds, nodeID: id.bytes, certificate: leaf, signer: signer)
        } catch let e as AuditError {
            throw e
        } catch {
            throw AuditError(.badHead, "cannot sign the audit head with \(PKCS11URI.redacted(keyPath)): \(error); the audit log needs a P-256 node key")
        }
    }
}
