/// A Kademlia RPC. Requests carry an `rpc` id that the response echoes.
///
/// Wire form: `0x4E ('N') | format 0x01 | type u8 | rpc u64 | fields`; every count and length is
/// bounded (see the static limits) and decoding rejects trailing bytes, so ``decode(_:)`` is safe
/// on arbitrary input and ``fuzz(_:)`` is its libFuzzer entry point.
public enum DHTMessage: Hashable, Sendable {
    /// Liveness probe.
    case ping(rpc: UInt64)
    /// Reply to ``ping(rpc:)``.
    case pong(rpc: UInt64)
    /// FIND_NODE: ask for the k closest nodes to `target`.
    case findNode(rpc: UInt64, target: NexusID)
    /// The closest nodes the responder knows.
    case nodes(rpc: UInt64, closer: [NodeRecord])
    /// FIND_VALUE / GET_RECORD: the value under `key`, else closer nodes.
    case getRecord(rpc: UInt64, key: NexusID)
    /// The value under a key with its remaining lifetime (s).
    case record(rpc: UInt64, value: [UInt8], ttl: UInt32)
    /// FIND_PROVIDERS: who provides `key`, else closer nodes.
    case findProviders(rpc: UInt64, key: NexusID)
    /// Providers known for the key, plus closer nodes.
    case providers(rpc: UInt64, providers: [NodeRecord], closer: [NodeRecord])
    /// STORE / PUT_RECORD: keep `value` under `key` for `ttl` seconds.
    case putRecord(rpc: UInt64, key: NexusID, value: [UInt8], ttl: UInt32)
    /// ADD_PROVIDER: `provider` serves `key` for `ttl` seconds.
    case addProvider(rpc: UInt64, key: NexusID, provider: NodeRecord, ttl: UInt32)
    /// Reply to a store: whether it was kept.
    case ack(rpc: UInt64, stored: Bool)

    /// The most node records in one message.
    public static let maxRecords = 32
    /// The largest value.
    public static let maxValueSize = 8 * 1024
    /// The largest encoded message.
    public static let maxMessageSize = 32 * 1024

    /// The rpc id.
    public var rpc: UInt64 {
        switch self {
        case .ping(let r), .pong(let r), .findNode(let r, _), .nodes(let r, _), .getRecord(let r, _), .record(let r, _, _),
             .findProviders(let r, _), .providers(let r, _, _), .putRecord(let r, _, _, _), .addProvider(let r, _, _, _), .ack(let r, _):
            return r
        }
    }

    /// True for requests (which expect a response).
    public var isRequest: Bool {
        switch self {
        case .ping, .findNode, .getRecord, .findProviders, .putRecord, .addProvider: return true
        case .pong, .nodes, .record, .providers, .ack: return false
        }
    }

    /// The canonical encoding.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.u8(0x4E); w.u8(1)
        func records(_ rs: [NodeRecord]) { w.u8(UInt8(min(rs.count, Self.maxRecords))); for r in rs.prefix(Self.maxRecords) { r.encode(&w) } }
        switch self {
        case .ping(let rpc): w.u8(1); w.u64(rpc)
        case .pong(let rpc): w.u8(2); w.u64(rpc)
        case .findNode(let rpc, let t): w.u8(3); w.u64(rpc); w.hash(t)
        case .nodes(let rpc, let c): w.u8(4); w.u64(rpc); records(c)
        case .getRecord(let rpc, let k): w.u8(5); w.u64(rpc); w.hash(k)
        case .record(let rpc, let v, let ttl): w.u8(6); w.u64(rpc); w.medium(v.prefix(Self.maxValueSize)); w.u32(ttl)
        case .findProviders(let rpc, let k): w.u8(7); w.u64(rpc); w.hash(k)
        case .providers(let rpc, let p, let c): w.u8(8); w.u64(rpc); records(p); records(c)
        case .putRecord(let rpc, let k, let v, let ttl): w.u8(9); w.u64(rpc); w.hash(k); w.medium(v.prefix(Self.maxValueSize)); w.u32(ttl)
        case .addProvider(let rpc, let k, let p, let ttl): w.u8(10); w.u64(rpc); w.hash(k); p.encode(&w); w.u32(ttl)
        case .ack(let rpc, let s): w.u8(11); w.u64(rpc); w.u8(s ? 1 : 0)
        }
        return w.bytes
    }

    /// Decodes a message; throws ``NexusError`` on anything malformed or oversized.
    public static func decode(_ bytes: [UInt8]) throws(NexusError) -> DHTMessage {
        guard bytes.count <= maxMessageSize else { throw NexusError(.lengthLimitExceeded, "DHT message is \(bytes.count) bytes; at most \(maxMessageSize)") }
        var r = ByteReader(bytes)
        guard try r.u8("magic") == 0x4E else { throw NexusError(.malformedInput, "not a Nexus DHT message (bad magic)") }
        let v = try r.u8("format")
        guard v == 1 else { throw NexusError(.unsupportedVersion, "DHT message format \(v) is not supported") }
        let type = try r.u8("type")
        let rpc = try r.u64("rpc id")
        func records() throws(NexusError) -> [NodeRecord] {
            let n = try r.count(max: maxRecords, "node records")
            var out: [NodeRecord] = []
            for _ in 0..<n { out.append(try NodeRecord.decode(&r)) }
            return out
        }
        let m: DHTMessage
        switch type {
        case 1: m = .ping(rpc: rpc)
        case 2: m = .pong(rpc: rpc)
        case 3: m = .findNode(rpc: rpc, target: try r.hash("target"))
        case 4: m = .nodes(rpc: rpc, closer: try records())
        case 5: m = .getRecord(rpc: rpc, key: try r.hash("key"))
        case 6: m = .record(rpc: rpc, value: try r.medium(max: maxValueSize, "value"), ttl: try r.u32("ttl"))
        case 7: m = .findProviders(rpc: rpc, key: try r.hash("key"))
        case 8: m = .providers(rpc: rpc, providers: try records(), closer: try records())
        case 9: m = .putRecord(rpc: rpc, key: try r.hash("key"), value: try r.medium(max: maxValueSize, "value"), ttl: try r.u32("ttl"))
        case 10: m = .addProvider(rpc: rpc, key: try r.hash("key"), provider: try NodeRecord.decode(&r), ttl: try r.u32("ttl"))
        case 11:
            let s = try r.u8("stored flag")
            guard s <= 1 else { throw NexusError(.malformedInput, "ack flag must be 0 or 1") }
            m = .ack(rpc: rpc, stored: s == 1)
        default: throw NexusError(.malformedInput, "unknown DHT message type \(type)")
        }
        try r.expectEnd("DHT message")
        return m
    }

    /// Fuzz entry point: decoding never traps, and what decodes re-encodes to the same bytes.
    public static func fuzz(_ data: [UInt8]) {
        if let m = try? decode(data) { precondition(m.encode() == data, "DHT message encoding is not canonical") }
    }
}
