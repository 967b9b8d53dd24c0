import Foundation
import Testing
import STOQExchange
import STOQIdentity
import STOQNode
import STOQTestSupport
import STOQTransport
import STOQWire

/// Renewal between real nodes on [::1]: an issuer node, a node that renews with it on a short
/// certificate while a connection stays up, refusals, and SIGHUP-style reloads. Serialized: it
/// judges renewals of 6 s certificates by the wall clock, so it runs in the real-time group.
@Suite(.serialized) struct CertificateRenewalNodeTests {
    /// A configuration whose certificate lives `seconds`.
    private func shortLived(_ network: TestNetwork, _ name: String, seconds: Int64, region: String? = nil, roles: [String] = ["origin"]) throws -> NodeConfiguration {
        var c = try network.configuration(name, roles: roles)
        let credentials = try network.ca.issue(name: name, region: region, validity: .seconds(seconds), ipAddresses: ["::1"])
        try credentials.write(to: network.directory, name: name)
        c.routing = RoutingSettings(enabled: false)
        return c
    }

    @Test func aNodeRenewsWithItsIssuerAndKeepsItsConnections() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var issuerConfiguration = try network.configuration("issuer", roles: ["issuer"])
        issuerConfiguration.caDir = network.directory
        issuerConfiguration.maxLifetime = "6s"
        let issuer = try await Node.start(issuerConfiguration)
        var c = try shortLived(network, "origin", seconds: 6, region: "eu-west")
        c.issuer = issuer.address
        let origin = try await Node.start(c)
        let before = try NodeCredentials.load(certificatePath: c.certificate, keyPath: c.key)
        let client = try await network.node("client", roles: ["client"])
        try await withServing(issuer) {
            try await withServing(origin) {
                try await withServing(client) {
                    // A connection made before any renewal stays usable through two of them.
                    let peer = try await client.peers.client(for: origin.address)
                    _ = try await peer.ping()
                    try await eventually(within: 15) { await origin.renewer.state.renewals >= 2 }
                    _ = try await peer.ping()
                    let after = try NodeCredentials.load(certificatePath: c.certificate, keyPath: c.key)
                    #expect(after.nodeID == before.nodeID)
                    #expect(after.region == "eu-west")
                    #expect(after.certificate.notValidAfter > before.certificate.notValidAfter)
                    // New handshakes see the renewed certificate.
                    let fresh = try await client.endpoint.connect(host: "::1", port: origin.address.port)
                    let presented = try #require(fresh.peerCertificateChain.first)
                    #expect(presented == after.chainDER.first)
                    await fresh.close()
                    let status = await origin.statusJSON()
                    #expect(status.contains("\"renewals\""))
                    #expect(status.contains("\"state\" : \"ok\""))
                    let issuerStatus = await issuer.statusJSON()
                    #expect(issuerStatus.contains("\"renewed\""))
                }
            }
        }
    }

    @Test func theIssuerRefusesAForeignCertificateWithCode6() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let service = IssuerService(authority: network.ca, maximumLifetime: .seconds(60))
        let foreign = try CertificateAuthority.create(commonName: "elsewhere").issue(name: "intruder")
        let request = RenewalMessage.renewRequest(.init(lifetimeSeconds: 60)).frame()
        let refused = await service.answer(request, presentedChain: foreign.chainDER)
        guard case .error(let code, let message) = refused else { Issue.record("renewed a foreign certificate"); return }
        #expect(code == RenewalMessage.refusedCode)
        #expect(message.contains("not issued by this issuer's CA"))
        let expired = try network.ca.issue(name: "old", validity: .seconds(10), now: Date().addingTimeInterval(-60))
        guard case .error(6, let why) = await service.answer(request, presentedChain: expired.chainDER) else { Issue.record("renewed an expired certificate"); return }
        #expect(why.contains("expired"))
        let malformed = Frame(type: RenewalMessage.Types.renewRequest, payload: .init(bytes: [0xFF]))
        guard case .error(1, _) = await service.answer(malformed, presentedChain: expired.chainDER) else { Issue.record("accepted a malformed request"); return }
        let node = try network.ca.issue(name: "fine", validity: .seconds(30))
        guard case .renewed(let chain) = await service.answer(request, presentedChain: node.chainDER) else { Issue.record("refused a valid renewal"); return }
        #expect(try node.replacingChain(chain).nodeID == node.nodeID)
        #expect(service.issued.renewed == 1)
        #expect(service.issued.refused == 3)
    }

    @Test func reloadSwapsValidFilesAndKeepsTheCurrentOnBadOnes() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let c = try shortLived(network, "hup", seconds: 3600)
        let node = try await Node.start(c)
        try await withServing(node) {
            let before = await node.renewer.state.notAfter
            try network.ca.issue(name: "hup", validity: .seconds(7200), ipAddresses: ["::1"]).write(to: network.directory, name: "hup")
            let line = await node.renewer.reload()
            #expect(line.hasPrefix("reloaded the certificate"))
            #expect(await node.renewer.state.notAfter > before.addingTimeInterval(3000))
            try "garbage".write(toFile: c.certificate, atomically: true, encoding: .utf8)
            let refused = await node.renewer.reload()
            #expect(refused.hasPrefix("stoq: error: could not reload the certificate"))
            #expect(await node.renewer.state.notAfter > before.addingTimeInterval(3000))
        }
    }
}
