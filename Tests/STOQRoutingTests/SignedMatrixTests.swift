import Testing
@testable import STOQRouting

/// The matrix with an injected verifier (signed routing), sans-IO: a stub verifier accepts a
/// proof whose fingerprint is "signed by" the advert's node. The real verifier (P-256 signatures,
/// certificates chained to the CA) is tested in STOQNodeTests/SignedRoutingTests.
@Suite struct SignedMatrixTests {
    /// Accepts a proof whose fingerprint is the node id's bytes followed by the version's.
    struct StubVerifier: RoutingAdvertVerifier {
        func verify(_ advert: RoutingNodeAdvert, proof: RoutingAdvertProof, now: Duration) -> Bool {
            proof.fingerprint == Self.fingerprint(advert.node, advert.version, load: advert.load)
        }
        static func fingerprint(_ node: RoutingNodeID, _ version: UInt64, load: Float) -> [UInt8] {
            withUnsafeBytes(of: node.rawValue) { Array($0) } + withUnsafeBytes(of: version) { Array($0) } + withUnsafeBytes(of: load.bitPattern) { Array($0) }
        }
    }

    func signed(_ node: UInt64, version: UInt64, load: Float = 0, expires: Duration = .seconds(100), links: [(UInt64, Float)] = [],
                hops: UInt8 = 0) -> RoutingNodeAdvert {
        let id = RoutingNodeID(node)
        let proof = RoutingAdvertProof(
            expiresAt: expires,
            links: links.map { RoutingLinkAdvert(from: id, to: RoutingNodeID($0.0), version: version, rttMilliseconds: $0.1) },
            fingerprint: StubVerifier.fingerprint(id, version, load: load), signed: "stub")
        return RoutingNodeAdvert(node: id, version: version, hops: hops, load: load, proof: proof)
    }

    @Test func onlyVerifiedUnexpiredNewerAdvertsCountAndLinksComeFromTheProof() {
        var matrix = RoutingMatrix(selfID: RoutingNodeID(1), verifier: StubVerifier())
        // Node 2 (the sender) and node 3, each signed; 2's proof carries its link to 3.
        var outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(2), nodes: [
            signed(3, version: 5, load: 0.5), signed(2, version: 7, links: [(3, 12)]),
        ], links: []), now: .seconds(1))
        #expect(outcome.acceptedNodes == 2 && outcome.rejected == 0)
        _ = matrix.publish(now: .seconds(1))
        #expect(matrix.snapshot?.measuredLatency(from: RoutingNodeID(2), to: RoutingNodeID(3)) == 12)

        // A plain peer rewrites node 3: unsigned, tampered (load changed after signing), and bare
        // link adverts. Nothing changes.
        var tampered = signed(3, version: 9, load: 0.5)
        tampered.load = 12345
        var unsigned = signed(3, version: 10, load: 12345)
        unsigned.proof = nil
        outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [tampered, unsigned], links: [
            RoutingLinkAdvert(from: RoutingNodeID(2), to: RoutingNodeID(3), version: 99, rttMilliseconds: 161.8),
        ]), now: .seconds(2))
        #expect(outcome.acceptedNodes == 0 && outcome.acceptedLinks == 0 && outcome.unverified == 3)
        #expect(matrix.record(of: RoutingNodeID(3))?.load == 0.5 && matrix.record(of: RoutingNodeID(3))?.version == 5)
        _ = matrix.publish(now: .seconds(2))
        #expect(matrix.snapshot?.measuredLatency(from: RoutingNodeID(2), to: RoutingNodeID(3)) == 12)

        // A replay of an older (genuine) advert is stale; an expired one is refused.
        outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [signed(3, version: 4, load: 0.9)], links: []), now: .seconds(3))
        #expect(outcome.stale == 1 && matrix.record(of: RoutingNodeID(3))?.load == 0.5)
        outcome = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(4), nodes: [signed(3, version: 8, load: 0.9, expires: .seconds(3))], links: []), now: .seconds(3))
        #expect(outcome.unverified == 1 && matrix.record(of: RoutingNodeID(3))?.load == 0.5)

        // A newer signed advert replaces the node's links wholesale.
        _ = matrix.handleGossip(RoutingGossip(sender: RoutingNodeID(2), nodes: [signed(2, version: 8, expires: .seconds(10))], links: []), now: .seconds(4))
        _ = matrix.publish(now: .seconds(4))
        #expect(matrix.snapshot?.measuredLatency(from: RoutingNodeID(2), to: RoutingNodeID(3)) == nil)

        // Gossip made by the matrix carries the stored proofs, and no bare links of others.
        let gossip = matrix.makeGossip(now: .seconds(5))
        #expect(gossip.nodes.dropFirst().allSatisfy { $0.proof != nil })
        #expect(gossip.links.allSatisfy { $0.from == RoutingNodeID(1) })

        // Once a node's advert expires (node 2's at 10 s; both were heard within `staleAfter`) it
        // carries no routes and is not gossiped on.
        let late = matrix.makeGossip(now: .seconds(11))
        #expect(late.nodes.map(\.node) == [RoutingNodeID(1), RoutingNodeID(3)])
        _ = matrix.publish(now: .seconds(11))
        let snapshot = matrix.snapshot!
        #expect(snapshot.ids.firstIndex(of: RoutingNodeID(2)).map { snapshot.usable[$0] } == false)
        #expect(snapshot.ids.firstIndex(of: RoutingNodeID(3)).map { snapshot.usable[$0] } == true)
    }
}
