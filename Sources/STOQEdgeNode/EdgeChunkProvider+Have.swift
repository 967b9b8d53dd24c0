import STOQContent
import STOQExchange
import STOQWire

extension EdgeChunkProvider {
    /// What the edge's store (its cache) holds; with an upstream that can fill misses now, that it
    /// fills the rest too. While every upstream fill fails (``canFill()``), only what it holds.
    public func availability(of root: ContentID) async throws -> ChunkAvailability {
        let bits = try await HaveProtocol.bitfield(of: root, in: store)
        guard canFill() else { return bits.map { .some($0) } ?? .none }
        return .fills(cached: bits ?? ChunkBitfield(count: 0))
    }
}
