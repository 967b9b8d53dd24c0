import STOQContent
import STOQIdentity
import STOQTransport

/// A fetch source that is a `stoq/1` peer: what a fetch, and the router that ranks its sources,
/// need to know about it besides its chunks.
///
/// Two kinds implement it: a ``PeerClient``, bound to one connection (when that connection closes,
/// the source is gone for the rest of the fetch), and a ``PeerSource``, a peer *address* whose
/// connection is dialled again through its ``PeerSet`` after one closes (what
/// ``ContentFetcher/fetch(_:from:peers:health:store:configuration:logger:onProgress:onEvent:router:)``
/// uses, so a fetch survives a partition longer than QUIC's idle timeout).
public protocol PeerChunkSource: ChunkSource {
    /// The node id the handshake proved for the peer; nil through a relay (the connection's
    /// certificate is then the relay's) or without a certificate.
    var authenticatedPeer: NodeID? { get }
    /// The peer reached through a relay (nil: direct).
    var relayedTarget: PeerAddress? { get }
    /// Whether ``redial()`` can bring a lost connection back (false: the source is bound to one
    /// connection and a fetch removes it when that connection fails).
    var canRedial: Bool { get }
    /// Returns once the source has an open connection again, dialling if its last one closed.
    /// - Throws: the dial's error when the peer cannot be reached; ``NodeError`` `.refused` when
    ///   the peer at the address now proves another node id than when the fetch began.
    func redial() async throws
}

extension PeerClient: PeerChunkSource {
    /// The node id the handshake proved for this client's peer; nil through a relay (the
    /// connection's certificate is then the relay's) or without a certificate.
    public var authenticatedPeer: NodeID? {
        relayedTarget == nil ? connection.peerNodeID : nil
    }

    /// Always false: a client is one connection.
    public var canRedial: Bool { false }

    /// Throws: a client cannot dial (a ``PeerSource`` can).
    public func redial() async throws {
        throw NodeError(.unavailable, "\(name) was reached over one connection that cannot be dialled again; fetch through a peer set to have lost connections re-dialled")
    }
}

/// A fetch source named by its peer address: every request goes over the ``PeerSet``'s current
/// connection to that address, and a connection that closed (idle timeout during a partition, the
/// peer restarting) is dialled again on the next request or ``redial()``. The peer set de-duplicates
/// dials and forgets closed connections.
///
/// Its identity stays what the first connection showed: its ``name`` (the address, or `TARGET via
/// RELAY`), the ``authenticatedPeer`` its handshake proved and the ``relayedTarget``. A later
/// connection to the address that proves another node id is refused (``NodeError`` `.refused`), so a
/// fetch never reports one node's work under another's id.
public final class PeerSource: PeerChunkSource {
    /// The peer's address.
    public let address: PeerAddress
    /// Where its connections come from.
    public let peers: PeerSet
    /// The name reports use: the first client's (``PeerClient/name``).
    public let name: String
    /// The node id the first connection's handshake proved (nil: relayed, or no certificate).
    public let authenticatedPeer: NodeID?
    /// The peer reached through the peer set's relay (nil: direct).
    public let relayedTarget: PeerAddress?

    /// A source for `address`, whose identity is `first`'s (a client ``PeerSet/client(for:)``
    /// returned for that address).
    public init(address: PeerAddress, peers: PeerSet, first: PeerClient) {
        self.address = address
        self.peers = peers
        self.name = first.name
        self.authenticatedPeer = first.authenticatedPeer
        self.relayedTarget = first.relayedTarget
    }

    /// Always true.
    public var canRedial: Bool { true }

    /// The client of the current connection, dialled if the last one closed, checked to be the
    /// same node as before.
    public func client() async throws -> PeerClient {
        let client = try await peers.client(for: address)
        if let expected = authenticatedPeer, let now = client.authenticatedPeer, now != expected {
            throw NodeError(.refused, "\(name) now proves node id \(now), not \(expected) which this fetch began with; it is not used again in this fetch (check who answers at \(address))")
        }
        return client
    }

    public func redial() async throws { _ = try await client() }

    public func fetchChunk(_ id: ChunkID, progress: (@Sendable (Int) -> Void)?) async throws -> [UInt8] {
        try await client().fetchChunk(id, progress: progress)
    }

    public func availability(of root: ContentID, chunkCount: Int) async throws -> ChunkAvailability {
        try await client().availability(of: root, chunkCount: chunkCount)
    }
}
