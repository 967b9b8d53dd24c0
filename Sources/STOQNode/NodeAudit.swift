import Foundation
import Logging
import STOQAudit
import STOQContent
import STOQExchange
import STOQIdentity

/// A node's audit trail (issue 15 item 7): one record per finished transfer (served or fetched,
/// as ``TransferTracker`` ends them) appended to `STORE/audit/`, and a head signed with the
/// node's certificate key every ``signInterval`` (or after ``signRecords`` records) and when the
/// node stops. Nothing is written on the serving path: records are appended by the node's
/// once-a-second accounts loop.
///
/// `@unchecked Sendable`: state behind `lock`.
public final class NodeAudit: @unchecked Sendable {
    /// The trail.
    public let trail: AuditTrail
    /// Signs heads with the node's key.
    public let signer: AuditSigner
    /// Longest time between signed heads while records come.
    public let signInterval: Duration
    /// Records after which a head is signed at once.
    public let signRecords: UInt64
    private let logger: Logger
    private let lock = NSLock()
    private var lastSigned = ContinuousClock.now
    private var onHead: (@Sendable (AuditHead) -> Void)?
    private var pending: [AuditRecord] = []

    /// The subdirectory of the store.
    public static let directoryName = "audit"

    /// Opens the trail in `STORE/audit`.
    /// - Parameter signer: the node's key as the node opened it (a key in a token signs there);
    ///   nil: heads are signed with the key file, read each time.
    public init(configuration: NodeConfiguration, signer: (any CertificateSigner)? = nil, logger: Logger) throws {
        let settings = AuditTrail.Settings(
            segmentBytes: configuration.auditSegmentBytes ?? (16 << 20), maximumSegments: configuration.auditSegments ?? 64)
        trail = try AuditTrail(directory: configuration.store + "/" + Self.directoryName, settings: settings)
        self.signer = AuditSigner(certificatePath: configuration.certificate, keyPath: configuration.key,
                                  key: PKCS11URI.isURI(configuration.key) ? signer : nil)
        let seconds = configuration.auditSignSeconds ?? 60
        guard (1...86_400).contains(seconds) else {
            throw NodeError(.invalidArgument, "audit sign seconds must be 1 to 86400, not \(seconds)")
        }
        signInterval = .seconds(seconds)
        signRecords = 10_000
        self.logger = logger
        if let recovery = trail.recovery { logger.warning("audit log: \(recovery)") }
    }

    /// Called with every head signed (the `stoq node` command appends it to the CT log).
    public func setHeadObserver(_ observer: @escaping @Sendable (AuditHead) -> Void) {
        lock.withLock { onHead = observer }
    }

    /// The most events ``note(_:content:peer:bytes:chunks:duration:grant:)`` queues before it
    /// writes them itself (the accounts loop writes them every second).
    static let maximumPending = 1024

    /// Queues the record of an event that is not a chunk transfer: an upload received and
    /// committed, a STATUS answered, a purge executed. The accounts loop appends queued records
    /// within a second (and ``tick(force:)`` when the node stops), so the request path does not
    /// write; past ``maximumPending`` queued records the caller writes them.
    /// - Parameters:
    ///   - content: the content id (manifest) the event concerns; nil for STATUS (32 zero bytes).
    ///   - peer: the peer's node id (nil: anonymous).
    ///   - grant: the access grant the request was allowed by (nil: a role, or none needed).
    public func note(_ direction: AuditRecord.Direction, content: ContentID?, peer: NodeID?, bytes: Int64, chunks: Int,
                     duration: Duration = .zero, grant: [UInt8]?) {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        let record = AuditRecord(
            timeMilliseconds: UInt64(max(0, Date().timeIntervalSince1970 * 1000)), durationMilliseconds: UInt32(clamping: max(0, ms)),
            direction: direction, content: content?.manifest.bytes ?? [UInt8](repeating: 0, count: 32), peers: peer.map { [$0.bytes] } ?? [],
            bytes: UInt64(max(0, bytes)), chunks: UInt64(max(0, chunks)), grantID: grant?.count == 16 ? grant : nil)
        let full = lock.withLock { () -> Bool in
            pending.append(record)
            return pending.count >= Self.maximumPending
        }
        if full { writePending() }
    }

    /// Appends the queued event records.
    func writePending() {
        let records = lock.withLock { () -> [AuditRecord] in
            defer { pending.removeAll() }
            return pending
        }
        guard !records.isEmpty else { return }
        do { try trail.append(records) } catch {
            logger.error("could not append to the audit log", metadata: ["error": "\(error.reason)"])
        }
    }

    /// Appends one record per finished transfer; peers are named by node id (a label without a
    /// certificate, an anonymous reader, names none).
    func record(_ finished: [TransferTracker.Finished], peerNames: PeerNames) {
        writePending()
        guard !finished.isEmpty else { return }
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        let records = finished.compactMap { f -> AuditRecord? in
            guard let content = ContentID(f.content) else { return nil }
            return AuditRecord(
                timeMilliseconds: now, durationMilliseconds: UInt32(clamping: Int((f.seconds * 1000).rounded())),
                direction: f.direction == .serve ? .served : .fetched, content: content.manifest.bytes,
                peers: f.peers.compactMap { peerNames.nodeID(ofLabel: $0)?.bytes },
                bytes: UInt64(max(0, f.bytes)), chunks: UInt64(max(0, f.chunks)), grantID: f.grant)
        }
        do { try trail.append(records) } catch {
            logger.error("could not append to the audit log", metadata: ["error": "\(error.reason)"])
        }
    }

    /// Appends the record of a fetch the node made as a library (``Node/fetch(_:from:configuration:onProgress:onEvent:)``):
    /// direction fetched, the sources that delivered chunks, the bytes and chunks fetched (chunks
    /// already in the store are not counted).
    /// Manifest chunks fetched count too (bytes and chunks, and their sources among the peers).
    func record(fetch report: FetchReport) {
        let delivered = report.sources.filter { $0.chunks > 0 || $0.manifestChunks > 0 }
        let record = AuditRecord(
            timeMilliseconds: UInt64(max(0, Date().timeIntervalSince1970 * 1000)),
            durationMilliseconds: UInt32(clamping: Int((report.seconds * 1000).rounded())), direction: .fetched,
            content: report.root.manifest.bytes, peers: delivered.compactMap { $0.nodeID?.bytes },
            bytes: UInt64(max(0, report.fetchedBytes + report.manifestBytesFetched)),
            chunks: UInt64(max(0, delivered.reduce(0) { $0 + $1.chunks + $1.manifestChunks })), grantID: nil)
        do { try trail.append([record]) } catch {
            logger.error("could not append to the audit log", metadata: ["error": "\(error.reason)"])
        }
    }

    /// A head signed over every record the log holds now (AUDIT_HEAD_REQUEST): a new one is
    /// signed (written to the log, and to the CT log with `--audit-ct-log`) when records came since
    /// the last; otherwise the last one.
    /// - Throws: ``AuditError`` when the head cannot be signed or read.
    public func currentHead() throws(AuditError) -> AuditHead {
        tick(force: true)
        // (Records appended by the accounts loop meanwhile are covered by the next head.)
        return try AuditVerifier.readHead(path: trail.directory + "/" + AuditTrail.headFileName)
    }

    /// Signs a head when records came since the last one and the interval passed (or many records
    /// came); `force`: whenever records came (the node is stopping).
    func tick(force: Bool = false) {
        if force { writePending() }
        guard trail.needsHead else { return }
        let due = lock.withLock { force || ContinuousClock.now - lastSigned >= signInterval || trail.unsigned >= signRecords }
        guard due else { return }
        let state = trail.state
        do {
            let head = try signer.sign(count: state.count, hash: state.hash, timeMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000))
            try trail.appendHead(head)
            let observer = lock.withLock { () -> (@Sendable (AuditHead) -> Void)? in
                lastSigned = .now
                return onHead
            }
            observer?(head)
        } catch {
            logger.error("could not sign the audit log's head", metadata: ["error": "\(error.reason)"])
        }
    }

    /// Records and signature state for `stoq status`.
    func status() -> [String: Any] {
        let s = trail.state
        return ["records": s.count, "unsigned": trail.unsigned, "head": AuditVerifier.hex(s.hash)]
    }
}
