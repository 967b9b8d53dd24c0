import Foundation
import STOQExchange
import STOQIdentity

extension NodeConfiguration {
    /// Parses a location written `LAT,LON` in degrees (e.g. `48.85,2.35`).
    /// - Throws: ``NodeError`` `.invalidArgument` for anything else, or values out of range.
    public static func parseLocation(_ text: String) throws -> (latitude: Double, longitude: Double) {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, let latitude = Double(parts[0]), let longitude = Double(parts[1]),
              latitude.isFinite, longitude.isFinite, abs(latitude) <= 90, abs(longitude) <= 180 else {
            throw NodeError(.invalidArgument, "the location '\(text)' is not LAT,LON in degrees (latitude -90 to 90, longitude -180 to 180), e.g. '48.85,2.35'")
        }
        return (latitude, longitude)
    }

    /// The configuration with its placement filled in, so routing's geographic factor and the
    /// edge registry work without hand-written JSON: ``location`` (`LAT,LON`) sets ``latitude`` and
    /// ``longitude``, and a missing ``region`` is taken from the certificate (subject OU
    /// `region=…`, as `stoq certs issue --region` writes it).
    /// - Throws: ``NodeError`` `.invalidArgument` for a malformed location.
    public func withPlacement() throws -> NodeConfiguration {
        var c = self
        if let location {
            let (latitude, longitude) = try Self.parseLocation(location)
            c.latitude = latitude
            c.longitude = longitude
        }
        if c.region == nil || c.region?.isEmpty == true,
           let region = (try? NodeCredentials.load(certificatePath: certificate, keyPath: key))?.region, !region.isEmpty {
            c.region = region
        }
        return c
    }
}
