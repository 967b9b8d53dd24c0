import Foundation
import Testing
@testable import STOQRouting

@Suite struct EdgeRegistryTests {
    static func id(_ n: UInt8) -> [UInt8] { [UInt8](repeating: n, count: 32) }
    static func entry(_ n: UInt8, port: UInt16 = 4000, region: String = "", at location: (Double, Double)? = nil) -> EdgeRegistry.Entry {
        .init(nodeID: id(n), host: "::1", port: port + UInt16(n), region: region, latitude: location?.0, longitude: location?.1, expiresAt: 0)
    }

    static let paris = GeoCoordinate(latitude: 48.85, longitude: 2.35)

    @Test func registrationsLapseUnlessRenewed() {
        var r = EdgeRegistry(ttlSeconds: 90)
        #expect(r.register(Self.entry(1), now: 1000) == .added)
        #expect(r.count(now: 1089) == 1)
        #expect(r.count(now: 1090) == 0)
        #expect(r.register(Self.entry(1), now: 1060) == .renewed)
        #expect(r.count(now: 1100) == 1)
        #expect(r.entry(for: Self.id(1), now: 1149)?.expiresAt == 1150)
        #expect(r.expire(now: 1150) == 1)
        #expect(r.count(now: 0) == 0)
    }

    @Test func anAddressChangeReplacesTheEntry() {
        var r = EdgeRegistry()
        #expect(r.register(Self.entry(1, port: 4000), now: 0) == .added)
        #expect(r.register(Self.entry(1, port: 5000), now: 1) == .moved)
        #expect(r.count(now: 2) == 1)
        #expect(r.entry(for: Self.id(1), now: 2)?.port == 5001)
    }

    @Test func theRegistryIsBounded() {
        var r = EdgeRegistry(capacity: 2, ttlSeconds: 10)
        #expect(r.register(Self.entry(1), now: 0) == .added)
        #expect(r.register(Self.entry(2), now: 5) == .added)
        #expect(r.register(Self.entry(3), now: 6) == .full)
        // A known edge may still renew when the registry is full.
        #expect(r.register(Self.entry(2), now: 7) == .renewed)
        // Once one lapses, a new edge takes its place.
        #expect(r.register(Self.entry(3), now: 11) == .added)
        #expect(r.count(now: 11) == 2)
        #expect(r.entry(for: Self.id(1), now: 11) == nil)
    }

    @Test func nearestFirstByDistanceThenRegion() {
        var r = EdgeRegistry()
        _ = r.register(Self.entry(1, region: "us", at: (40.7, -74.0)), now: 0)   // New York
        _ = r.register(Self.entry(2, region: "eu", at: (51.5, -0.1)), now: 0)    // London
        _ = r.register(Self.entry(3, region: "eu"), now: 0)                       // somewhere in eu
        _ = r.register(Self.entry(4, region: "ap"), now: 0)                       // unplaced
        _ = r.register(Self.entry(5, region: "eu", at: (50.1, 8.7)), now: 0)     // Frankfurt
        let order = r.nearest(to: Self.paris, region: "eu", limit: 10, now: 1).map { $0.nodeID[0] }
        #expect(order == [2, 5, 3, 1, 4])
        // Without a location, the asker's region comes first.
        let byRegion = r.nearest(to: nil, region: "ap", limit: 10, now: 1).map { $0.nodeID[0] }
        #expect(byRegion.first == 4)
        #expect(r.nearest(to: Self.paris, region: "eu", limit: 2, now: 1).count == 2)
        #expect(r.nearest(to: Self.paris, region: "eu", limit: 0, now: 1).isEmpty)
    }

    @Test func savedRegistriesRestoreWithoutLapsedOrMalformedEntries() throws {
        var r = EdgeRegistry(ttlSeconds: 90)
        _ = r.register(Self.entry(1), now: 1000)
        _ = r.register(Self.entry(2), now: 1050)
        var bad = Self.entry(3)
        bad.nodeID = [1, 2, 3]
        bad.expiresAt = 5000
        let data = try JSONEncoder().encode(r.all + [bad])
        let saved = try JSONDecoder().decode([EdgeRegistry.Entry].self, from: data)
        let restored = EdgeRegistry(restoring: saved, ttlSeconds: 90, now: 1100)
        #expect(restored.count(now: 1100) == 1)
        #expect(restored.entry(for: Self.id(2), now: 1100)?.expiresAt == 1140)
        // Beyond capacity: the soonest to lapse are dropped.
        let small = EdgeRegistry(restoring: saved, capacity: 1, ttlSeconds: 90, now: 0)
        #expect(small.count(now: 0) == 1)
        #expect(small.entry(for: Self.id(2), now: 0) != nil)
    }
}
