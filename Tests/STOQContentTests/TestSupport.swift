import Foundation
@testable import STOQContent
import STOQSimulation

/// Deterministic PRNG for seeded tests; the seed is printed on failure by each test.
typealias SeededRNG = SplitMix64

extension SplitMix64 {
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var i = 0
        while i < n {
            var v = next()
            for _ in 0..<8 where i < n { out[i] = UInt8(truncatingIfNeeded: v); v >>= 8; i += 1 }
        }
        return out
    }
}

/// Text-like bytes with repetition (closer to real files than noise).
func textLike(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRNG(seed: seed)
    let words = ["stoq", "chunk", "manifest", "quic", "content", "store", "the", "and", "of", "delivery", "network", "\n", "    ", "func", "let", "var"].map { Array($0.utf8) }
    var out = [UInt8]()
    out.reserveCapacity(n)
    while out.count < n {
        out += words[Int(rng.next() % UInt64(words.count))]
        out.append(rng.next() % 7 == 0 ? 10 : 32)
        if rng.next() % 13 == 0 { out += Array(String(rng.next() % 100_000).utf8) }
    }
    return Array(out.prefix(n))
}

/// A fresh temporary directory.
func tempDir(_ label: String = "stoq") -> String {
    let p = NSTemporaryDirectory() + "/\(label)-\(UInt64.random(in: 0...UInt64.max))"
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}
