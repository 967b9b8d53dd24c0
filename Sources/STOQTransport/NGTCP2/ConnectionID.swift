import CNgtcp2
import CNgtcp2Shims
import STOQIdentity

/// A QUIC connection ID (0...20 bytes), stored inline so that looking one up in the
/// endpoint's routing table never allocates.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    /// Maximum length of a QUIC v1 connection ID.
    public static let maxLength = 20
    private var a: UInt64 = 0
    private var b: UInt64 = 0
    private var c: UInt32 = 0
    /// Number of bytes in the ID.
    public private(set) var length: UInt8 = 0

    /// Creates a connection ID from bytes (at most 20).
    public init?(bytes: [UInt8]) {
        guard bytes.count <= Self.maxLength else { return nil }
        self.init()
        if bytes.isEmpty { return }
        self = bytes.withUnsafeBufferPointer { ConnectionID(pointer: $0.baseAddress!, count: $0.count) }
    }

    init() {}

    init(pointer: UnsafePointer<UInt8>, count: Int) {
        precondition(count <= Self.maxLength)
        var raw: (UInt64, UInt64, UInt32) = (0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { dst in
            dst.baseAddress!.copyMemory(from: pointer, byteCount: count)
        }
        self.a = raw.0
        self.b = raw.1
        self.c = raw.2
        self.length = UInt8(count)
    }

    init(_ cid: ngtcp2_cid) {
        var cid = cid
        let count = min(Int(cid.datalen), Self.maxLength)
        self = withUnsafeBytes(of: &cid.data) { raw in
            ConnectionID(pointer: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count)
        }
    }

    /// Random connection ID of `length` bytes.
    static func random(length: Int = 16) -> ConnectionID {
        var bytes = [UInt8](repeating: 0, count: length)
        _ = stoq_random(&bytes, length)
        return ConnectionID(bytes: bytes)!
    }

    var ngtcp2: ngtcp2_cid {
        var cid = ngtcp2_cid()
        var raw: (UInt64, UInt64, UInt32) = (a, b, c)
        let n = Int(length)
        withUnsafeMutableBytes(of: &cid.data) { dst in
            withUnsafeBytes(of: &raw) { src in
                dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: n)
            }
        }
        cid.datalen = n
        return cid
    }

    /// The ID's bytes.
    public var bytes: [UInt8] {
        var raw: (UInt64, UInt64, UInt32) = (a, b, c)
        return withUnsafeBytes(of: &raw) { Array($0.prefix(Int(length))) }
    }

    /// Lowercase hex.
    public var description: String {
        Hex.encode(bytes)
    }
}
