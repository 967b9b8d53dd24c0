import Foundation

/// A position on Earth in degrees (WGS 84 latitude and longitude).
public struct GeoCoordinate: Sendable, Equatable, Hashable {
    /// Latitude in degrees, -90 ... 90.
    public var latitude: Float
    /// Longitude in degrees, -180 ... 180.
    public var longitude: Float

    /// Creates a coordinate from degrees.
    public init(latitude: Float, longitude: Float) {
        self.latitude = latitude
        self.longitude = longitude
    }

    /// A placeholder for nodes whose position is unknown.
    public static let unknown = GeoCoordinate(latitude: 0, longitude: 0)

    /// Mean Earth radius in kilometres.
    public static let earthRadiusKilometres: Double = 6371.0

    /// Great-circle distance to `other` in kilometres (haversine formula).
    public func distanceKilometres(to other: GeoCoordinate) -> Double {
        let toRadians = Double.pi / 180
        let lat1 = Double(latitude) * toRadians
        let lat2 = Double(other.latitude) * toRadians
        let dLat = lat2 - lat1
        let dLon = (Double(other.longitude) - Double(longitude)) * toRadians
        let sinLat = sin(dLat / 2)
        let sinLon = sin(dLon / 2)
        let h = sinLat * sinLat + cos(lat1) * cos(lat2) * sinLon * sinLon
        return 2 * Self.earthRadiusKilometres * asin(min(1, h.squareRoot()))
    }

    /// Whether both values are finite and in range.
    public var isValid: Bool {
        latitude.isFinite && longitude.isFinite && abs(latitude) <= 90 && abs(longitude) <= 180
    }
}
