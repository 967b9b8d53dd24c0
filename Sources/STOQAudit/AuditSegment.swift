import Foundation
import STOQErrors

/// The audit trail's errors (their reasons are written for people).
public enum AuditErrorDomain: CodedErrorDomain {}
/// An audit trail error.
public typealias AuditError = CodedError<AuditErrorDomain>

extension ErrorCode where Domain == AuditErrorDomain {
    /// The log cannot be read or written (a file system problem).
    public static let storage = Self("storage")
    /// The log is damaged, was edited, or lost records.
    public static let broken = Self("broken")
    /// A head does not verify (bad signature, wrong certificate, another node's).
    public static let badHead = Self("badHead")
}

/// One segment file of the audit trail (`STORE/audit/NNNNNNNNNNNN.log`): the magic `STOQAUD1`,
/// then frames `length:u32` (of what follows, 1…``maximumFrameLength``) `kind:u8` payload.
///
/// | kind | name | payload |
/// | --- | --- | --- |
/// | 1 | START | `segment:u64` `count:u64` `hash:[32]`: records before this segment and the chain hash after them |
/// | 2 | RECORD | an ``AuditRecord`` then its chain hash `[32]` |
/// | 3 | HEAD | an ``AuditHead`` signed by the node |
///
/// Every segment starts with START; a new segment's START carries the previous segment's last
/// count and hash, so rotation keeps the chain.
public enum AuditSegment {
    /// The first bytes of every segment.
    public static let magic = Array("STOQAUD1".utf8)
    /// The largest frame (kind and payload).
    public static let maximumFrameLength = 16 * 1024

    /// Frame kinds.
    public enum Kind: UInt8, Sendable {
        /// The segment's start (carries the chain state before it).
        case start = 1
        /// A transfer record.
        case record = 2
        /// A signed head.
        case head = 3
    }

    /// One frame as read.
    public struct Frame: Sendable {
        /// Its kind.
        public var kind: Kind
        /// Its payload.
        public var payload: ArraySlice<UInt8>
        /// Where the frame starts in the file.
        public var offset: Int
    }

    /// What a segment file holds.
    public struct Parsed: Sendable {
        /// The complete frames, in order.
        public var frames: [Frame]
        /// Bytes at the end that do not make a whole frame (a write cut short by a crash).
        public var tornBytes: Int
        /// The length of the whole frames (where a torn tail begins).
        public var validLength: Int
    }

    /// A frame's bytes.
    public static func frame(_ kind: Kind, _ payload: [UInt8]) -> [UInt8] {
        var w = AuditWriter()
        w.u32(UInt32(payload.count + 1))
        w.u8(kind.rawValue)
        w.raw(payload)
        return w.bytes
    }

    /// A START payload.
    public static func start(segment: UInt64, count: UInt64, hash: [UInt8]) -> [UInt8] {
        var w = AuditWriter()
        w.u64(segment)
        w.u64(count)
        w.raw(hash)
        return w.bytes
    }

    /// Decodes a START payload.
    public static func decodeStart(_ payload: ArraySlice<UInt8>) -> (segment: UInt64, count: UInt64, hash: [UInt8])? {
        var r = AuditReader(payload)
        guard let s = r.u64(), let c = r.u64(), let h = r.take(32), r.isAtEnd else { return nil }
        return (s, c, h)
    }

    /// Splits a segment's bytes into frames; safe on arbitrary bytes.
    /// - Throws: ``AuditError`` `.broken` naming the byte offset of the first bad frame (a wrong
    ///   magic, a zero or oversized length, an unknown kind). A frame cut short at the very end is
    ///   not an error: it is reported as ``Parsed/tornBytes``.
    public static func parse(_ bytes: [UInt8], name: String) throws(AuditError) -> Parsed {
        guard bytes.count >= magic.count else {
            return Parsed(frames: [], tornBytes: bytes.count, validLength: 0)
        }
        guard Array(bytes[0..<magic.count]) == magic else {
            throw AuditError(.broken, "\(name) is not an audit segment (its first bytes are not STOQAUD1)")
        }
        var frames: [Frame] = []
        var at = magic.count
        while at < bytes.count {
            guard bytes.count - at >= 4 else { return Parsed(frames: frames, tornBytes: bytes.count - at, validLength: at) }
            let length = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            guard (1...maximumFrameLength).contains(length) else {
                throw AuditError(.broken, "\(name) at byte \(at): frame length \(length) is out of bounds (1…\(maximumFrameLength)); the file was damaged or edited here")
            }
            guard bytes.count - at - 4 >= length else { return Parsed(frames: frames, tornBytes: bytes.count - at, validLength: at) }
            guard let kind = Kind(rawValue: bytes[at + 4]) else {
                throw AuditError(.broken, "\(name) at byte \(at): unknown frame kind \(bytes[at + 4]); the file was damaged or edited here")
            }
            frames.append(Frame(kind: kind, payload: bytes[(at + 5)..<(at + 4 + length)], offset: at))
            at += 4 + length
        }
        return Parsed(frames: frames, tornBytes: 0, validLength: at)
    }

    /// The segment file name of number `n`.
    public static func fileName(_ n: UInt64) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, 12 - digits.count)) + digits + ".log"
    }

    /// The segment numbers in `directory`, ascending.
    public static func segments(in directory: String) -> [UInt64] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> UInt64? in
            guard name.hasSuffix(".log"), name.count == 16 else { return nil }
            return UInt64(name.dropLast(4))
        }.sorted()
    }

    /// Fuzz entry point: parses arbitrary bytes as a segment and decodes every frame's payload.
    public static func fuzz(_ data: [UInt8]) {
        guard let parsed = try? parse(data, name: "fuzz") else { return }
        for f in parsed.frames {
            switch f.kind {
            case .start: _ = decodeStart(f.payload)
            case .record:
                if f.payload.count >= 32, let r = AuditRecord(decoding: f.payload.dropLast(32)) {
                    precondition(r.encoded() == Array(f.payload.dropLast(32)), "audit record encoding is not canonical")
                }
            case .head:
                if let h = AuditHead(decoding: f.payload) { precondition(h.encoded() == Array(f.payload), "audit head encoding is not canonical") }
            }
        }
    }
}
