import NIOCore
import STOQTransport
import STOQWire

/// A request handler that a layer above STOQ (Nexus, HyperMesh, an application) plugs into a
/// ``Node`` or ``ChunkServer``.
///
/// Every request stream starts with one `stoq/1` frame. The chunk server answers the STOQ types
/// (0x00–0x3f) itself and hands a stream whose first frame type falls in a service's
/// ``frameTypes`` to that service, which then owns the stream: it writes the answer and finishes
/// or resets it. Layers keep to their own ranges (DESIGN.md §3): Nexus 0x40–0x7f, HyperMesh
/// 0x80–0xbf.
public protocol NodeService: Sendable {
    /// A short name for logs and status.
    var name: String { get }
    /// The first-frame types this service answers.
    var frameTypes: ClosedRange<UInt64> { get }
    /// The most bytes the request frame may carry (the server refuses longer ones before they
    /// reach the service).
    var maximumRequestLength: Int { get }
    /// Answers one request.
    /// - Parameters:
    ///   - request: the first frame of the stream.
    ///   - remaining: bytes that arrived after that frame (more may follow on `stream`).
    ///   - stream: the request stream; the service must finish or reset it.
    ///   - connection: the connection it came on (its ``Connection/peerNodeID`` is the
    ///     authenticated peer).
    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async
    /// A JSON-compatible summary for `stoq status` (nil: nothing to show).
    func status() async -> [String: any Sendable]?
}

extension NodeService {
    /// Requests up to 64 KiB by default.
    public var maximumRequestLength: Int { 64 * 1024 }
    /// No status by default.
    public func status() async -> [String: any Sendable]? { nil }
}
