import Foundation
import NIOCore
import Testing

@testable import STOQTransport

/// A send the kernel refuses must fail that peer alone: never close the socket every other
/// connection of the endpoint shares (issue 11: RELAY_OPEN to `[::1]:0` took a relay offline).
@Suite(.serialized) struct SendErrorTests {
    /// One request/response round trip on `connection`, answered by the echo task on the server.
    private func roundTrip(_ c: Connection, _ text: String) async throws -> String {
        let s = try await c.openBidirectionalStream()
        try await s.write(Array(text.utf8))
        try await s.finish()
        return String(buffer: try await s.readAll())
    }

    private func echo(_ server: Connection) -> Task<Void, Never> {
        Task {
            await withDiscardingTaskGroup { group in
                for await stream in server.incomingStreams {
                    group.addTask {
                        guard let data = try? await stream.readAll() else { return }
                        try? await stream.write(data)
                        try? await stream.finish()
                    }
                }
            }
        }
    }

    @Test func addressesNoDatagramCanGoToAreRefusedAtDialAndTheEndpointKeepsServing() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let echoing = echo(s)
        for (host, port) in [("::1", 0), ("::", 4433), ("ff02::1", 4433), ("::ffff:127.0.0.1", 4433), ("fe80::1", 4433), ("100::1", 4433)] {
            do {
                _ = try await pair.client.connect(host: host, port: port)
                Issue.record("dialled [\(host)]:\(port)")
            } catch let error as STOQError {
                #expect(error.code == .invalidArgument || error.code == .ipv6Only, "[\(host)]:\(port): \(error)")
                #expect(error.reason.contains(host == "::ffff:127.0.0.1" ? "IPv6-only" : "cannot dial"), "\(error.reason)")
            }
        }
        #expect(try await roundTrip(c, "still here") == "still here")
        let health = await pair.client.socketHealth
        #expect(health.isOpen && health.reopenings == 0 && health.failure == nil)
        echoing.cancel()
        await pair.close()
    }

    @Test func aSendErrorDropsThatPeerAloneAndTheSocketIsReopened() async throws {
        let pair = try await Pair.make()
        let (c, s) = try await pair.connect()
        let echoing = echo(s)
        #expect(try await roundTrip(c, "before") == "before")

        // Skip the dial checks: the Initial to port 0 reaches sendmsg, which fails with EINVAL;
        // NIO then closes the UDP socket.
        let core = pair.client.core
        let bad = try SocketAddress(ipAddress: "::1", port: 0)
        let promise = core.eventLoop.makePromise(of: Connection.self)
        core.eventLoop.execute { core.connectRouted(remote: bad, serverName: nil, alpn: nil, promise: promise) }
        do {
            _ = try await promise.futureResult.get()
            Issue.record("a connection to [::1]:0 succeeded")
        } catch let error as STOQError {
            #expect(error.code == .unreachable, "\(error)")
            #expect(error.reason.contains("[::1]") || error.reason.contains("::1"), "\(error.reason)")
        }

        // The other connection never noticed: same socket address, same connection.
        #expect(try await roundTrip(c, "after") == "after")
        let health = await pair.client.socketHealth
        #expect(health.isOpen, "\(health)")
        #expect(health.reopenings == 1, "\(health)")
        #expect(await pair.client.connectionCount == 1)
        echoing.cancel()
        await pair.close()
    }

    @Test func spoofedSourcesNoReplyCanGoToAreDropped() async throws {
        for (host, port, kind) in [
            ("::", 1, IPv6AddressKind.unspecified), ("::1", 0, .loopback), ("ff02::1", 1, .multicast),
            ("fe80::1", 1, .linkLocal), ("fd00::1", 1, .uniqueLocal), ("2001:db8::1", 1, .documentation), ("2a00::1", 1, .global),
        ] {
            let address = try SocketAddress(ipAddress: host, port: port)
            #expect(address.ipv6Kind == kind, "\(host)")
            let sendable = address.unsendableReason == nil
            #expect(sendable == (port != 0 && [.uniqueLocal, .documentation, .global].contains(kind)), "\(host) \(port): \(address.unsendableReason ?? "ok")")
        }
        #expect(IPv6AddressKind("[::ffff:10.0.0.1]") == .ipv4Embedded)
        #expect(IPv6AddressKind("64:ff9b::a00:1") == .ipv4Embedded)
        #expect(IPv6AddressKind("fec0::1") == .siteLocal)
        #expect(IPv6AddressKind("100::1") == .discard)
        #expect(IPv6AddressKind("example.org") == nil)
    }
}
