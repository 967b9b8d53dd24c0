import Crypto
import Foundation
import STOQErrors
import STOQIdentity
import X509

/// Reads and checks an audit trail directory (``AuditTrail``), without writing to it.
public enum AuditVerifier {
    /// What a trail holds and what was checked.
    public struct Report: Sendable {
        /// Segments read.
        public var segments = 0
        /// The first record's position kept (records before it were rotated away).
        public var firstRecord: UInt64 = 0
        /// Records in the trail (positions `firstRecord..<records`).
        public var records: UInt64 = 0
        /// Signed heads found and verified.
        public var heads = 0
        /// The newest signed head in the trail.
        public var lastHead: AuditHead?
        /// The node id the heads are signed by.
        public var nodeID: [UInt8]?
        /// Records after the last signed head (not yet covered by a signature).
        public var unsignedRecords: UInt64 { records - (lastHead?.count ?? firstRecord) }
        /// Bytes of a record cut short at the very end (a crash; dropped when the node opens the trail).
        public var tornBytes = 0
        /// Whether an outside head was checked against the trail.
        public var checkedOutsideHead = false
    }

    /// One record with its position and chain hash.
    public struct Entry: Sendable {
        /// Position in the trail, from 0.
        public var index: UInt64
        /// The record.
        public var record: AuditRecord
        /// Its chain hash.
        public var hash: [UInt8]
    }

    /// Checks every segment: the chain of every record, that each segment continues the one before,
    /// that every signed head verifies and matches the chain where it stands; and, with
    /// `outside` (a head kept elsewhere: a copy, the node's answer, the CT log), that the trail still
    /// holds the records it covers (nothing was cut off or rewritten).
    /// - Parameters:
    ///   - directory: the trail's directory (`STORE/audit`).
    ///   - outside: a signed head from elsewhere.
    ///   - caCertificate: when given, every head's certificate must be issued by this CA (DER).
    ///   - visit: called with every record, oldest first.
    /// - Throws: ``AuditError`` `.broken` or `.badHead` saying where and what.
    public static func verify(directory: String, outside: AuditHead? = nil, caCertificate: [UInt8]? = nil,
                              visit: (Entry) -> Void = { _ in }) throws(AuditError) -> Report {
        var report = Report()
        let numbers = AuditSegment.segments(in: directory)
        guard !numbers.isEmpty else {
            throw AuditError(.broken, "no audit segments in \(directory); the node writes them to STORE/audit while it runs")
        }
        var count: UInt64 = 0
        var hash = AuditRecord.genesis
        var known: [UInt64: [UInt8]] = [:]  // chain hash at each count a head names (checked as we go)
        var outsideMatched = false
        let ca = try caCertificate.map { der throws(AuditError) -> Certificate in
            do { return try Certificate(derEncoded: der) } catch { throw AuditError(.badHead, "the CA certificate cannot be read: \(error)") }
        }
        func check(_ head: AuditHead, where place: String) throws(AuditError) {
            try verifySignature(head, caCertificate: ca, where: place)
            if let id = report.nodeID, id != head.nodeID {
                throw AuditError(.badHead, "\(place): the head is signed by node \(hex(head.nodeID).prefix(16)), the ones before by \(hex(id).prefix(16)); this is another node's log mixed in")
            }
            report.nodeID = head.nodeID
        }
        for (i, n) in numbers.enumerated() {
            let name = AuditSegment.fileName(n)
            let bytes: [UInt8]
            guard let data = FileManager.default.contents(atPath: directory + "/" + name) else {
                throw AuditError(.storage, "cannot read \(directory)/\(name)")
            }
            bytes = [UInt8](data)
            let parsed = try AuditSegment.parse(bytes, name: name)
            let isLast = i == numbers.count - 1
            if parsed.tornBytes > 0 {
                guard isLast else {
                    throw AuditError(.broken, "\(name) ends in \(parsed.tornBytes) bytes of a cut-short frame but is not the last segment; it was truncated after the node moved on")
                }
                report.tornBytes = parsed.tornBytes
            }
            if parsed.frames.isEmpty, isLast { report.segments += 1; continue }
            guard let first = parsed.frames.first, first.kind == .start, let start = AuditSegment.decodeStart(first.payload) else {
                throw AuditError(.broken, "\(name) does not begin with a START frame; the segment was damaged or edited")
            }
            guard start.segment == n else {
                throw AuditError(.broken, "\(name) says it is segment \(start.segment); segments were renamed or swapped")
            }
            if i == 0 {
                count = start.count
                hash = start.hash
                report.firstRecord = start.count
            } else {
                guard n == numbers[i - 1] + 1 else {
                    throw AuditError(.broken, "segment \(AuditSegment.fileName(numbers[i - 1] + 1)) is missing between \(AuditSegment.fileName(numbers[i - 1])) and \(name): records \(count)… were removed")
                }
                guard start.count == count, start.hash == hash else {
                    throw AuditError(.broken, "\(name) continues from record \(start.count) but the segment before ends at record \(count) (or with another hash); records were removed or changed at the segment boundary")
                }
            }
            report.segments += 1
            for f in parsed.frames.dropFirst() {
                switch f.kind {
                case .start:
                    throw AuditError(.broken, "\(name) at byte \(f.offset): a second START frame; the segment was edited")
                case .record:
                    guard f.payload.count > 32, let record = AuditRecord(decoding: f.payload.dropLast(32)), record.isWellFormed else {
                        throw AuditError(.broken, "record \(count) (\(name) at byte \(f.offset)) is malformed; the log was damaged or edited there")
                    }
                    let stored = Array(f.payload.suffix(32))
                    let expected = AuditRecord.chainHash(previous: hash, index: count, record: f.payload.dropLast(32))
                    guard stored == expected else {
                        throw AuditError(.broken, "record \(count) (\(name) at byte \(f.offset)) does not match its chain hash; the record was edited there, or one before it was removed")
                    }
                    visit(Entry(index: count, record: record, hash: stored))
                    count += 1
                    hash = stored
                case .head:
                    guard let head = AuditHead(decoding: f.payload) else {
                        throw AuditError(.broken, "the signed head in \(name) at byte \(f.offset) is malformed; the log was damaged or edited there")
                    }
                    try check(head, where: "the signed head in \(name) at byte \(f.offset)")
                    guard head.count == count, head.hash == hash else {
                        throw AuditError(.broken, "the signed head in \(name) at byte \(f.offset) covers \(head.count) records, but the log holds \(count) there (or another chain hash); records before it were changed, added or removed")
                    }
                    known[head.count] = head.hash
                    report.heads += 1
                    report.lastHead = head
                }
                if let outside, !outsideMatched, count == outside.count {
                    guard hash == outside.hash else {
                        throw AuditError(.broken, "the head you gave (\(outside.count) records, signed \(timeText(outside.timeMilliseconds))) does not match the log at record \(outside.count); the log was rewritten")
                    }
                    outsideMatched = true
                }
            }
        }
        report.records = count
        if let outside {
            try check(outside, where: "the head you gave")
            report.checkedOutsideHead = true
            if outside.count == report.firstRecord, !outsideMatched {
                guard outside.hash == hashAt(first: report.firstRecord, directory: directory) else {
                    throw AuditError(.broken, "the head you gave does not match the start of the log")
                }
                outsideMatched = true
            }
            if outside.count < report.firstRecord {
                throw AuditError(.broken, "the head you gave covers \(outside.count) records, but the log now starts at record \(report.firstRecord) (older segments were rotated away); check it against a newer head")
            }
            if outside.count > count {
                throw AuditError(.broken, "the log is truncated: it holds \(count) records, but the node signed a head over \(outside.count) at \(timeText(outside.timeMilliseconds)); records \(count)…\(outside.count - 1) are missing")
            }
            guard outsideMatched else {
                throw AuditError(.broken, "the head you gave (\(outside.count) records) does not fall on a record of the log; the log was rewritten")
            }
        }
        return report
    }

    private static func hashAt(first: UInt64, directory: String) -> [UInt8]? {
        guard let n = AuditSegment.segments(in: directory).first,
              let data = FileManager.default.contents(atPath: directory + "/" + AuditSegment.fileName(n)),
              let parsed = try? AuditSegment.parse([UInt8](data), name: ""), let f = parsed.frames.first,
              let start = AuditSegment.decodeStart(f.payload) else { return nil }
        return start.hash
    }

    /// Checks a head's signature, that its certificate's key is its node id, and (with a CA) that
    /// the CA issued the certificate.
    /// - Throws: ``AuditError`` `.badHead`.
    public static func verifySignature(_ head: AuditHead, caCertificate: Certificate? = nil, where place: String = "the head") throws(AuditError) {
        guard let cert = try? Certificate(derEncoded: head.certificate) else {
            throw AuditError(.badHead, "\(place): its certificate cannot be read")
        }
        guard NodeID(publicKey: cert.publicKey).bytes == head.nodeID else {
            throw AuditError(.badHead, "\(place): its certificate is not node \(hex(head.nodeID).prefix(16))'s")
        }
        guard let key = P256.Signing.PublicKey(cert.publicKey), let sig = try? P256.Signing.ECDSASignature(derRepresentation: head.signature),
              key.isValidSignature(sig, for: head.signedBytes) else {
            throw AuditError(.badHead, "\(place): the signature does not verify; the head was altered or not signed by node \(hex(head.nodeID).prefix(16))")
        }
        if let ca = caCertificate {
            guard cert.issuer == ca.subject, ca.publicKey.isValidSignature(cert.signature, for: cert) else {
                throw AuditError(.badHead, "\(place): its certificate was not issued by the CA you gave")
            }
        }
    }

    /// Reads a head file (``AuditHead`` bytes, as the node writes `STORE/audit/head`).
    /// - Throws: ``AuditError`` `.badHead` when the file is not one head.
    public static func readHead(path: String) throws(AuditError) -> AuditHead {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AuditError(.storage, "cannot read \(path)")
        }
        guard let head = AuditHead(decoding: [UInt8](data)[...]) else {
            throw AuditError(.badHead, "\(path) is not an audit head (copy STORE/audit/head, or use `stoq audit head STORE --out FILE`)")
        }
        return head
    }

    /// Lower-case hex.
    public static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// A time in ms since 1970 as ISO 8601 UTC.
    public static func timeText(_ ms: UInt64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}

func hex(_ bytes: [UInt8]) -> String { AuditVerifier.hex(bytes) }
func timeText(_ ms: UInt64) -> String { AuditVerifier.timeText(ms) }
