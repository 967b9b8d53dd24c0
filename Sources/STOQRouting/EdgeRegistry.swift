import Foundation

/// An origin's registry of its edges (sans-IO): who they are (node id, from their certificate),
/// where they listen, their region and location, and until when their registration lasts.
///
/// Time is wall-clock seconds since 1970, passed in by the caller, so that a registry saved to
/// disk and loaded after a restart keeps its expiries. A registration lapses unless renewed;
/// the registry holds at most ``capacity`` edges (a full registry drops lapsed ones first, then
/// refuses new edges; a known edge may always renew or move). It is `Codable` for persistence.
public struct EdgeRegistry: Sendable, Codable, Equatable {
    /// One registered edge.
    public struct Entry: Sendable, Codable, Equatable {
        /// The edge's node id (32 bytes).
        public var nodeID: [UInt8]
        /// The host it listens on (IPv6 literal).
        public var host: String
        /// The port it listens on.
        public var port: UInt16
        /// Its region, or empty.
        public var region: String
        /// Latitude in degrees, when known.
        public var latitude: Double?
        /// Longitude in degrees, when known.
        public var longitude: Double?
        /// When the registration lapses (seconds since 1970).
        public var expiresAt: Double

        /// Creates an entry.
        public init(nodeID: [UInt8], host: String, port: UInt16, region: String, latitude: Double?, longitude: Double?, expiresAt: Double) {
            self.nodeID = nodeID
            self.host = host
            self.port = port
            self.region = region
            self.latitude = latitude
            self.longitude = longitude
            self.expiresAt = expiresAt
        }

        /// The location, when both coordinates are known and valid.
        public var location: GeoCoordinate? {
            guard let latitude, let longitude else { return nil }
            let c = GeoCoordinate(latitude: Float(latitude), longitude: Float(longitude))
            return c.isValid ? c : nil
        }
    }

    /// What ``register(_:now:)`` did.
    public enum Outcome: Sendable, Equatable {
        /// A new edge.
        case added
        /// A known edge renewed, at the same address.
        case renewed
        /// A known edge renewed from a new address (or with a new region or location).
        case moved
        /// The registry is full of live edges.
        case full
    }

    /// The most edges held.
    public let capacity: Int
    /// How long a registration lasts unless renewed, in seconds.
    public let ttlSeconds: Double
    /// Entries by node id (hex).
    private var entries: [String: Entry]

    /// Creates an empty registry.
    /// - Parameters:
    ///   - capacity: the most edges held (default 4096).
    ///   - ttlSeconds: registration lifetime (default 90 s); edges renew at a third of it.
    public init(capacity: Int = 4096, ttlSeconds: Double = 90) {
        self.capacity = max(1, capacity)
        self.ttlSeconds = max(1, ttlSeconds)
        self.entries = [:]
    }

    private static func key(_ id: [UInt8]) -> String { id.map { String(format: "%02x", $0) }.joined() }

    /// Registers or renews `entry` (its `expiresAt` is set to `now + ttlSeconds`).
    public mutating func register(_ entry: Entry, now: Double) -> Outcome {
        var entry = entry
        entry.expiresAt = now + ttlSeconds
        let key = Self.key(entry.nodeID)
        if let held = entries[key] {
            entries[key] = entry
            var same = held
            same.expiresAt = entry.expiresAt
            return same == entry ? .renewed : .moved
        }
        if entries.count >= capacity { expire(now: now) }
        guard entries.count < capacity else { return .full }
        entries[key] = entry
        return .added
    }

    /// Drops lapsed registrations.
    /// - Returns: how many were dropped.
    @discardableResult
    public mutating func expire(now: Double) -> Int {
        let before = entries.count
        entries = entries.filter { $0.value.expiresAt > now }
        return before - entries.count
    }

    /// Removes an edge.
    public mutating func remove(nodeID: [UInt8]) { entries[Self.key(nodeID)] = nil }

    /// The live registration of `nodeID`, if any.
    public func entry(for nodeID: [UInt8], now: Double) -> Entry? {
        guard let e = entries[Self.key(nodeID)], e.expiresAt > now else { return nil }
        return e
    }

    /// Live edges.
    public func count(now: Double) -> Int { entries.values.filter { $0.expiresAt > now }.count }

    /// The live edges ordered by nearness to an asker at `location` in `region`, at most `limit`.
    ///
    /// Nearness: an edge whose location is known, to an asker whose location is known, is as far
    /// as the great-circle distance between them. Otherwise an edge in the asker's region counts
    /// as ``sameRegionKilometres`` away and any other as farther than every located edge. Ties go
    /// to the edge whose registration lasts longer, then by node id (a stable order).
    public func nearest(to location: GeoCoordinate?, region: String, limit: Int, now: Double) -> [Entry] {
        let askerLocation = location.flatMap { $0.isValid ? $0 : nil }
        func distance(_ e: Entry) -> Double {
            if let askerLocation, let edge = e.location { return askerLocation.distanceKilometres(to: edge) }
            if !region.isEmpty, e.region == region { return Self.sameRegionKilometres }
            return Self.unknownKilometres
        }
        let live = entries.values.filter { $0.expiresAt > now }.map { ($0, distance($0)) }
        let sorted = live.sorted { a, b in
            if a.1 != b.1 { return a.1 < b.1 }
            if a.0.expiresAt != b.0.expiresAt { return a.0.expiresAt > b.0.expiresAt }
            return a.0.nodeID.lexicographicallyPrecedes(b.0.nodeID)
        }
        return sorted.prefix(max(0, limit)).map(\.0)
    }

    /// How far an edge in the asker's region counts when a location is missing, in km.
    public static let sameRegionKilometres: Double = 500
    /// How far an edge counts when nothing places it near the asker, in km (beyond any distance on Earth).
    public static let unknownKilometres: Double = 40_000

    /// The great-circle distance between an asker and an edge, when both locations are known.
    public static func distanceKilometres(from location: GeoCoordinate?, to entry: Entry) -> Double? {
        guard let location, location.isValid, let edge = entry.location else { return nil }
        return location.distanceKilometres(to: edge)
    }

    /// Every held entry (live or lapsed), for saving.
    public var all: [Entry] { entries.values.sorted { $0.nodeID.lexicographicallyPrecedes($1.nodeID) } }

    /// Rebuilds a registry from saved entries: lapsed ones, malformed ones (a node id that is not
    /// 32 bytes) and those beyond ``capacity`` (the soonest to lapse) are dropped.
    public init(restoring saved: [Entry], capacity: Int = 4096, ttlSeconds: Double = 90, now: Double) {
        self.init(capacity: capacity, ttlSeconds: ttlSeconds)
        let kept = saved.filter { $0.nodeID.count == 32 && $0.expiresAt > now && $0.expiresAt.isFinite }
            .sorted { $0.expiresAt > $1.expiresAt }
            .prefix(self.capacity)
        for var e in kept {
            // A registration never lasts longer than one lifetime from now (a damaged file cannot pin an edge).
            e.expiresAt = min(e.expiresAt, now + self.ttlSeconds)
            entries[Self.key(e.nodeID)] = e
        }
    }
}
