import Crypto
import Foundation
import Testing
@testable import STOQAudit
import STOQIdentity

/// The audit trail: appending, rotation, crash recovery, and what `verify` catches.
@Suite("Audit trail")
struct AuditTrailTests {
    /// A fresh directory with a node certificate and key.
    final class Fixture {
        let root: String
        let directory: String
        let signer: AuditSigner
        let ca: CertificateAuthority
        init() throws {
            root = NSTemporaryDirectory() + "audit-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            directory = root + "/audit"
            ca = try CertificateAuthority.create()
            let node = try ca.issue(name: "edge-1")
            let paths = try node.write(to: root, name: "edge-1")
            signer = AuditSigner(certificatePath: paths.certificate, keyPath: paths.key)
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }

        func record(_ i: Int, direction: AuditRecord.Direction = .served) -> AuditRecord {
            AuditRecord(timeMilliseconds: 1_700_000_000_000 + UInt64(i), durationMilliseconds: 5, direction: direction,
                        content: [UInt8](repeating: UInt8(i & 0xff), count: 32), peers: i % 3 == 0 ? [] : [[UInt8](repeating: 7, count: 32)],
                        bytes: UInt64(1000 * i), chunks: UInt64(i), grantID: i % 2 == 0 ? [UInt8](repeating: 9, count: 16) : nil)
        }

        func sign(_ trail: AuditTrail) throws -> AuditHead {
            let s = trail.state
            let head = try signer.sign(count: s.count, hash: s.hash, timeMilliseconds: 1_700_000_100_000)
            try trail.appendHead(head)
            return head
        }

        func segmentPath(_ n: UInt64) -> String { directory + "/" + AuditSegment.fileName(n) }
        func bytes(_ n: UInt64) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: segmentPath(n))!) }
        func write(_ n: UInt64, _ b: [UInt8]) { FileManager.default.createFile(atPath: segmentPath(n), contents: Data(b)) }
    }

    @Test("records round-trip, the chain and heads verify, show lists every record")
    func appendAndVerify() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory)
        try trail.append((0..<10).map { f.record($0) })
        _ = try f.sign(trail)
        try trail.append((10..<15).map { f.record($0, direction: .fetched) })
        var seen: [AuditRecord] = []
        let report = try AuditVerifier.verify(directory: f.directory) { seen.append($0.record) }
        #expect(report.records == 15)
        #expect(report.heads == 1)
        #expect(report.unsignedRecords == 5)
        #expect(seen == (0..<10).map { f.record($0) } + (10..<15).map { f.record($0, direction: .fetched) })
        let head = try AuditVerifier.readHead(path: f.directory + "/head")
        #expect(head.count == 10)
        #expect(try AuditVerifier.verify(directory: f.directory, outside: head, caCertificate: try PEMFile.certificateDERs(in: f.ca.certificatePEM).first).checkedOutsideHead)
    }

    @Test("reopening continues the chain")
    func reopen() throws {
        let f = try Fixture()
        do {
            let trail = try AuditTrail(directory: f.directory)
            try trail.append([f.record(1), f.record(2)])
        }
        let again = try AuditTrail(directory: f.directory)
        #expect(again.state.count == 2)
        try again.append([f.record(3)])
        _ = try f.sign(again)
        #expect(try AuditVerifier.verify(directory: f.directory).records == 3)
    }

    @Test("rotation keeps the chain across segments and bounds the number kept")
    func rotation() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory, settings: .init(segmentBytes: 4096, maximumSegments: 3))
        for i in 0..<200 { try trail.append([f.record(i)]) }
        _ = try f.sign(trail)
        let segments = AuditSegment.segments(in: f.directory)
        #expect(segments.count == 3)
        let report = try AuditVerifier.verify(directory: f.directory)
        #expect(report.records == 200)
        #expect(report.firstRecord > 0)
        // A segment removed from the middle is caught.
        try FileManager.default.removeItem(atPath: f.segmentPath(segments[1]))
        #expect(throws: AuditError.self) { try AuditVerifier.verify(directory: f.directory) }
    }

    @Test("a torn last record is dropped on open and the log stays valid")
    func tornRecord() throws {
        let f = try Fixture()
        do {
            let trail = try AuditTrail(directory: f.directory)
            try trail.append((0..<5).map { f.record($0) })
            _ = try f.sign(trail)
            try trail.append([f.record(5)])
        }
        var b = f.bytes(1)
        b.removeLast(20)  // a crash in the middle of writing record 5
        f.write(1, b)
        let seen = try AuditVerifier.verify(directory: f.directory)
        #expect(seen.tornBytes > 0)
        #expect(seen.records == 5)
        let trail = try AuditTrail(directory: f.directory)
        #expect(trail.recovery?.contains("torn") == true)
        #expect(trail.state.count == 5)
        try trail.append([f.record(6)])
        _ = try f.sign(trail)
        let report = try AuditVerifier.verify(directory: f.directory)
        #expect(report.records == 6)
        #expect(report.tornBytes == 0)
    }

    @Test("a byte changed in a record is caught at that record")
    func tamper() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory)
        try trail.append((0..<8).map { f.record($0) })
        _ = try f.sign(trail)
        // Find record 4's frame and change its byte count.
        let parsed = try AuditSegment.parse(f.bytes(1), name: "x")
        let records = parsed.frames.filter { $0.kind == .record }
        var b = f.bytes(1)
        b[records[4].offset + 5 + 8 + 4 + 1 + 32 + 1 + 32 + 7] ^= 0x01
        f.write(1, b)
        do {
            _ = try AuditVerifier.verify(directory: f.directory)
            Issue.record("the tampered log verified")
        } catch {
            #expect(error.code == .broken)
            #expect(error.reason.contains("record 4 "))
        }
    }

    @Test("a rewritten chain is caught by the signed head; a signature change is caught too")
    func rewrite() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory)
        try trail.append((0..<4).map { f.record($0) })
        _ = try f.sign(trail)
        // Rebuild the same log with record 2 changed and every hash recomputed.
        let other = f.root + "/forged"
        let forged = try AuditTrail(directory: other)
        var changed = (0..<4).map { f.record($0) }
        changed[2].bytes = 1
        try forged.append(changed)
        let head = try AuditVerifier.readHead(path: f.directory + "/head")
        try forged.appendHead(head)
        do {
            _ = try AuditVerifier.verify(directory: other)
            Issue.record("the forged log verified")
        } catch { #expect(error.reason.contains("signed head")) }
        // A head with a changed count does not verify.
        var bad = head
        bad.count += 1
        #expect(throws: AuditError.self) { try AuditVerifier.verifySignature(bad) }
    }

    @Test("a truncated log is caught against a head kept elsewhere")
    func truncation() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory)
        try trail.append((0..<6).map { f.record($0) })
        _ = try f.sign(trail)
        try trail.append((6..<9).map { f.record($0) })
        let kept = try f.sign(trail)
        // Cut the log back to record 6 (the second head goes with it): on its own it still verifies...
        let parsed = try AuditSegment.parse(f.bytes(1), name: "x")
        let cut = parsed.frames.filter { $0.kind == .record }[6].offset
        f.write(1, Array(f.bytes(1)[..<cut]))
        #expect(try AuditVerifier.verify(directory: f.directory).records == 6)
        // ...but not against the head kept elsewhere.
        do {
            _ = try AuditVerifier.verify(directory: f.directory, outside: kept)
            Issue.record("the truncated log verified against the later head")
        } catch {
            #expect(error.reason.contains("truncated"))
            #expect(error.reason.contains("records 6…8"))
        }
    }

    @Test("a head of another CA's node is refused with --ca")
    func otherCA() throws {
        let f = try Fixture()
        let trail = try AuditTrail(directory: f.directory)
        try trail.append([f.record(1)])
        _ = try f.sign(trail)
        let other = try CertificateAuthority.create(commonName: "Other CA")
        #expect(throws: AuditError.self) { try AuditVerifier.verify(directory: f.directory, caCertificate: try PEMFile.certificateDERs(in: other.certificatePEM).first) }
    }

    @Test("decoders are bounded and canonical on arbitrary bytes")
    func fuzzSmoke() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<200, using: &rng)
            var b = AuditSegment.magic + (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Bool.random(using: &rng) { b = Array(b.dropFirst(8)) }
            AuditSegment.fuzz(b)
            _ = AuditHead(decoding: b[...])
            _ = AuditRecord(decoding: b[...])
        }
    }
}
