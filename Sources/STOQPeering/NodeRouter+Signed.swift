import Crypto
import Foundation
import NIOCore
import STOQExchange
import STOQIdentity
import STOQRouting
import STOQTransport
import STOQWire

/// Signed routing (docs/PROTOCOL.md "Signed routing adverts"): the node signs its own advert,
/// carries others' unchanged, and takes an advert about a node only with that node's signature.
extension NodeRouter {
    /// How often this node signs a new advert of its own (between signatures it re-sends the last
    /// one): the gossip interval, at most 1 s.
    public var resignInterval: Duration { min(gossipInterval, .seconds(1)) }

    /// This node's view as signed adverts: its own (signed now, or within ``resignInterval``),
    /// then the adverts of the nodes its matrix holds, exactly as their nodes signed them, with
    /// each signer's certificate once. Empty without ``security``.
    public func makeAdverts() async -> RoutingAdvertMessage {
        guard let security else { return RoutingAdvertMessage(certificates: [], adverts: []) }
        await security.refresh()
        let now = clock()
        let gossip = lock.withLock { matrix.makeGossip(now: now) }
        var message = RoutingAdvertMessage(certificates: [], adverts: [])
        var budget = RoutingAdvertMessage.maxPayloadLength - 8
        var included = Set<[UInt8]>()
        func add(_ signed: SignedRoutingAdvert, hops: UInt8, age: UInt32) -> Bool {
            var advert = signed.advert
            advert.hops = hops
            advert.ageMilliseconds = age
            let needsCertificate = !included.contains(advert.certificateDigest)
            var cost = advert.encodedLength
            if needsCertificate { cost += VarInt.length(of: UInt64(signed.certificate.count)) + signed.certificate.count }
            guard cost <= budget, message.adverts.count < RoutingAdvertMessage.maxAdverts,
                  !needsCertificate || message.certificates.count < RoutingAdvertMessage.maxCertificates
            else { return false }
            if needsCertificate {
                included.insert(advert.certificateDigest)
                message.certificates.append(signed.certificate)
            }
            message.adverts.append(advert)
            budget -= cost
            return true
        }
        if let own = ownAdvert(gossip, now: now, security: security) { _ = add(own, hops: 0, age: 0) }
        for node in gossip.nodes.dropFirst() {
            guard let signed = node.proof?.signed as? SignedRoutingAdvert else { continue }
            guard add(signed, hops: node.hops, age: node.ageMilliseconds) else { break }
        }
        return message
    }

    /// This node's own signed advert: the last one while it is younger than ``resignInterval``,
    /// else a new one (the matrix's own record and measured links, the sequence number the matrix
    /// stamped, expiring ``RoutingAdvertSecurity/advertLifetime`` from now).
    func ownAdvert(_ gossip: RoutingGossip, now: Duration, security: RoutingAdvertSecurity) -> SignedRoutingAdvert? {
        if let cached = lock.withLock({ ownSigned }), now - cached.at < resignInterval, now >= cached.at,
           cached.advert.body.nodeID == security.nodeID?.bytes {
            return cached.advert
        }
        guard let me = gossip.nodes.first else { return nil }
        let links = gossip.links.filter { $0.from == selfID }.prefix(RoutingAdvertMessage.Body.maxLinks).map {
            RoutingAdvertMessage.Body.Link(to: $0.to.rawValue, rttMilliseconds: $0.rttMilliseconds, bandwidthBitsPerSecond: $0.bandwidthBitsPerSecond)
        }
        let expires = now + security.advertLifetime
        let body = RoutingAdvertMessage.Body(
            nodeID: [], sequence: me.version, expiresAtMillis: UInt64(max(0, expires.nanoseconds / 1_000_000)), region: me.region,
            latitude: me.geo.latitude, longitude: me.geo.longitude, coordinate: me.coordinate.vector, height: me.coordinate.height,
            error: me.coordinate.error, load: me.load, bandwidthBitsPerSecond: me.bandwidthBitsPerSecond, links: Array(links))
        guard let signed = security.sign(body) else { return nil }
        lock.withLock { ownSigned = (signed, now) }
        return signed
    }

    /// Applies signed adverts received from the peer whose handshake proved `peer`.
    ///
    /// Each advert is checked on its own and counts only if it is its signer's: the body decodes
    /// within its bounds; its sequence is newer than the one held for that node (older ones are
    /// stale and cost no signature check) and not more than ``maximumClockSkew`` ahead; it has not
    /// expired and does not claim more than ``RoutingAdvertSecurity/maximumAdvertLifetime``; its
    /// certificate (from the message's table, checked once against the CA and cached, or from the
    /// cache) is valid now and its key's id is the body's node id; its signature verifies. Anything
    /// else is dropped, whoever forwarded it, and changes nothing.
    /// - Throws: ``NodeError`` `.protocolViolation` on a connection without a peer certificate, or
    ///   on a router without ``security``.
    @discardableResult
    public func handleAdverts(_ message: RoutingAdvertMessage, from peer: NodeID?) async throws -> RoutingGossipOutcome {
        guard let peer else {
            reject()
            throw NodeError(.protocolViolation, "routing adverts on a connection without a peer certificate; refused")
        }
        guard let security else {
            reject()
            throw NodeError(.protocolViolation, "this router does not check signed routing adverts; refused")
        }
        let now = clock()
        let date = Self.date(now)
        let horizon = UInt64(max(0, (now + Self.maximumClockSkew).nanoseconds))
        let latestExpiry = now + RoutingAdvertSecurity.maximumAdvertLifetime + Self.maximumClockSkew
        var table: [[UInt8]: [UInt8]] = [:]
        for der in message.certificates { table[Array(SHA256.hash(data: der))] = der }
        var outcome = RoutingGossipOutcome()
        var nodes: [RoutingNodeAdvert] = []
        var seen = Set<UInt64>()
        for advert in message.adverts {
            guard let body = try? RoutingAdvertMessage.Body.decode(advert.body) else {
                outcome.rejected += 1
                continue
            }
            let id = RoutingNodeID(body.routingID)
            guard id != selfID else { continue }
            guard seen.insert(body.routingID).inserted, body.sequence <= horizon else {
                outcome.rejected += 1
                continue
            }
            let expires = Duration.milliseconds(Int64(clamping: body.expiresAtMillis))
            guard expires > now, expires <= latestExpiry else {
                outcome.rejected += 1
                outcome.unverified += 1
                continue
            }
            // Cheap first: an advert older than the one held is stale; no signature is checked.
            let held = lock.withLock({ matrix.record(of: id)?.version })
            if let held, body.sequence < held {
                outcome.stale += 1
                continue
            }
            let certificate: [UInt8]
            if let der = table[advert.certificateDigest], await security.admit(der, digest: advert.certificateDigest, now: date) {
                certificate = der
            } else if let der = security.certificate(advert.certificateDigest), security.entry(advert.certificateDigest, now: date) != nil {
                certificate = der
            } else {
                outcome.rejected += 1
                outcome.unverified += 1
                continue
            }
            let signed = SignedRoutingAdvert(advert: advert, body: body, certificate: certificate)
            // A newer advert's signature is checked here, outside the lock (up to 256 ECDSA checks
            // per message must not hold up every other user of the matrix); the matrix then
            // rechecks its sequence under the lock and takes the checked signature. An advert of
            // the held sequence costs no check (the matrix only compares its proof's fingerprint).
            if held.map({ body.sequence > $0 }) ?? true, !security.preverify(signed, now: date) {
                outcome.rejected += 1
                outcome.unverified += 1
                continue
            }
            nodes.append(Self.routingAdvert(signed))
        }
        let gossip = RoutingGossip(sender: RoutingNodeID(peer), nodes: nodes, links: [])
        let applied = lock.withLock {
            counters.gossipReceived += 1
            return matrix.handleGossip(gossip, now: now)
        }
        outcome.acceptedNodes += applied.acceptedNodes
        outcome.acceptedLinks += applied.acceptedLinks
        outcome.stale += applied.stale
        outcome.rejected += applied.rejected
        outcome.unverified += applied.unverified
        metrics?.routingGossip("received")
        return outcome
    }

    /// One signed exchange: sends this node's adverts to `client`'s peer and applies the ones it
    /// answers with.
    @discardableResult
    public func exchangeAdverts(with client: PeerClient) async throws -> RoutingGossipOutcome {
        let answer: RoutingAdvertMessage
        do {
            noteSent()
            answer = try await client.exchangeAdverts(await makeAdverts())
        } catch let error as NodeError where error.code == .refused {
            reject()
            throw error
        }
        return try await handleAdverts(answer, from: client.authenticatedPeer)
    }

    /// A signed advert as the matrix takes it: the body's values, its links (versioned with its
    /// sequence), and the signed form as the proof.
    static func routingAdvert(_ signed: SignedRoutingAdvert) -> RoutingNodeAdvert {
        let b = signed.body
        let id = RoutingNodeID(b.routingID)
        let links = b.links.map {
            RoutingLinkAdvert(from: id, to: RoutingNodeID($0.to), version: b.sequence, rttMilliseconds: $0.rttMilliseconds,
                              bandwidthBitsPerSecond: $0.bandwidthBitsPerSecond)
        }
        let proof = RoutingAdvertProof(
            expiresAt: .milliseconds(Int64(clamping: b.expiresAtMillis)), links: links, fingerprint: signed.advert.signature, signed: signed)
        return RoutingNodeAdvert(
            node: id, version: b.sequence, hops: signed.advert.hops, region: b.region,
            geo: GeoCoordinate(latitude: b.latitude, longitude: b.longitude),
            coordinate: VivaldiCoordinate(vector: b.coordinate, height: b.height, error: b.error), load: b.load,
            bandwidthBitsPerSecond: b.bandwidthBitsPerSecond, ageMilliseconds: signed.advert.ageMilliseconds, proof: proof)
    }

    /// A matrix time (wall clock since 1970) as a date.
    static func date(_ time: Duration) -> Date {
        Date(timeIntervalSince1970: Double(time.components.seconds) + Double(time.components.attoseconds) / 1e18)
    }
}

/// Answers ROUTING_ADVERTS (0x26) requests: applies the asker's signed adverts (each checked on
/// its own) and answers with this node's. A malformed message is answered with ERROR 1 and
/// changes nothing.
struct SignedRoutingService: NodeService {
    let router: NodeRouter
    var name: String { "routing adverts" }
    var frameTypes: ClosedRange<UInt64> { RoutingAdvertMessage.type.rawValue ... RoutingAdvertMessage.type.rawValue }
    var maximumRequestLength: Int { RoutingAdvertMessage.maxPayloadLength }

    func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let reply: ByteBuffer
        do {
            let message = try RoutingAdvertMessage.decode(request)
            try await router.handleAdverts(message, from: connection.peerNodeID)
            reply = await router.makeAdverts().encoded()
            router.noteSent()
        } catch let error as WireError {
            router.reject()
            reply = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "malformed routing adverts: \(error)").encoded()
        } catch {
            reply = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "\(error)").encoded()
        }
        do {
            try await stream.write(reply)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }
}

extension PeerClient {
    /// Sends signed routing adverts and returns the peer's.
    /// - Throws: ``NodeError`` `.refused` when the peer refuses them (with its reason),
    ///   `.protocolViolation` for another answer; wire and transport errors as they are.
    public func exchangeAdverts(_ message: RoutingAdvertMessage) async throws -> RoutingAdvertMessage {
        guard relayedTarget == nil else {
            throw NodeError(.invalidArgument, "routing adverts are exchanged only with directly connected peers, not through a relay (\(name))")
        }
        let stream = try await connection.openBidirectionalStream(priority: .control)
        try await stream.write(message.encoded())
        try await stream.finish()
        let limit = RoutingAdvertMessage.maxPayloadLength + 16
        var decoder = FrameDecoder(maximumPayloadLength: limit)
        decoder.handle(bytes: try await stream.readAll(limit: limit))
        guard let frame = try decoder.pollFrame() else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering routing adverts")
        }
        if frame.type == RoutingAdvertMessage.type { return try RoutingAdvertMessage.decode(frame) }
        if case .error(_, let text)? = try? STOQMessage.decode(frame) {
            throw NodeError(.refused, "\(name) refused routing adverts: \(text)")
        }
        throw NodeError(.protocolViolation, "\(name) answered routing adverts with \(frame.type)")
    }
}
