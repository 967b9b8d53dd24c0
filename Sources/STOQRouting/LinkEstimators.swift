/// Smoothed round-trip time and its variation, the way TCP and QUIC keep them (RFC 6298):
/// `srtt ← (1 − α)·srtt + α·sample`, `rttvar ← (1 − β)·rttvar + β·|srtt − sample|`.
public struct RTTEstimate: Sendable, Equatable {
    /// Smoothed RTT in milliseconds.
    public private(set) var smoothed: Float = 0
    /// Mean deviation in milliseconds.
    public private(set) var variation: Float = 0
    /// Smallest sample seen, in milliseconds.
    public private(set) var minimum: Float = .infinity
    /// Number of samples.
    public private(set) var samples: UInt32 = 0

    /// Creates an empty estimate.
    public init() {}

    /// Adds a sample in milliseconds with gains `alpha` (mean) and `beta` (variation).
    public mutating func add(_ sample: Float, alpha: Float = 0.125, beta: Float = 0.25) {
        guard sample.isFinite, sample >= 0 else { return }
        if samples == 0 {
            smoothed = sample
            variation = sample / 2
        } else {
            variation = (1 - beta) * variation + beta * abs(smoothed - sample)
            smoothed = (1 - alpha) * smoothed + alpha * sample
        }
        minimum = min(minimum, sample)
        samples &+= 1
    }
}

/// Holt's linear (double exponential) smoothing: a level and a trend, predicting the next
/// measurement as `level + trend`, with the running error of its own predictions.
public struct HoltPredictor: Sendable, Equatable {
    /// Smoothing of the level, 0 ... 1.
    public var alpha: Float
    /// Smoothing of the trend, 0 ... 1.
    public var beta: Float
    /// Current level.
    public private(set) var level: Float = 0
    /// Current trend per sample.
    public private(set) var trend: Float = 0
    /// Number of samples seen.
    public private(set) var samples: UInt32 = 0
    /// Sum of |prediction − sample| / sample over the samples that had a prediction.
    public private(set) var relativeErrorSum: Double = 0

    /// Creates a predictor.
    public init(alpha: Float = 0.5, beta: Float = 0.2) {
        self.alpha = alpha
        self.beta = beta
    }

    /// The predicted next sample, or nil before the first sample.
    public var prediction: Float? { samples == 0 ? nil : max(0, level + trend) }

    /// Mean relative error of the predictions made so far (0 before the second sample).
    public var meanRelativeError: Double { samples > 1 ? relativeErrorSum / Double(samples - 1) : 0 }

    /// Adds a sample; returns the relative error of the prediction it replaces, if any.
    @discardableResult
    public mutating func observe(_ sample: Float) -> Float? {
        guard sample.isFinite else { return nil }
        defer { samples &+= 1 }
        if samples == 0 {
            level = sample
            trend = 0
            return nil
        }
        let predicted = max(0, level + trend)
        let relative = sample > 0 ? abs(predicted - sample) / sample : 0
        relativeErrorSum += Double(relative)
        let newLevel = alpha * sample + (1 - alpha) * (level + trend)
        trend = beta * (newLevel - level) + (1 - beta) * trend
        level = newLevel
        return relative
    }
}
