import Foundation
import STOQExchange
import STOQIdentity
import STOQWire
import Testing
@testable import STOQNode

/// The origin's edge registry on disk (`STORE/edges.json`): kept across restarts, expiring, and a
/// corrupt file is an empty registry, never a failed start. Also the `location` setting.
@Suite struct EdgeDirectoryTests {
    /// `@unchecked Sendable`: every access holds the lock.
    final class Clock: @unchecked Sendable {
        private let lock = NSLock()
        private var seconds: Double = 1_000_000
        func advance(_ by: Double) { lock.withLock { seconds += by } }
        var read: @Sendable () -> Double { { self.lock.withLock { self.seconds } } }
    }

    static func node(_ n: UInt8) throws -> NodeID { try NodeID(bytes: [UInt8](repeating: n, count: 32)) }
    static func directory() -> String {
        let path = NSTemporaryDirectory() + "edge-directory-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func theRegistrySurvivesARestartAndLapses() async throws {
        let path = Self.directory() + "/edges.json"
        let clock = Clock()
        let first = EdgeDirectory(path: path, ttlSeconds: 90, clock: clock.read)
        let paris = EdgeRegistryMessage.EdgeAnnouncement(host: "::1", port: 4434, region: "eu-west", location: .init(latitude: 48.85, longitude: 2.35))
        let newYork = EdgeRegistryMessage.EdgeAnnouncement(host: "::", port: 4435, region: "us-east", location: .init(latitude: 40.71, longitude: -74.01))
        #expect(try await first.register(nodeID: Self.node(1), announcement: paris, seenAt: "::1") == 90)
        _ = try await first.register(nodeID: Self.node(2), announcement: newYork, seenAt: "fd00::7")
        await first.flush()

        let second = EdgeDirectory(path: path, ttlSeconds: 90, clock: clock.read)
        #expect(await second.count == 2)
        let fromNewYork = await second.nearest(region: "", location: .init(latitude: 40, longitude: -74), limit: 10)
        #expect(fromNewYork.map(\.announcement.port) == [4435, 4434])
        // `::` is replaced by the address the edge was seen at.
        #expect(fromNewYork.first?.announcement.host == "fd00::7")
        let first_ = try Self.node(1).bytes
        #expect(await second.address(of: first_) == PeerAddress(host: "::1", port: 4434))

        clock.advance(91)
        #expect(await second.count == 0)
        #expect(await EdgeDirectory(path: path, ttlSeconds: 90, clock: clock.read).count == 0)
    }

    @Test func aCorruptFileIsAnEmptyRegistry() async throws {
        let path = Self.directory() + "/edges.json"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("{not json".utf8)))
        let directory = EdgeDirectory(path: path)
        #expect(await directory.count == 0)
        _ = try await directory.register(nodeID: Self.node(3), announcement: .init(host: "::1", port: 1, region: "", location: nil), seenAt: nil)
        #expect(await directory.count == 1)
        // A save replaced the corrupt file.
        #expect(await EdgeDirectory(path: path).count == 1)
    }

    @Test func aFullRegistryRefusesNewEdges() async throws {
        let directory = EdgeDirectory(path: nil, capacity: 1)
        _ = try await directory.register(nodeID: Self.node(1), announcement: .init(host: "::1", port: 1, region: "", location: nil), seenAt: nil)
        await #expect(throws: NodeError.self) {
            _ = try await directory.register(nodeID: Self.node(2), announcement: .init(host: "::1", port: 2, region: "", location: nil), seenAt: nil)
        }
    }

    @Test func locationsParse() throws {
        let paris = try NodeConfiguration.parseLocation("48.85,2.35")
        #expect(paris.latitude == 48.85 && paris.longitude == 2.35)
        let sydney = try NodeConfiguration.parseLocation(" -33.9 , 151.2 ")
        #expect(sydney.latitude == -33.9 && sydney.longitude == 151.2)
        for bad in ["", "48.85", "91,0", "0,181", "a,b", "1,2,3", "nan,0"] {
            #expect(throws: NodeError.self) { try NodeConfiguration.parseLocation(bad) }
        }
    }
}
