import Crypto
import Foundation

/// A proof-of-storage question: "hash this range of the shard you hold, after this nonce".
///
/// The answer is SHA-256(nonce ‖ shard[offset ..< offset + length]). The challenger prepares
/// challenges while it still has the shard (at put or repair time) and keeps the expected answers
/// to itself; a node that dropped the shard cannot answer an unseen random range.
public struct StorageChallenge: Hashable, Sendable {
    /// Challenge id, unique per tracker.
    public let id: UInt64
    /// The block.
    public let blockID: BlockID
    /// The shard index.
    public let shardIndex: Int
    /// The node asked.
    public let node: MeshNodeID
    /// 16 random bytes hashed before the range.
    public let nonce: [UInt8]
    /// Start of the range in the shard.
    public let offset: Int
    /// Length of the range.
    public let length: Int
    /// The expected answer (never sent).
    let expected: Digest256

    /// Prepares a challenge over a random range of `shard`.
    /// - Parameters:
    ///   - id: the challenge id.
    ///   - blockID: the block.
    ///   - shardIndex: the shard index.
    ///   - node: the holder to ask.
    ///   - shard: the shard bytes (while the challenger still has them).
    ///   - generator: the randomness for the nonce and range.
    public static func prepare<R: RandomNumberGenerator>(
        id: UInt64, blockID: BlockID, shardIndex: Int, node: MeshNodeID, shard: [UInt8], using generator: inout R
    ) -> StorageChallenge {
        precondition(!shard.isEmpty)  // the challenger's own shard (shards are ≥ 1 byte); never a peer's value
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let length = Int.random(in: 1...min(shard.count, 4096), using: &generator)
        let offset = Int.random(in: 0...(shard.count - length), using: &generator)
        let expected = answer(nonce: nonce, offset: offset, length: length, shard: shard)!
        return StorageChallenge(
            id: id, blockID: blockID, shardIndex: shardIndex, node: node, nonce: nonce, offset: offset, length: length,
            expected: expected
        )
    }

    /// The holder's side: hashes the range, or nil when the range is outside the shard.
    public static func answer(nonce: [UInt8], offset: Int, length: Int, shard: [UInt8]) -> Digest256? {
        guard offset >= 0, length >= 0, offset <= shard.count, length <= shard.count - offset else { return nil }
        var hasher = SHA256()
        hasher.update(data: nonce)
        hasher.update(data: shard[offset..<offset + length])
        return Digest256(unchecked: Array(hasher.finalize()))
    }
}

/// Sans-IO bookkeeping of outstanding challenges: issue, answer, time out, report losses.
public struct ChallengeTracker: Sendable {
    /// What the tracker reports.
    public enum Event: Hashable, Sendable {
        /// The node answered correctly.
        case passed(block: BlockID, shard: Int, node: MeshNodeID)
        /// The shard is to be treated as lost on that node (wrong answer or no answer in time).
        case shardLost(block: BlockID, shard: Int, node: MeshNodeID, reason: String)
    }

    private var outstanding: [UInt64: (challenge: StorageChallenge, deadline: Duration)] = [:]
    private var events: [Event] = []
    /// How long a node has to answer.
    public let timeout: Duration

    /// Creates a tracker.
    /// - Parameter timeout: how long a node has to answer.
    public init(timeout: Duration = .seconds(30)) { self.timeout = timeout }

    /// Records that `challenge` was sent at `now`.
    public mutating func handleSent(_ challenge: StorageChallenge, now: Duration) {
        outstanding[challenge.id] = (challenge, now + timeout)
    }

    /// Feeds a node's answer.
    /// - Parameters:
    ///   - id: the challenge id.
    ///   - digest: the node's answer; nil when it said it does not hold the shard.
    ///   - now: the injected clock.
    public mutating func handleAnswer(id: UInt64, digest: Digest256?, now: Duration) {
        guard let (challenge, deadline) = outstanding.removeValue(forKey: id) else { return }
        let (block, shard, node) = (challenge.blockID, challenge.shardIndex, challenge.node)
        if now > deadline {
            events.append(.shardLost(block: block, shard: shard, node: node, reason: "answer came after the deadline"))
        } else if let digest, digest == challenge.expected {
            events.append(.passed(block: block, shard: shard, node: node))
        } else if digest == nil {
            events.append(.shardLost(block: block, shard: shard, node: node, reason: "node says it does not hold the shard"))
        } else {
            events.append(.shardLost(block: block, shard: shard, node: node, reason: "wrong hash for bytes \(challenge.offset)..<\(challenge.offset + challenge.length)"))
        }
    }

    /// Expires challenges whose deadline has passed.
    public mutating func handleTimeout(now: Duration) {
        for (id, entry) in outstanding.sorted(by: { $0.key < $1.key }) where entry.deadline < now {
            outstanding[id] = nil
            events.append(.shardLost(block: entry.challenge.blockID, shard: entry.challenge.shardIndex, node: entry.challenge.node, reason: "no answer within \(timeout)"))
        }
    }

    /// The next deadline, for the driver's timer.
    public var nextDeadline: Duration? { outstanding.values.map(\.deadline).min() }

    /// Takes the next event.
    public mutating func pollEvent() -> Event? { events.isEmpty ? nil : events.removeFirst() }
}
