import Foundation
import STOQIdentity
import STOQNode
import STOQTestSupport
import Testing

/// A node refuses to start on settings it cannot run with (issue 11): a cache of zero or fewer
/// bytes, a certificate that is expired, not yet valid or from another CA, and an admin address
/// that is not IPv6 — each with a message that says what to do, and before anything listens.
@Suite struct StartupCheckTests {
    /// The reason of the `NodeError` `.invalidArgument` that `validate()` throws, or nil.
    private func refusal(_ configuration: NodeConfiguration, now: Date = Date()) async -> String? {
        do {
            try await configuration.validate(now: now)
            return nil
        } catch let error as NodeError where error.code == .invalidArgument {
            return error.reason
        } catch {
            return "unexpected \(error)"
        }
    }

    /// Writes credentials for `name` issued by `ca` at `issued` and returns a configuration using them.
    private func configuration(_ network: TestNetwork, _ name: String, issuedAt issued: Date, validity: Duration = .seconds(3600)) throws -> NodeConfiguration {
        var c = try network.configuration(name)
        let paths = try network.ca.issue(name: name, validity: validity, ipAddresses: ["::1"], now: issued).write(to: network.directory, name: name + "-dated")
        c.certificate = paths.certificate
        c.key = paths.key
        return c
    }

    @Test func aValidConfigurationPasses() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var c = try network.configuration("fine")
        c.cacheBytes = 1
        c.admin = PeerAddress("[::1]:0")
        #expect(await refusal(c) == nil)
    }

    @Test func aCacheOfZeroOrFewerBytesIsRefused() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var c = try network.configuration("edge", roles: ["edge"])
        for bytes in [0, -1, Int.min] {
            c.cacheBytes = bytes
            let reason = try #require(await refusal(c))
            #expect(reason.contains("positive") && reason.contains("\(bytes)"))
        }
        // Node.start refuses too (it used to trap in the cache policy's precondition).
        c.cacheBytes = 0
        await #expect(throws: NodeError.self) { _ = try await Node.start(c) }
    }

    @Test func anExpiredOrNotYetValidCertificateIsRefused() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let expired = try configuration(network, "old", issuedAt: Date().addingTimeInterval(-3 * 86_400))
        let reason = try #require(await refusal(expired))
        #expect(reason.contains("expired") && reason.contains("stoq certs issue"))
        await #expect(throws: NodeError.self) { _ = try await Node.start(expired) }

        let future = try configuration(network, "early", issuedAt: Date().addingTimeInterval(2 * 86_400))
        let early = try #require(await refusal(future))
        #expect(early.contains("not valid yet") && early.contains("clock"))
        // The same certificate is fine at a time inside its validity.
        #expect(await refusal(future, now: Date().addingTimeInterval(2 * 86_400 + 60)) == nil)
    }

    @Test func aCertificateFromAnotherCAIsRefused() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var c = try network.foreignConfiguration("stranger")
        c.ca = network.caPath  // this network's CA did not issue it
        let reason = try #require(await refusal(c))
        #expect(reason.contains("not issued by the CA") && reason.contains(network.caPath))
        await #expect(throws: NodeError.self) { _ = try await Node.start(c) }
        // A key that does not belong to the certificate.
        var mismatched = try network.configuration("a")
        mismatched.key = try network.configuration("b").key
        #expect(try #require(await refusal(mismatched)).contains("does not belong"))
    }

    @Test func anAdminAddressThatIsNotIPv6IsRefused() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        var c = try network.configuration("admin")
        for text in ["[::ffff:127.0.0.1]:9464", "[::ffff:7f00:1]:9464", "[localhost:x]:9464"] {
            c.admin = try #require(PeerAddress(text))
            let reason = try #require(await refusal(c))
            #expect(reason.contains("IPv6") || reason.contains("IPv4"), "\(text): \(reason)")
        }
        #expect(PeerAddress("127.0.0.1:9464") == nil)
        await #expect(throws: NodeError.self) {
            _ = try await AdminServer.bind(try #require(PeerAddress("[::ffff:127.0.0.1]:0")), routes: [:])
        }
    }

    @Test func anAdminListenerOnTheUnspecifiedAddressServesNoIPv4() async throws {
        let admin = try await AdminServer.bind(try #require(PeerAddress("[::]:0")), routes: ["/healthz": { ("text/plain", "ok\n") }])
        let serving = Task { await admin.run() }
        defer { serving.cancel() }
        let port = admin.address.port
        #expect(port != 0)
        // IPv6 loopback is served; IPv4 loopback is refused (the socket is IPV6_V6ONLY).
        #expect(Self.tcpConnects(family: AF_INET6, port: port))
        #expect(!Self.tcpConnects(family: AF_INET, port: port))
        await admin.close()
    }

    /// Whether a TCP connection to the loopback address of `family` on `port` is accepted.
    static func tcpConnects(family: Int32, port: Int) -> Bool {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if family == AF_INET6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            address.sin6_addr = in6addr_loopback
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
