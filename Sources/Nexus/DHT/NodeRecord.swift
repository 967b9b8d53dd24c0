/// What the DHT knows about a node: id, addresses, region and certificate fingerprint.
public struct NodeRecord: Hashable, Sendable, CustomStringConvertible {
    /// SHA-256 of the node's public key (SPKI DER).
    public var id: NexusID
    /// Up to ``maxAddresses`` IPv6 socket addresses.
    public var addresses: [NexusAddress]
    /// A short region tag (≤ ``maxRegionLength`` UTF-8 bytes), e.g. `eu-west`.
    public var region: String
    /// SHA-256 of the node's current certificate (DER).
    public var certificateFingerprint: NexusHash

    /// The most addresses a record carries.
    public static let maxAddresses = 4
    /// The longest region tag.
    public static let maxRegionLength = 32

    /// Creates a record.
    public init(id: NexusID, addresses: [NexusAddress] = [], region: String = "", certificateFingerprint: NexusHash = .zero) {
        self.id = id; self.addresses = addresses; self.region = region; self.certificateFingerprint = certificateFingerprint
    }

    /// Short form: the id's first 8 hex digits.
    public var description: String { "node(\(id.shortHex))" }

    func encode(_ w: inout ByteWriter) {
        w.hash(id)
        w.u8(UInt8(min(addresses.count, Self.maxAddresses)))
        for a in addresses.prefix(Self.maxAddresses) { a.encode(&w) }
        w.short(Array(region.utf8.prefix(Self.maxRegionLength)))
        w.hash(certificateFingerprint)
    }

    static func decode(_ r: inout ByteReader) throws(NexusError) -> NodeRecord {
        let id = try r.hash("node id")
        let n = try r.count(max: maxAddresses, "node addresses")
        var addrs: [NexusAddress] = []
        for _ in 0..<n { addrs.append(try NexusAddress.decode(&r)) }
        let region = try r.short(max: maxRegionLength, "region")
        guard let regionText = String(validating: region, as: UTF8.self) else { throw NexusError(.malformedInput, "region is not UTF-8") }
        return NodeRecord(id: id, addresses: addrs, region: regionText, certificateFingerprint: try r.hash("certificate fingerprint"))
    }
}
