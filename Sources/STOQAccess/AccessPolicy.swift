import Foundation
import STOQIdentity

/// Who may do what on one node: the roles its operator configured, and the grants each connection
/// presented (docs/PROTOCOL.md, "Access grants"; docs/SECURITY.md).
///
/// A request that needs a right is allowed when the peer's certificate has that role here, or when
/// a grant the connection presented carries the right, admits the request's scope, is unexpired,
/// unrevoked and bound to no other peer, and was issued by someone with authority for that right:
///
/// | right | role (certificate) | grant issuer |
/// | --- | --- | --- |
/// | status | the node itself, `--operator` ids | an operator |
/// | purge | the node itself, operators, publishers | an operator or a publisher |
/// | publish | the node itself, `--publisher` ids | a publisher |
/// | relay | the node itself, operators, publishers, `--relay-for` ids; every network certificate with `--relay-open` | an operator |
/// | read (with `--private-reads`) | the node itself, operators, publishers, `--private-reader` ids (``hasReadRole(peer:)``) | a publisher |
///
/// Closed by default: a node with no operator answers STATUS and PURGE to itself only (and to
/// grants, which then only the node's own certificate can issue).
///
/// Sans-IO: the clock is injected; revocation lists are loaded and saved through closures.
public actor AccessPolicy {
    /// What the node's operator configured.
    public struct Roles: Sendable {
        /// The node's own id.
        public var node: NodeID?
        /// Operators (`--operator`): may read STATUS and purge, and issue grants for status, purge, relay.
        public var operators: Set<NodeID>
        /// Publishers (`--publisher`): may publish and purge, and issue grants for publish, purge, read.
        public var publishers: Set<NodeID>
        /// Nodes this relay carries streams for (`--relay-for`), besides operators and publishers.
        public var relayers: Set<NodeID>
        /// Whether every certificate of the network may relay through this node (`--relay-open`).
        public var relayOpen: Bool
        /// Nodes that read every content of a node run with `--private-reads` (`--private-reader`),
        /// besides the node itself, its operators and publishers: edges and peers that fetch for others.
        public var readers: Set<NodeID>
        /// Creates roles.
        public init(node: NodeID? = nil, operators: Set<NodeID> = [], publishers: Set<NodeID> = [], relayers: Set<NodeID> = [], relayOpen: Bool = false,
                    readers: Set<NodeID> = []) {
            self.node = node
            self.operators = operators
            self.publishers = publishers
            self.relayers = relayers
            self.relayOpen = relayOpen
            self.readers = readers
        }
    }

    /// A grant a connection presented and the node verified.
    public struct Presented: Sendable {
        /// The grant id.
        public let grantID: [UInt8]
        /// Its publisher.
        public let publisher: NodeID
        /// The intersection of its blocks.
        public let effective: AccessGrant.Effective
    }

    /// The outcome of a check.
    public enum Decision: Sendable, Equatable {
        /// Allowed by the peer's role.
        case role
        /// Allowed by the grant with this id.
        case grant([UInt8])
        /// Refused; the message is for people (an ERROR 7 message).
        case denied(String)

        /// Whether the request may go on.
        public var isAllowed: Bool { if case .denied = self { false } else { true } }
    }

    /// The ERROR code of a request refused for want of a grant.
    public static let noGrantCode: UInt64 = 7
    /// The most grants one connection holds (the oldest is dropped).
    public static let maximumGrantsPerConnection = 16
    /// The most publishers whose revocation lists a node keeps.
    public static let maximumPublishers = 256

    /// The configured roles.
    public nonisolated let roles: Roles
    private let trust: TrustRoots?
    private let clock: @Sendable () -> Date
    private let save: (@Sendable ([RevocationList]) -> Void)?
    private var grants: [ObjectIdentifier: [Presented]] = [:]
    private var lists: [NodeID: RevocationList]

    /// Creates a policy.
    /// - Parameters:
    ///   - trust: the network CA (grants' certificates must chain to it); nil: every grant is refused.
    ///   - saved: revocation lists kept from before (each is checked again).
    ///   - save: stores the lists after each change (atomically; the node uses its StateFile).
    public init(roles: Roles, trust: TrustRoots?, saved: [RevocationList] = [], clock: @escaping @Sendable () -> Date = { Date() },
                save: (@Sendable ([RevocationList]) -> Void)? = nil) {
        self.roles = roles
        self.trust = trust
        self.clock = clock
        self.save = save
        var kept: [NodeID: RevocationList] = [:]
        let issuers = roles.operators.union(roles.publishers).union(roles.node.map { [$0] } ?? [])
        for list in saved where (try? list.verifySignature()) != nil && issuers.contains(list.publisher) {
            if (kept[list.publisher]?.version ?? 0) <= list.version { kept[list.publisher] = list }
        }
        self.lists = kept
    }

    private nonisolated func isIssuer(_ id: NodeID) -> Bool { roles.operators.contains(id) || roles.publishers.contains(id) || id == roles.node }


    // MARK: grants on connections

    /// Verifies a grant a connection presents and remembers it for the connection.
    /// - Throws: ``AccessError`` saying why it is refused.
    public func present(_ grant: AccessGrant, peer: NodeID?, connection: ObjectIdentifier) async throws(AccessError) -> Presented {
        guard let trust else { throw AccessError(.badSignature, "this node checks no grants (it has no CA to check them against)") }
        // The cheap check first: a grant from a stranger costs no signature verification.
        guard isIssuer(grant.publisher) else {
            throw AccessError(.notCovered, "grant \(grant.id) was issued by node \(grant.publisher.hex), which is neither an operator nor a publisher of this node (--operator, --publisher)")
        }
        let revoked = lists[grant.publisher]?.revoked ?? []
        let effective = try await grant.verify(trust: trust, now: clock(), revoked: revoked)
        if let bound = effective.peers.first, bound != peer {
            throw AccessError(.wrongPeer, "grant \(grant.id) is bound to node \(bound.short), not to the certificate this connection presented (\(peer?.short ?? "none"))")
        }
        let presented = Presented(grantID: grant.grantID, publisher: grant.publisher, effective: effective)
        var held = grants[connection, default: []].filter { $0.grantID != grant.grantID }
        held.append(presented)
        if held.count > Self.maximumGrantsPerConnection { held.removeFirst(held.count - Self.maximumGrantsPerConnection) }
        grants[connection] = held
        return presented
    }

    /// Forgets a closed connection's grants.
    public func closed(_ connection: ObjectIdentifier) { grants[connection] = nil }

    /// Whether `connection` presented any grant.
    public func hasGrants(_ connection: ObjectIdentifier) -> Bool { !(grants[connection] ?? []).isEmpty }

    /// Grants held for open connections (status).
    public var heldGrants: Int { grants.values.reduce(0) { $0 + $1.count } }

    // MARK: checks

    /// Whether the peer on `connection` may exercise `right` on `item` (nil: a node-wide request).
    public func check(_ right: AccessRights, item: AccessItem? = nil, peer: NodeID?, connection: ObjectIdentifier) -> Decision {
        if hasRole(right, peer: peer) { return .role }
        let now = UInt64(max(0, clock().timeIntervalSince1970))
        var why: String?
        for held in (grants[connection] ?? []).reversed() {
            guard held.effective.rights.contains(right), authority(right, issuer: held.publisher) else { continue }
            guard now <= held.effective.notAfter else { why = "grant \(Hex.encode(held.grantID)) expired"; continue }
            guard !(lists[held.publisher]?.revoked.contains(held.grantID) ?? false) else { why = "grant \(Hex.encode(held.grantID)) was revoked by its publisher"; continue }
            guard held.effective.admits(item) else { why = "grant \(Hex.encode(held.grantID)) does not cover \(item.map { "\($0)" } ?? "this request")"; continue }
            return .grant(held.grantID)
        }
        let scope = item.map { "\($0)" } ?? "this node"
        var message = "no grant: the request needs an access grant with right \(right) for scope \(scope)"
        if let why { message += " (\(why))" }
        message += "; present one (--grant, from `stoq grant create --rights \(right)` by \(right == .publish || right == .read ? "a publisher" : "an operator") of this node) or connect with the certificate of \(roleName(right))"
        return .denied(message)
    }

    /// Why the grant `grantID` held for `connection` no longer allows reading (nil: it still does):
    /// not held any more (the connection presented 16 newer ones), expired, or revoked. A node
    /// run with `--private-reads` asks this before it serves a chunk it allowed under that grant.
    public func readGrantProblem(_ grantID: [UInt8], connection: ObjectIdentifier) -> String? {
        guard let held = (grants[connection] ?? []).last(where: { $0.grantID == grantID }) else {
            return "grant \(Hex.encode(grantID)) is no longer held for this connection (it presented \(Self.maximumGrantsPerConnection) newer ones)"
        }
        let now = UInt64(max(0, clock().timeIntervalSince1970))
        guard now <= held.effective.notAfter else { return "grant \(Hex.encode(grantID)) expired" }
        guard !(lists[held.publisher]?.revoked.contains(grantID) ?? false) else { return "grant \(Hex.encode(grantID)) was revoked by its publisher" }
        return nil
    }

    private nonisolated func roleName(_ right: AccessRights) -> String {
        switch right {
        case .publish: "a publisher (--publisher)"
        case .purge: "an operator or a publisher (--operator, --publisher)"
        case .relay: "an operator, a publisher or a node this relay carries for (--operator, --publisher, --relay-for), or ask its operator for --relay-open"
        case .read: "an operator, a publisher or a private reader of this node (--operator, --publisher, --private-reader)"
        default: "an operator (--operator)"
        }
    }

    /// Whether the peer's certificate alone carries `right`.
    public nonisolated func hasRole(_ right: AccessRights, peer: NodeID?) -> Bool {
        guard let peer else { return false }
        if peer == roles.node { return true }
        switch right {
        case .status: return roles.operators.contains(peer)
        case .purge: return roles.operators.contains(peer) || roles.publishers.contains(peer)
        case .publish: return roles.publishers.contains(peer)
        case .relay: return roles.relayOpen || roles.operators.contains(peer) || roles.publishers.contains(peer) || roles.relayers.contains(peer)
        default: return false
        }
    }

    /// Whether the peer's certificate alone lets it read every content of a node run with
    /// `--private-reads`: the node itself, its operators, publishers and `--private-reader` ids.
    /// (``hasRole(_:peer:)`` stays false for `read`, so a reader's grant is still named in audit records.)
    public nonisolated func hasReadRole(peer: NodeID?) -> Bool {
        guard let peer else { return false }
        return peer == roles.node || roles.operators.contains(peer) || roles.publishers.contains(peer) || roles.readers.contains(peer)
    }

    private nonisolated func authority(_ right: AccessRights, issuer: NodeID) -> Bool {
        if issuer == roles.node { return true }
        switch right {
        case .publish, .read: return roles.publishers.contains(issuer)
        case .purge: return roles.operators.contains(issuer) || roles.publishers.contains(issuer)
        default: return roles.operators.contains(issuer)
        }
    }

    // MARK: revocation

    /// Takes a revocation list (pushed by a publisher or an upstream node): kept when it verifies,
    /// comes from an operator or publisher of this node, and is newer than the one held.
    /// - Returns: the list held now for that publisher, and whether `list` replaced it.
    /// - Throws: ``AccessError`` when the list does not verify or its publisher is unknown here.
    public func accept(_ list: RevocationList) async throws(AccessError) -> (current: RevocationList, changed: Bool) {
        guard let trust else { throw AccessError(.badSignature, "this node checks no revocation lists (it has no CA)") }
        guard isIssuer(list.publisher) else {
            throw AccessError(.notCovered, "node \(list.publisher.hex) is neither an operator nor a publisher of this node; its revocation list is of no use here")
        }
        if let held = lists[list.publisher], held.version >= list.version { return (held, false) }
        try await list.verify(trust: trust, now: clock())
        guard lists[list.publisher] != nil || lists.count < Self.maximumPublishers else {
            throw AccessError(.malformed, "this node keeps the revocation lists of \(Self.maximumPublishers) publishers already")
        }
        lists[list.publisher] = list
        save?(Array(lists.values))
        return (list, true)
    }

    /// The list held for `publisher`.
    public func revocations(of publisher: NodeID) -> RevocationList? { lists[publisher] }

    /// Every list held.
    public var allRevocations: [RevocationList] { Array(lists.values) }

    /// Publishers and operators whose lists this node wants (asked of its upstream on connect).
    public nonisolated var issuers: [NodeID] { Array(roles.operators.union(roles.publishers)).sorted() }
}
