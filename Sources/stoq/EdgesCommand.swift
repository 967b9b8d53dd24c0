import ArgumentParser
import Foundation
import STOQ

/// `stoq edges --node ORIGIN`: the edges registered with an origin, nearest to the asker first
/// (EDGES_REQUEST over stoq/1 with mutual TLS).
struct Edges: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the edges registered with an origin, nearest first (to --location, else to the region of --region or the certificate)."
    )
    @Option(help: "The origin, e.g. '[::1]:4433'.") var node: String = "[::1]:4433"
    @Option(help: "Client certificate (PEM).") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca
    @Option(help: "Where you are, LAT,LON in degrees (e.g. '48.85,2.35'): edges are ordered by distance from it.") var location: String?
    @Option(help: "Your region (default: the region in --cert): edges in it come before unplaced ones.") var region: String?
    @Option(help: "The most edges listed (1-256).") var limit: Int = 256
    @Flag(help: "Print JSON: {\"origin\", \"edges\": [{\"node_id\", \"address\", \"region\", \"latitude\", \"longitude\", \"distance_km\", \"expires_in_seconds\"}]}.") var json = false

    func run() async throws {
        guard let address = PeerAddress(node) else { throw ValidationError("--node takes an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)") }
        guard (1...EdgeRegistryMessage.maximumEdges).contains(limit) else { throw ValidationError("--limit must be 1 to \(EdgeRegistryMessage.maximumEdges), not \(limit)") }
        var at: EdgeRegistryMessage.WireLocation?
        if let location {
            do {
                let (latitude, longitude) = try NodeConfiguration.parseLocation(location)
                at = .init(latitude: latitude, longitude: longitude)
            } catch let error as NodeError {
                throw ValidationError(error.reason)
            }
        }
        let askerRegion = region ?? (try? NodeCredentials.load(certificatePath: cert, keyPath: key))?.region ?? ""
        let edges = try await withPeer(address, cert: cert, key: key, ca: ca) { client in
            try await client.registeredEdges(region: askerRegion, location: at, limit: limit)
        }
        let here = at.map { GeoCoordinate(latitude: Float($0.latitude), longitude: Float($0.longitude)) }
        func distance(_ e: EdgeRegistryMessage.RegisteredEdge) -> Double? {
            guard let here, let l = e.announcement.location else { return nil }
            return (here.distanceKilometres(to: GeoCoordinate(latitude: Float(l.latitude), longitude: Float(l.longitude))) * 10).rounded() / 10
        }
        func text(_ e: EdgeRegistryMessage.RegisteredEdge) -> String { PeerAddress(host: e.announcement.host, port: Int(e.announcement.port)).description }
        if json {
            let list: [[String: Any]] = edges.map { e in
                var entry: [String: Any] = [
                    "node_id": Hex.encode(e.nodeID.bytes), "address": text(e), "region": e.announcement.region,
                    "expires_in_seconds": Int(e.expiresIn),
                ]
                if let l = e.announcement.location {
                    entry["latitude"] = l.latitude
                    entry["longitude"] = l.longitude
                }
                if let d = distance(e) { entry["distance_km"] = d }
                return entry
            }
            let data = try JSONSerialization.data(withJSONObject: ["origin": address.description, "edges": list], options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        guard !edges.isEmpty else {
            FileHandle.standardError.write(Data("stoq: \(address) has no registered edges\n".utf8))
            return
        }
        for e in edges {
            var columns = [text(e), e.announcement.region.isEmpty ? "-" : e.announcement.region]
            columns.append(distance(e).map { "\($0) km" } ?? "-")
            columns.append("node \(Hex.encode(e.nodeID.bytes.prefix(8)))")
            columns.append("expires in \(e.expiresIn) s")
            print(columns.joined(separator: "  "))
        }
    }
}
