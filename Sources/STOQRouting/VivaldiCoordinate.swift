/// Tuning of the Vivaldi algorithm (Dabek et al., SIGCOMM 2004), with the defaults of the paper.
public struct VivaldiConfiguration: Sendable, Equatable {
    /// Error gain `ce` of the moving average of the local error.
    public var errorGain: Float = 0.25
    /// Step gain `cc` of the adaptive timestep.
    public var stepGain: Float = 0.25
    /// Smallest height in milliseconds (a node's access-link delay cannot be negative).
    public var minimumHeight: Float = 0.1
    /// Number of Euclidean dimensions used, 2 ... 4 (plus the height).
    public var dimensions: Int = 4

    /// Creates the default configuration.
    public init() {}
}

/// A Vivaldi network coordinate with height: a point in up to 4 Euclidean dimensions plus
/// a height that models the access link, in milliseconds of round-trip time.
///
/// The predicted RTT between two coordinates is `‖a − b‖ + a.height + b.height`.
public struct VivaldiCoordinate: Sendable, Equatable {
    /// The Euclidean part, in milliseconds.
    public var vector: SIMD4<Float>
    /// The height (access-link delay), in milliseconds.
    public var height: Float
    /// The node's own estimate of its relative error, 0 ... 1 (1 = knows nothing yet).
    public var error: Float

    /// Creates a coordinate.
    public init(vector: SIMD4<Float> = .zero, height: Float = 0.1, error: Float = 1) {
        self.vector = vector
        self.height = height
        self.error = error
    }

    /// The starting coordinate of every node: the origin, with the largest error.
    public static let origin = VivaldiCoordinate()

    /// Predicted round-trip time to `other`, in milliseconds.
    @inlinable
    public func distance(to other: VivaldiCoordinate) -> Float {
        let d = vector - other.vector
        return (d * d).sum().squareRoot() + height + other.height
    }

    /// Whether every component is finite and the error is in range (checks gossip).
    public var isValid: Bool {
        let finite = vector.x.isFinite && vector.y.isFinite && vector.z.isFinite && vector.w.isFinite
        return finite && height.isFinite && height >= 0 && error.isFinite && error >= 0 && error <= 1
    }

    /// Moves this coordinate after measuring `rtt` milliseconds to a node at `remote`
    /// (one step of Vivaldi with the adaptive timestep and height vectors).
    ///
    /// - Parameters:
    ///   - rtt: the measured round-trip time in milliseconds (ignored unless positive).
    ///   - remote: the other node's coordinate, as it reported it.
    ///   - configuration: gains and dimensions.
    ///   - tieBreak: any value that varies between calls; picks a direction when both
    ///     coordinates coincide (so the update stays deterministic).
    public mutating func update(
        rtt: Float, remote: VivaldiCoordinate,
        configuration: VivaldiConfiguration = VivaldiConfiguration(), tieBreak: UInt64 = 0
    ) {
        guard rtt > 0, rtt.isFinite, remote.isValid else { return }
        // A remote coordinate far enough away overflows the arithmetic (inf − inf = NaN); a step
        // that would leave this coordinate non-finite is dropped, so a peer's advert can move it
        // but never poison it.
        let before = self
        defer { if !isValid { self = before } }
        let predicted = distance(to: remote)
        let weight = error + remote.error > 0 ? error / (error + remote.error) : 0.5
        let sampleError = abs(predicted - rtt) / rtt
        let ce = configuration.errorGain * weight
        error = min(1, sampleError * ce + error * (1 - ce))
        let step = configuration.stepGain * weight
        let force = step * (rtt - predicted)

        let mask = Self.mask(dimensions: configuration.dimensions)
        let difference = (vector - remote.vector) * mask
        let length = (difference * difference).sum().squareRoot()
        if length < 1e-6 {
            // Coincident points: push apart along a pseudo-random direction.
            var bits = tieBreak &* 0x9E37_79B9_7F4A_7C15 | 1
            var direction = SIMD4<Float>.zero
            for axis in 0 ..< 4 {
                bits ^= bits >> 29
                bits &*= 0xBF58_476D_1CE4_E5B9
                direction[axis] = Float(Int64(bitPattern: bits) >> 11) / Float(1 << 52)
            }
            direction *= mask
            let norm = (direction * direction).sum().squareRoot()
            if norm < 1e-9 { direction = SIMD4(1, 0, 0, 0) } else { direction /= norm }
            vector += direction * force
            return
        }
        let total = length + height + remote.height
        vector += difference * (force / total)
        height = max(configuration.minimumHeight, height + force * (height + remote.height) / total)
    }

    static func mask(dimensions: Int) -> SIMD4<Float> {
        switch dimensions {
        case ...2: return SIMD4(1, 1, 0, 0)
        case 3: return SIMD4(1, 1, 1, 0)
        default: return SIMD4(1, 1, 1, 1)
        }
    }
}
