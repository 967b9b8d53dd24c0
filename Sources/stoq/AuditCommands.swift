import ArgumentParser
import Foundation
import Nexus
import STOQ
import STOQAudit
import STOQNode

/// `stoq node` flags of the audit trail (docs/OPERATIONS.md, "Audit trail").
struct AuditOptions: ParsableArguments {
    @Flag(help: "Keep no audit trail of transfers (by default every finished transfer is recorded in STORE/audit, hash-chained, with a head signed by the node's key).") var noAuditLog = false
    @Option(help: "Most seconds between signed audit heads while transfers are recorded (default 60).") var auditSignSeconds: Int?
    @Option(help: "A CT log directory every signed audit head is appended to, so a truncated audit log is caught against it (`stoq audit verify --ct-log DIR`).") var auditCtLog: String?

    /// The configuration keys these flags set.
    func values() -> [String: ConfigValue] {
        var v = [String: ConfigValue]()
        if noAuditLog { v["noAuditLog"] = .bool(true) }
        if let auditSignSeconds { v["auditSignSeconds"] = .integer(auditSignSeconds) }
        if let auditCtLog { v["auditCtLog"] = .string(NodeConfigurationFile.absolute(auditCtLog, relativeTo: FileManager.default.currentDirectoryPath)) }
        return v
    }

    /// With `auditCtLog`: every head the node signs is appended to that CT log.
    static func attach(_ node: Node, configuration c: NodeConfiguration) throws {
        guard let directory = c.auditCtLog, let audit = node.audit else { return }
        let log = try TransparencyLog.open(directory: directory, create: true)
        audit.setHeadObserver { head in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            do {
                _ = try log.append(AuditCT.entry(head), now: now)
                _ = try log.signedTreeHead(now: now)
            } catch {
                Console.shared.error("could not append the audit head to the CT log \(directory): \(ErrorReport.peopleText(error))")
            }
        }
    }
}

/// Audit heads as CT log entries: `"STOQ-AUDIT-HEAD\0"` then the head's bytes (so they are told
/// apart from certificates).
enum AuditCT {
    static let prefix = Array("STOQ-AUDIT-HEAD".utf8) + [0]
    static func entry(_ head: AuditHead) -> [UInt8] { prefix + head.encoded() }

    /// The newest head of `nodeID` in the CT log (nil: none).
    static func newestHead(in directory: String, nodeID: [UInt8]?) throws -> AuditHead? {
        let log = try TransparencyLog.open(directory: directory, create: false)
        let size = try log.size()
        var newest: AuditHead?
        var index = size
        while index > 0 {
            index -= 1
            let e = try log.entry(at: index)
            guard e.starts(with: prefix), let head = AuditHead(decoding: e.dropFirst(prefix.count)) else { continue }
            if let nodeID, head.nodeID != nodeID { continue }
            if newest == nil || head.count > newest!.count { newest = head }
            if nodeID != nil { break }
        }
        return newest
    }
}

/// `stoq audit`: read and check a node's audit trail.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Check and list a node's audit trail of transfers (STORE/audit).",
        subcommands: [Verify.self, Show.self, Head.self]
    )

    /// `STORE` or `STORE/audit`.
    static func directory(_ store: String) -> String {
        let inner = (store as NSString).appendingPathComponent(NodeAudit.directoryName)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: inner, isDirectory: &isDirectory), isDirectory.boolValue { return inner }
        return store
    }

    /// Asks the node at `node` for its audit head (AUDIT_HEAD_REQUEST) over mutual TLS, after
    /// presenting `grant` (one with the status right) when given; the head's signature is checked.
    static func headFromNode(_ node: String, cert: String?, key: String?, ca: String?, grant: String?) async throws -> AuditHead {
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433'") }
        let tls = TLSConfiguration(certificateChainPEM: try PEMFile.read(cert ?? ClientIdentity.cert), privateKeyPEM: try PEMFile.read(key ?? ClientIdentity.key),
                                   trustRootsPEM: try PEMFile.read(ca ?? ClientIdentity.ca))
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        do {
            let connection = try await endpoint.connect(host: address.host, port: address.port)
            let client = PeerClient(connection: connection, name: address.description)
            try await GrantInput.present(grant, on: client)
            let head = try await client.auditHead()
            await connection.close()
            await endpoint.close()
            return head
        } catch {
            await endpoint.close()
            throw error
        }
    }

    /// The audit directory from `--log DIR` or the positional STORE (one of them).
    static func directory(store: String?, log: String?) throws -> String {
        switch (store, log) {
        case (let s?, nil): return directory(s)
        case (nil, let l?): return directory(l)
        case (nil, nil): throw ValidationError("give the node's store or audit directory: stoq audit verify STORE, or --log DIR (a copy of STORE/audit)")
        default: throw ValidationError("give the log once: STORE or --log DIR, not both")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a node's audit trail: every record's chain hash, every signed head, and (with --head, --node or --ct-log) that nothing was cut off since a head signed earlier.",
            discussion: "Exit status 0: the log is intact. 1: it is broken; the message says at which record or byte. With --node ADDR --log DIR: a copy of the node's log is checked against the head the node signs when asked (AUDIT_HEAD_REQUEST, for operators or a grant with the status right), so a copy cut short or rewritten is caught.")
        @Argument(help: "The node's store directory (or its audit directory).") var store: String?
        @Option(help: "The log to check (a copy of STORE/audit, or the store), instead of STORE.") var log: String?
        @Option(help: "Ask this running node for its signed head (e.g. '[::1]:4433') and check the log against it.") var node: String?
        @Option(help: "With --node: client certificate (PEM).") var cert: String?
        @Option(help: "With --node: client private key (PEM).") var key: String?
        @Option(help: "With --node: an access grant with the status right (its text or a file), when your certificate is not an operator's of the node.") var grant: String?
        @Option(help: "A signed head kept elsewhere (a copy of STORE/audit/head, or `stoq audit head --out`): the log must still hold what it covers.") var head: String?
        @Option(help: "A CT log directory the node appends its heads to (--audit-ct-log): check against the newest head there.") var ctLog: String?
        @Option(help: "The network CA certificate (PEM): every head's certificate must be issued by it (with --node, also the CA the node's TLS certificate must chain to; default ~/.stoq/certs/ca.pem).") var ca: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            let directory = try AuditCommand.directory(store: store, log: log)
            var outside: AuditHead?
            if let head { outside = try AuditVerifier.readHead(path: head) }
            if let node {
                let fromNode = try await AuditCommand.headFromNode(node, cert: cert, key: key, ca: ca, grant: grant)
                if outside == nil || fromNode.count > outside!.count { outside = fromNode }
            }
            var caDER: [UInt8]?
            if let ca {
                guard let der = try PEMFile.certificateDERs(in: PEMFile.read(ca)).first else { throw CLIError("\(ca) holds no certificate") }
                caDER = der
            }
            if let ctLog {
                // The node whose heads to look for: the one that signed the log's own heads.
                let own = try AuditVerifier.verify(directory: directory, caCertificate: caDER).nodeID
                guard let fromCT = try AuditCT.newestHead(in: ctLog, nodeID: own) else {
                    throw CLIError("the CT log \(ctLog) holds no audit head of this node; run the node with --audit-ct-log \(ctLog)")
                }
                if outside == nil || fromCT.count > outside!.count { outside = fromCT }
            }
            let report = try AuditVerifier.verify(directory: directory, outside: outside, caCertificate: caDER)
            if json {
                var doc: [String: Any] = ["ok": true, "segments": report.segments, "first_record": report.firstRecord, "records": report.records,
                                          "signed_heads": report.heads, "unsigned_records": report.unsignedRecords, "torn_bytes": report.tornBytes,
                                          "checked_outside_head": report.checkedOutsideHead]
                if let id = report.nodeID { doc["node_id"] = AuditVerifier.hex(id) }
                if let h = report.lastHead { doc["last_head"] = ["count": h.count, "time": AuditVerifier.timeText(h.timeMilliseconds)] }
                let data = try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
                Console.shared.result(String(decoding: data, as: UTF8.self))
                return
            }
            var lines = ["audit log intact: \(report.records - report.firstRecord) records in \(report.segments) segment(s), \(report.heads) signed head(s)"]
            if report.firstRecord > 0 { lines.append("  records 0…\(report.firstRecord - 1) were rotated away; the log starts at record \(report.firstRecord)") }
            if let id = report.nodeID { lines.append("  signed by node \(AuditVerifier.hex(id))") }
            if let h = report.lastHead { lines.append("  last signed head: \(h.count) records at \(AuditVerifier.timeText(h.timeMilliseconds))") }
            if report.unsignedRecords > 0 { lines.append("  \(report.unsignedRecords) record(s) after the last signed head (signed within the node's --audit-sign-seconds)") }
            if let outside, report.checkedOutsideHead { lines.append("  matches the outside head over \(outside.count) records signed \(AuditVerifier.timeText(outside.timeMilliseconds))") }
            if report.tornBytes > 0 { lines.append("  a record cut short by a crash (\(report.tornBytes) bytes) ends the log; the node drops it when it starts") }
            Console.shared.result(lines.joined(separator: "\n"))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the transfers in a node's audit trail, oldest first (the log is checked as it is read).")
        @Argument(help: "The node's store directory (or its audit directory).") var store: String
        @Flag(help: "One JSON object per record.") var json = false
        @Option(help: "Only records from this time on: an ISO 8601 time (2026-12-07T19:00:00Z) or an age such as 30s, 10m, 2h, 1d.") var since: String?

        func run() async throws {
            let from = try since.map(Self.parseSince)
            var lines: [String] = []
            let report = try AuditVerifier.verify(directory: AuditCommand.directory(store)) { entry in
                let r = entry.record
                if let from, Double(r.timeMilliseconds) / 1000 < from.timeIntervalSince1970 { return }
                // A STATUS record names no content ("-" in text, null in JSON).
                let content = r.direction == .status ? "-" : ContentID(ChunkID(bytes: r.content) ?? ChunkID(bytes: [UInt8](repeating: 0, count: 32))!).description
                let peers = r.peers.map(AuditVerifier.hex)
                if json {
                    var doc: [String: Any] = ["index": entry.index, "time": AuditVerifier.timeText(r.timeMilliseconds), "direction": r.direction.word,
                                              "content": content, "peers": peers, "bytes": r.bytes, "chunks": r.chunks,
                                              "duration_ms": r.durationMilliseconds, "hash": AuditVerifier.hex(entry.hash)]
                    if r.direction == .status { doc["content"] = NSNull() }
                    doc["peer"] = peers.first ?? "anonymous"
                    doc["grant"] = r.grantID.map(AuditVerifier.hex) ?? NSNull()
                    if let data = try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys]) { lines.append(String(decoding: data, as: UTF8.self)) }
                } else {
                    let who = peers.isEmpty ? "anonymous" : peers.map { String($0.prefix(16)) }.joined(separator: ",")
                    let grant = r.grantID.map { " grant=" + AuditVerifier.hex($0) } ?? ""
                    lines.append("#\(entry.index) \(AuditVerifier.timeText(r.timeMilliseconds)) \(r.direction.word) \(content) \(r.direction.preposition) \(who) bytes=\(r.bytes) chunks=\(r.chunks) ms=\(r.durationMilliseconds)\(grant)")
                }
            }
            if !lines.isEmpty { Console.shared.result(lines.joined(separator: "\n")) }
            if !json { Console.shared.note("\(lines.count) record(s) listed of \(report.records - report.firstRecord); the log's chain and heads check out") }
        }

        static func parseSince(_ text: String) throws -> Date {
            let f = ISO8601DateFormatter()
            if let d = f.date(from: text) { return d }
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            if let d = f.date(from: text) { return d }
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
            if let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()), n >= 0 {
                return Date(timeIntervalSinceNow: -n * scale)
            }
            throw ValidationError("--since takes an ISO 8601 time (2026-12-07T19:00:00Z) or an age such as 30s, 10m, 2h, 1d; not '\(text)'")
        }
    }

    struct Head: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the newest signed head of a node's audit trail (from its store, or asked of the running node with --node), and copy it (--out) to check the log against later.")
        @Argument(help: "The node's store directory (or its audit directory).") var store: String?
        @Option(help: "Ask this running node for a head signed over every record it holds now (e.g. '[::1]:4433'): operators, or a grant with the status right.") var node: String?
        @Option(help: "With --node: client certificate (PEM).") var cert: String?
        @Option(help: "With --node: client private key (PEM).") var key: String?
        @Option(help: "With --node: network CA certificate (PEM).") var ca: String?
        @Option(help: "With --node: an access grant with the status right (its text or a file), when your certificate is not an operator's of the node.") var grant: String?
        @Option(help: "Write the head (binary, as STORE/audit/head) to this file.") var out: String?
        @Flag(help: "Print the head as JSON.") var json = false

        func run() async throws {
            let head: AuditHead
            switch (store, node) {
            case (let store?, nil):
                head = try AuditVerifier.readHead(path: AuditCommand.directory(store) + "/" + AuditTrail.headFileName)
                try AuditVerifier.verifySignature(head, where: "the head")
            case (nil, let node?):
                head = try await AuditCommand.headFromNode(node, cert: cert, key: key, ca: ca, grant: grant)
            default:
                throw ValidationError("give the node's store (stoq audit head STORE) or a running node (--node ADDR), one of them")
            }
            if let out { try Data(head.encoded()).write(to: URL(fileURLWithPath: out)) }
            if json {
                let doc: [String: Any] = ["node_id": AuditVerifier.hex(head.nodeID), "count": head.count, "hash": AuditVerifier.hex(head.hash),
                                          "time": AuditVerifier.timeText(head.timeMilliseconds), "signature": AuditVerifier.hex(head.signature)]
                let data = try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
                Console.shared.result(String(decoding: data, as: UTF8.self))
            } else {
                Console.shared.result("""
                    node:      \(AuditVerifier.hex(head.nodeID))
                    records:   \(head.count)
                    hash:      \(AuditVerifier.hex(head.hash))
                    signed at: \(AuditVerifier.timeText(head.timeMilliseconds))
                    """)
            }
        }
    }
}
