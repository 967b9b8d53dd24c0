import Crypto
import Foundation

/// Something that happened to a block, recorded in the audit log.
public enum AuditEvent: Hashable, Sendable {
    /// A block was committed with `receipts` verified receipts.
    case commit(block: BlockID, receipts: Int)
    /// A shard moved to a node (`from` nil for the first store, a node for a transfer or repair).
    case transfer(block: BlockID, shard: Int, from: MeshNodeID?, to: MeshNodeID)
    /// A shard was declared lost on a node.
    case shardLost(block: BlockID, shard: Int, node: MeshNodeID, reason: String)

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .commit(let block, let receipts):
            w.u8(1)
            w.raw(block.bytes)
            w.u32(UInt32(clamping: receipts))
        case .transfer(let block, let shard, let from, let to):
            w.u8(2)
            w.raw(block.bytes)
            w.u16(UInt16(clamping: shard))
            w.u8(from == nil ? 0 : 1)
            if let from { w.raw(from.bytes) }
            w.raw(to.bytes)
        case .shardLost(let block, let shard, let node, let reason):
            w.u8(3)
            w.raw(block.bytes)
            w.u16(UInt16(clamping: shard))
            w.raw(node.bytes)
            w.blob16(Array(reason.utf8.prefix(1024)))
        }
        return w.bytes
    }
}

/// One entry of the audit log; `hash` covers the previous entry's hash, so the log is a chain.
public struct AuditEntry: Hashable, Sendable {
    /// Position in the log, from 0.
    public let sequence: UInt64
    /// When it was recorded (injected clock), as time since the log's epoch.
    public let time: Duration
    /// What happened.
    public let event: AuditEvent
    /// The previous entry's hash (32 zero bytes for the first).
    public let previous: Digest256
    /// SHA-256(previous ‖ sequence ‖ time ‖ event).
    public let hash: Digest256

    /// Creates an entry with the given fields (as loaded from storage); ``AuditLog/verify()`` checks them.
    public init(sequence: UInt64, time: Duration, event: AuditEvent, previous: Digest256, hash: Digest256) {
        self.sequence = sequence
        self.time = time
        self.event = event
        self.previous = previous
        self.hash = hash
    }

    static func computeHash(sequence: UInt64, time: Duration, event: AuditEvent, previous: Digest256) -> Digest256 {
        var w = ByteWriter()
        w.raw(Array("stoq-hypermesh-audit-v1".utf8))
        w.raw(previous.bytes)
        w.u64(sequence)
        let (seconds, attos) = time.components
        w.u64(UInt64(bitPattern: seconds))
        w.u64(UInt64(bitPattern: attos))
        w.raw(event.encoded())
        return Digest256.hashing(w.bytes)
    }
}

/// A hash-chained, tamper-evident log of commits, transfers and losses.
///
/// Each entry's hash covers the previous entry's hash, so changing, removing, reordering or
/// inserting any entry breaks every later link, which ``verify()`` reports. Keep the latest
/// ``head`` hash somewhere else (e.g. published via Nexus) to detect truncation as well.
public struct AuditLog: Hashable, Sendable {
    /// The entries, oldest first.
    public private(set) var entries: [AuditEntry]

    /// The hash before the first entry.
    public static let genesis = Digest256(unchecked: [UInt8](repeating: 0, count: 32))

    /// An empty log.
    public init() { entries = [] }

    /// A log loaded from storage; call ``verify()`` before trusting it.
    public init(entries: [AuditEntry]) { self.entries = entries }

    /// The hash of the newest entry (``genesis`` when empty).
    public var head: Digest256 { entries.last?.hash ?? Self.genesis }

    /// Appends an event.
    /// - Parameters:
    ///   - event: what happened.
    ///   - now: the injected clock.
    /// - Returns: the new entry.
    @discardableResult
    public mutating func append(_ event: AuditEvent, now: Duration) -> AuditEntry {
        let sequence = UInt64(entries.count)
        let hash = AuditEntry.computeHash(sequence: sequence, time: now, event: event, previous: head)
        let entry = AuditEntry(sequence: sequence, time: now, event: event, previous: head, hash: hash)
        entries.append(entry)
        return entry
    }

    /// The result of checking the chain.
    public enum Verification: Hashable, Sendable {
        /// Every link holds.
        case intact
        /// The first broken entry and why.
        case broken(at: Int, reason: String)
    }

    /// Recomputes every link.
    public func verify() -> Verification {
        var previous = Self.genesis
        for (i, e) in entries.enumerated() {
            guard e.sequence == UInt64(i) else { return .broken(at: i, reason: "sequence \(e.sequence) at position \(i)") }
            guard e.previous == previous else { return .broken(at: i, reason: "previous-hash link does not match entry \(i - 1)") }
            let expected = AuditEntry.computeHash(sequence: e.sequence, time: e.time, event: e.event, previous: e.previous)
            guard e.hash == expected else { return .broken(at: i, reason: "entry content does not match its hash") }
            previous = e.hash
        }
        return .intact
    }
}
