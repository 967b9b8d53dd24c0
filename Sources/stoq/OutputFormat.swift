import Foundation
import Nexus
import STOQ

// Values formatted for people: what stoq prints instead of Swift's own descriptions (no enum or
// struct dumps, no dictionaries in random key order).

/// Ids are printed one way everywhere: a content id held as a Nexus hash prints as `put` prints
/// it (`stoq:` + base32), never as hex.
func contentText(_ id: NexusHash) -> String {
    ChunkID(bytes: id.bytes).map { ContentID($0).description } ?? "stoq:\(id)"
}

/// A service selection's reason in words (`latency 7.02 ms`), not a Swift enum dump.
func basisText(_ basis: ServiceSelection.Basis) -> String {
    switch basis {
    case .latency(let ms): return String(format: "lowest latency, %.2f ms", ms)
    case .proximity(let km): return String(format: "nearest, %.0f km", km)
    case .arbitrary: return "no latency or location known: first healthy node"
    }
}

/// A DHT's counters as `key=value` words (`dht_served=3 dht_sent=5 …`).
func dhtCountersText(_ c: NexusDHT.Counters) -> String {
    "dht_served=\(c.served) dht_sent=\(c.sent) dht_answered=\(c.answered) dht_unreachable=\(c.unreachable) dht_refused=\(c.refused)"
}

/// A value of a JSON document in words: objects as `key=value` pairs in key order, lists joined
/// by commas, never a Swift dictionary dump.
func humanValue(_ value: Any) -> String {
    switch value {
    case let d as [String: Any]:
        return d.keys.sorted().map { "\($0)=\(humanValue(d[$0]!))" }.joined(separator: " ")
    case let a as [Any]:
        return a.map(humanValue).joined(separator: ", ")
    case is NSNull:
        return "-"
    default:
        return "\(value)"
    }
}
