/// A synthetic Internet: nodes clustered around 16 metropolitan areas, with RTTs from
/// great-circle distance (fibre at ~100 km per ms of RTT, 1.5x path stretch), an access
/// delay per node, and a fixed multiplicative noise per pair. Deterministic from its seed.
///
/// Used by tests and by `RoutingBenchmark` as the ground truth that Vivaldi learns.
public struct GeographicLatencyModel: Sendable {
    /// Position of each node.
    public let positions: [GeoCoordinate]
    /// Region (metro index) of each node.
    public let regions: [UInt16]
    /// Access-link delay of each node, milliseconds of RTT.
    public let accessMilliseconds: [Float]
    /// Relative noise per pair: RTTs are scaled by a factor in `1 ± noise`.
    public let noise: Double
    private let seed: UInt64

    /// The metros nodes cluster around (latitude, longitude).
    public static let metros: [GeoCoordinate] = ([
        (40.7, -74.0), (37.8, -122.4), (41.9, -87.6), (-23.5, -46.6), (51.5, -0.1), (50.1, 8.7),
        (59.3, 18.1), (40.4, -3.7), (19.1, 72.9), (1.35, 103.8), (35.7, 139.7), (-33.9, 151.2),
        (-26.2, 28.0), (25.2, 55.3), (37.6, 127.0), (43.7, -79.4),
    ] as [(Float, Float)]).map { GeoCoordinate(latitude: $0.0, longitude: $0.1) }

    /// Generates `nodeCount` nodes.
    ///
    /// - Parameters:
    ///   - nodeCount: number of nodes.
    ///   - seed: seed of every choice.
    ///   - noise: relative noise per pair (0.05 = ±5 %).
    public init(nodeCount: Int, seed: UInt64, noise: Double = 0.05) {
        var state = seed
        func next() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Double(z >> 11) * 0x1.0p-53
        }
        var positions: [GeoCoordinate] = []
        var regions: [UInt16] = []
        var access: [Float] = []
        positions.reserveCapacity(nodeCount)
        for _ in 0 ..< nodeCount {
            let metro = min(Self.metros.count - 1, Int(next() * Double(Self.metros.count)))
            let centre = Self.metros[metro]
            // Roughly normal offsets (sum of uniforms), σ ≈ 2 degrees.
            let dLat = (next() + next() + next() - 1.5) * 4
            let dLon = (next() + next() + next() - 1.5) * 4
            positions.append(GeoCoordinate(
                latitude: Float(max(-89, min(89, Double(centre.latitude) + dLat))),
                longitude: Float(max(-179.9, min(179.9, Double(centre.longitude) + dLon)))
            ))
            regions.append(UInt16(metro))
            let u = next()
            access.append(Float(1 + 9 * u * u))
        }
        self.positions = positions
        self.regions = regions
        self.accessMilliseconds = access
        self.noise = noise
        self.seed = seed
    }

    /// Number of nodes.
    public var nodeCount: Int { positions.count }

    /// The model's RTT between nodes `a` and `b`, milliseconds (symmetric, noise included).
    public func rttMilliseconds(_ a: Int, _ b: Int) -> Double {
        if a == b { return 0 }
        let low = UInt64(min(a, b)), high = UInt64(max(a, b))
        var z = seed ^ (low &* 0x9E37_79B9_7F4A_7C15) ^ (high &* 0xC2B2_AE3D_27D4_EB4F)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let factor = 1 + noise * (2 * (Double(z >> 11) * 0x1.0p-53) - 1)
        let propagation = positions[a].distanceKilometres(to: positions[b]) * 0.015
        return (propagation + Double(accessMilliseconds[a]) + Double(accessMilliseconds[b])) * factor
    }
}

/// Runs Vivaldi for every node of a latency model at once (each node samples peers and moves
/// its coordinate) and measures how well the coordinates predict the model.
public enum VivaldiEvaluation {
    /// Trains coordinates for every node of `model`.
    ///
    /// - Parameters:
    ///   - model: the ground truth.
    ///   - rounds: samples per node.
    ///   - seed: seed of the peer choices and measurement jitter.
    ///   - jitter: relative jitter of each measurement around the model's RTT.
    ///   - configuration: Vivaldi tuning.
    /// - Returns: one coordinate per node.
    public static func train(
        model: GeographicLatencyModel, rounds: Int, seed: UInt64, jitter: Double = 0.02,
        configuration: VivaldiConfiguration = VivaldiConfiguration()
    ) -> [VivaldiCoordinate] {
        let count = model.nodeCount
        var coordinates = Array(repeating: VivaldiCoordinate.origin, count: count)
        guard count > 1 else { return coordinates }
        var state = seed
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        // Each node keeps a small fixed neighbour set (as a real node would keep peers) and
        // samples it half of the time, a random node otherwise.
        let neighbours = 16
        var neighbourSet = [Int](repeating: 0, count: count * neighbours)
        for i in 0 ..< count {
            for j in 0 ..< neighbours {
                var peer = Int(next() % UInt64(count))
                if peer == i { peer = (peer + 1) % count }
                neighbourSet[i * neighbours + j] = peer
            }
        }
        for round in 0 ..< rounds {
            for i in 0 ..< count {
                let r = next()
                var peer = r & 1 == 0 ? neighbourSet[i * neighbours + Int((r >> 1) % UInt64(neighbours))] : Int((r >> 8) % UInt64(count))
                if peer == i { peer = (peer + 1) % count }
                let noise = 1 + jitter * (2 * Double(next() >> 11) * 0x1.0p-53 - 1)
                let rtt = Float(model.rttMilliseconds(i, peer) * noise)
                let remote = coordinates[peer]
                coordinates[i].update(rtt: rtt, remote: remote, configuration: configuration, tieBreak: UInt64(round) &* 31 &+ UInt64(i))
            }
        }
        return coordinates
    }

    /// Relative errors `|predicted − model| / model` over `samples` random pairs, sorted.
    public static func relativeErrors(
        coordinates: [VivaldiCoordinate], model: GeographicLatencyModel, samples: Int, seed: UInt64
    ) -> [Double] {
        let count = model.nodeCount
        guard count > 1 else { return [] }
        var state = seed ^ 0xA5A5_A5A5
        var errors: [Double] = []
        errors.reserveCapacity(samples)
        while errors.count < samples {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            let a = Int(z % UInt64(count)), b = Int((z >> 32) % UInt64(count))
            if a == b { continue }
            let truth = model.rttMilliseconds(a, b)
            let predicted = Double(coordinates[a].distance(to: coordinates[b]))
            errors.append(abs(predicted - truth) / truth)
        }
        return errors.sorted()
    }
}
