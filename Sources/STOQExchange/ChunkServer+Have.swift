import NIOCore
import STOQAccess
import STOQContent
import STOQTransport
import STOQWire

/// HAVE/WANT over `stoq/1` (DESIGN.md §3): a requester sends `WANT(content, empty bitfield)` on a
/// request stream; the node answers `HAVE(content, bits)` with one bit per data chunk of the
/// content, in ``ContentPlan/dataChunks`` order (the order both sides derive from the manifests).
/// An edge that fills misses from upstream answers with the chunks it actually caches and the
/// ``HaveFlags/fillsFromUpstream`` flag: it can supply every chunk, the listed ones cheaper (a
/// zero-length bitfield with the flag: it caches none, not even the manifests). A HAVE with zero
/// bits and no flag means "all of it" (the answer of edges before the flag existed); an `ERROR`
/// means the node does not even hold the manifests.
public enum HaveProtocol {
    /// Application error code: the node does not hold the content's manifests.
    public static let notFoundCode: UInt64 = 0x3
    /// The largest HAVE frame a requester accepts (the bitfield bound plus the header).
    public static let maximumAnswerLength = (ChunkBitfield.maximumCount + 7) / 8 + 64

    /// Fuzz entry point: decodes arbitrary bytes as frames the way a requester reads a HAVE
    /// answer (bounded by ``maximumAnswerLength``); traps only when a decoded bitfield breaks its
    /// invariants or does not survive a round trip (a real bug).
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: maximumAnswerLength)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while let frame = try? decoder.pollFrame() {
            guard let message = try? STOQMessage.decode(frame) else { continue }
            switch message {
            case .have(_, let bits, _), .want(_, let bits):
                precondition(bits.count <= ChunkBitfield.maximumCount && bits.setCount <= bits.count, "bitfield invariants")
                precondition((try? ChunkBitfield(count: bits.count, bytes: bits.bytes)) == bits, "bitfield round trip")
                precondition((try? STOQMessage.decode(message.frame())) == message, "HAVE/WANT round trip")
                if case .have(_, _, let flags) = message {
                    // A requester's reading of it: bounded by the content's chunk count, never a trap.
                    for count in [0, 1, bits.count, bits.count + 1] {
                        switch try? ChunkAvailability(have: bits, flags: flags, chunkCount: count) {
                        case .some(.some(let held)), .some(.fills(let held)): precondition(held.count == count, "a HAVE read for \(count) chunks")
                        default: break
                        }
                    }
                }
            default:
                break
            }
        }
    }

    /// The bitfield of the data chunks of `root` that `store` holds, or nil when the store lacks
    /// the manifests (it cannot name the chunks).
    public static func bitfield(of root: ContentID, in store: any ChunkStore) async throws -> ChunkBitfield? {
        guard try store.contains(root.manifest) else { return nil }
        let plan: ContentPlan
        do {
            plan = try await ContentPlan.resolve(root) { id in try store.read(id) }
        } catch let error as ContentError where error.code == .notFound {
            return nil
        }
        guard plan.dataChunks.count <= ChunkBitfield.maximumCount else {
            throw NodeError(.invalidArgument, "\(root) has \(plan.dataChunks.count) chunks, more than a HAVE bitfield describes (\(ChunkBitfield.maximumCount))")
        }
        var bits = ChunkBitfield(count: plan.dataChunks.count)
        for (index, chunk) in plan.dataChunks.enumerated() where try store.contains(chunk.id) { bits[index] = true }
        return bits
    }
}

extension StoreChunkProvider {
    /// The chunks of `root` in the store.
    public func availability(of root: ContentID) async throws -> ChunkAvailability {
        guard let bits = try await HaveProtocol.bitfield(of: root, in: store) else { return .none }
        return .some(bits)
    }
}

/// Which chunks of a content a node can supply.
public enum ChunkAvailability: Sendable, Equatable {
    /// Every chunk.
    case all
    /// The chunks whose bits are set (``ContentPlan/dataChunks`` order).
    case some(ChunkBitfield)
    /// Every chunk: the set bits from the node's cache, the others after it fetched them from its
    /// upstream (an edge). A bitfield of zero chunks: none cached (it lacks even the manifests).
    case fills(cached: ChunkBitfield)
    /// None: the node does not hold the content's manifests.
    case none

    /// A requester's reading of a HAVE answer for a content of `chunkCount` data chunks.
    /// - Throws: ``NodeError`` `.protocolViolation` for a bitfield of another length (a zero-length
    ///   one is allowed: "all" without the fill flag, "none cached" with it).
    public init(have bits: ChunkBitfield, flags: HaveFlags, chunkCount: Int) throws {
        guard (0...ChunkBitfield.maximumCount).contains(chunkCount) else {
            throw NodeError(.invalidArgument, "a content of \(chunkCount) chunks is more than a HAVE describes (\(ChunkBitfield.maximumCount))")
        }
        let fills = flags.contains(.fillsFromUpstream)  // unknown flag bits are ignored
        if bits.count == 0 {
            self = fills ? .fills(cached: ChunkBitfield(count: chunkCount)) : .all
            return
        }
        guard bits.count == chunkCount else {
            throw NodeError(.protocolViolation, "a HAVE of \(bits.count) chunks for a content of \(chunkCount)")
        }
        self = fills ? .fills(cached: bits) : .some(bits)
    }

    /// The HAVE frame that tells a requester this availability (nil for ``none``: an `ERROR`).
    func have(_ wireID: WireID) -> STOQMessage? {
        switch self {
        case .all: .have(contentID: wireID, chunks: ChunkBitfield(count: 0))
        case .some(let bits): .have(contentID: wireID, chunks: bits)
        case .fills(let cached): .have(contentID: wireID, chunks: cached, flags: .fillsFromUpstream)
        case .none: nil
        }
    }
}

extension ChunkServer {
    /// Answers `WANT(content)` with `HAVE(content, bits)`.
    func answerWant(_ wireID: WireID, on stream: QUICStream, connection: Connection? = nil) async throws {
        let root = ContentID(ChunkID(bytes: wireID.bytes)!)
        // The chunks this connection asks for next belong to this content (`stoq status`).
        if let connection { tracker.reading(root, on: ObjectIdentifier(connection)) }
        // Issue 15: with --private-reads, WANT of content that is not public needs the read right;
        // an allowed WANT notes every chunk of the content for the connection (a resumed fetch has
        // the manifests already and asks for data chunks only).
        if let readGate, let connection {
            let reader = ObjectIdentifier(connection)
            let decision = await readGate.decide(root.manifest, peer: connection.peerNodeID, connection: reader)
            if case .denied(let why) = decision {
                try await stream.write(STOQMessage.error(code: AccessPolicy.noGrantCode, message: String(why.prefix(1000))).encoded())
                try await stream.finish()
                return
            }
            if case .allowed = decision, let plan = try? await ContentPlan.resolve(root, load: { [provider] id in
                guard let bytes = try await provider.chunk(id) else { throw NodeError(.notFound, "no manifest \(id.short)") }
                return bytes
            }) {
                readGate.learn(plan: plan, decision: decision, connection: reader)
            }
        }
        let availability = try await provider.availability(of: root)
        let answer = availability.have(wireID)
            ?? .error(code: HaveProtocol.notFoundCode, message: "this node does not hold the manifests of \(root)")
        try await stream.write(answer.encoded())
        try await stream.finish()
    }
}

extension PeerClient {
    /// Asks the peer which data chunks of `root` it can supply.
    /// - Parameter chunkCount: the number of data chunks (from the manifests); a HAVE of any other
    ///   length is refused as a protocol violation.
    public func availability(of root: ContentID, chunkCount: Int) async throws -> ChunkAvailability {
        let stream = try await openRequestStream(priority: .control)
        let wireID = WireID(root.manifest.bytes)!
        try await stream.write(STOQMessage.want(contentID: wireID, chunks: ChunkBitfield(count: 0)).encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: HaveProtocol.maximumAnswerLength)
        decoder.handle(bytes: try await stream.readAll(limit: HaveProtocol.maximumAnswerLength + 16))
        guard let frame = try decoder.pollFrame() else { throw NodeError(.protocolViolation, "\(name) closed the stream before answering WANT") }
        switch try STOQMessage.decode(frame) {
        case .have(let id, let bits, let flags) where id == wireID:
            guard bits.count == 0 || bits.count == chunkCount else {
                throw NodeError(.protocolViolation, "\(name) sent a HAVE of \(bits.count) chunks for \(root), which has \(chunkCount)")
            }
            return try ChunkAvailability(have: bits, flags: flags, chunkCount: chunkCount)
        case .error(HaveProtocol.notFoundCode, _):
            return .none
        case .error(_, let message):
            throw NodeError(.refused, "\(name) refused WANT: \(message)")
        default:
            throw NodeError(.protocolViolation, "\(name) answered WANT with \(frame.type)")
        }
    }
}
