import Testing
@testable import STOQRouting

@Suite struct PredictionTests {
    @Test func vivaldiConvergesOnGeographicMatrix() {
        let seed = makeSeed()
        let model = GeographicLatencyModel(nodeCount: 400, seed: seed, noise: 0.05)
        let coordinates = VivaldiEvaluation.train(model: model, rounds: 400, seed: seed)
        let errors = VivaldiEvaluation.relativeErrors(coordinates: coordinates, model: model, samples: 20_000, seed: seed)
        let median = errors[errors.count / 2]
        #expect(median <= 0.11, "Vivaldi median relative error \(median), seed \(seed)")
    }

    @Test func holtFollowsATrendBetterThanEWMA() {
        var holt = HoltPredictor()
        var ewma = RTTEstimate()
        var ewmaError = 0.0
        for i in 0 ..< 200 {
            let sample = 20 + Float(i) * 0.5 // RTT climbing steadily
            if i > 0 { ewmaError += Double(abs(ewma.smoothed - sample) / sample) }
            holt.observe(sample)
            ewma.add(sample)
        }
        #expect(holt.meanRelativeError < 0.01)
        #expect(holt.meanRelativeError < ewmaError / 199 / 5)
        #expect(abs((holt.prediction ?? 0) - 120) < 1)
    }

    @Test func rttEstimateSmoothsAndTracksVariation() {
        var rtt = RTTEstimate()
        for i in 0 ..< 100 { rtt.add(i % 2 == 0 ? 40 : 60) }
        #expect(abs(rtt.smoothed - 50) < 3)
        #expect(rtt.variation > 5 && rtt.variation < 15)
        #expect(rtt.minimum == 40)
    }

    @Test func haversine() {
        let london = GeoCoordinate(latitude: 51.5074, longitude: -0.1278)
        let newYork = GeoCoordinate(latitude: 40.7128, longitude: -74.0060)
        #expect(abs(london.distanceKilometres(to: newYork) - 5570) < 15)
        #expect(london.distanceKilometres(to: london) == 0)
    }
}
