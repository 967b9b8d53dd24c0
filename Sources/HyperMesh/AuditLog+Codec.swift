extension AuditEvent {
    /// Decodes an event written by `encoded()`; safe on arbitrary bytes.
    static func decode(_ r: inout ByteReader) -> AuditEvent? {
        guard let tag = r.u8(), let block = r.digest() else { return nil }
        switch tag {
        case 1:
            guard let receipts = r.u32() else { return nil }
            return .commit(block: block, receipts: Int(receipts))
        case 2:
            guard let shard = r.u16(), let hasFrom = r.u8(), hasFrom <= 1 else { return nil }
            var from: MeshNodeID?
            if hasFrom == 1 {
                guard let f = r.digest() else { return nil }
                from = f
            }
            guard let to = r.digest() else { return nil }
            return .transfer(block: block, shard: Int(shard), from: from, to: to)
        case 3:
            guard let shard = r.u16(), let node = r.digest(), let reason = r.blob16(max: 1024),
                let text = String(validating: reason, as: UTF8.self)
            else { return nil }
            return .shardLost(block: block, shard: Int(shard), node: node, reason: text)
        default:
            return nil
        }
    }
}

extension AuditLog {
    /// The log's binary form, an append-only file format: per entry, u32 length then
    /// sequence u64 · seconds i64 · attoseconds i64 · previous [32] · hash [32] · event.
    public func encoded() -> [UInt8] {
        entries.flatMap(Self.encode(entry:))
    }

    /// One entry's record (length-prefixed), to append to a log file.
    public static func encode(entry e: AuditEntry) -> [UInt8] {
        var body = ByteWriter()
        body.u64(e.sequence)
        let (seconds, attos) = e.time.components
        body.u64(UInt64(bitPattern: seconds))
        body.u64(UInt64(bitPattern: attos))
        body.raw(e.previous.bytes)
        body.raw(e.hash.bytes)
        body.raw(e.event.encoded())
        var w = ByteWriter()
        w.u32(UInt32(body.bytes.count))
        w.raw(body.bytes)
        return w.bytes
    }

    /// Largest entry record accepted by the decoder.
    static let maximumEntryLength = 4096

    /// Decodes a log file; safe on arbitrary bytes. Decoding does not check the chain: call
    /// ``verify()``.
    /// - Throws: ``HyperMeshError/Code/storage`` naming the first bad record.
    public init(decoding bytes: [UInt8]) throws(HyperMeshError) {
        var r = ByteReader(bytes)
        var entries: [AuditEntry] = []
        while !r.isAtEnd {
            guard let length = r.u32(), Int(length) <= Self.maximumEntryLength, let record = r.take(Int(length)) else {
                throw HyperMeshError(.storage, "audit log record \(entries.count) is truncated or oversized")
            }
            var e = ByteReader(record)
            guard let sequence = e.u64(), let seconds = e.u64(), let attos = e.u64(), let previous = e.digest(),
                let hash = e.digest(), let event = AuditEvent.decode(&e), e.isAtEnd,
                seconds <= UInt64(Int64.max), attos < 1_000_000_000_000_000_000
            else { throw HyperMeshError(.storage, "audit log record \(entries.count) is malformed") }
            let time = Duration(secondsComponent: Int64(bitPattern: seconds), attosecondsComponent: Int64(bitPattern: attos))
            entries.append(AuditEntry(sequence: sequence, time: time, event: event, previous: previous, hash: hash))
        }
        self.init(entries: entries)
    }

    /// Fuzz entry point: decodes arbitrary bytes as a log file and checks the chain of what decodes.
    public static func fuzz(_ data: [UInt8]) {
        guard let log = try? AuditLog(decoding: data) else { return }
        precondition(log.encoded() == data, "audit log encoding is not canonical")
        _ = log.verify()
    }
}
