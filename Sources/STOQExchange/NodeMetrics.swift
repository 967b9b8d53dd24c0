import CoreMetrics
import Foundation
import Prometheus

/// A node's metrics (DESIGN.md §9): swift-metrics handles made by a Prometheus factory, so
/// ``AdminServer`` can export them at `/metrics`.
///
/// Each node has its own registry (a process may run several nodes, as tests do); `stoq node`
/// also bootstraps the global `MetricsSystem` with the same factory so metrics of other
/// modules land beside these.
///
/// Names (all prefixed `stoq_`): `connections` (open), `connections_accepted_total`,
/// `requests_total{type}`, `served_bytes_total`, `received_bytes_total`, `cache_hits_total`,
/// `cache_misses_total`, `active_transfers`, `serve_duration_seconds` and
/// `chunk_fetch_duration_seconds` (histograms), `peer_up{peer}`, `peer_rtt_seconds{peer}`,
/// `peer_state_changes_total{peer,state}`, `throttle_waits_total{class}`,
/// `received_faults_total{kind}`, `store_chunks`, `store_bytes`, `routing_known_nodes`,
/// `routing_gossip_total{direction}` (`sent`, `received`, `rejected`).
public final class NodeMetrics: Sendable {
    /// The registry the admin endpoint renders.
    public let registry: PrometheusCollectorRegistry
    /// The factory that makes this node's metrics (give it to `MetricsSystem.bootstrap` to route
    /// every module's metrics to the same registry).
    public let factory: PrometheusMetricsFactory

    package let connectionsOpen: Meter
    package let connectionsAccepted: CoreMetrics.Counter
    package let servedBytes: CoreMetrics.Counter
    package let receivedBytes: CoreMetrics.Counter
    package let cacheHits: CoreMetrics.Counter
    package let cacheMisses: CoreMetrics.Counter
    package let activeTransfers: Meter
    package let serveDuration: CoreMetrics.Timer
    package let fetchDuration: CoreMetrics.Timer
    package let storeChunks: Meter
    package let storeBytes: Meter
    package let routingKnownNodes: Meter
    private let synced = SyncedCounters()

    /// Creates the metrics in a new registry.
    public convenience init() {
        self.init(registry: PrometheusCollectorRegistry())
    }

    /// Creates the metrics in `registry`.
    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        // Chunk transfers on a LAN take from tens of microseconds to seconds.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        self.factory = factory
        connectionsOpen = Meter(label: "stoq_connections", factory: factory)
        connectionsAccepted = CoreMetrics.Counter(label: "stoq_connections_accepted_total", factory: factory)
        servedBytes = CoreMetrics.Counter(label: "stoq_served_bytes_total", factory: factory)
        receivedBytes = CoreMetrics.Counter(label: "stoq_received_bytes_total", factory: factory)
        cacheHits = CoreMetrics.Counter(label: "stoq_cache_hits_total", factory: factory)
        cacheMisses = CoreMetrics.Counter(label: "stoq_cache_misses_total", factory: factory)
        activeTransfers = Meter(label: "stoq_active_transfers", factory: factory)
        serveDuration = CoreMetrics.Timer(label: "stoq_serve_duration_seconds", factory: factory)
        fetchDuration = CoreMetrics.Timer(label: "stoq_chunk_fetch_duration_seconds", factory: factory)
        storeChunks = Meter(label: "stoq_store_chunks", factory: factory)
        storeBytes = Meter(label: "stoq_store_bytes", factory: factory)
        routingKnownNodes = Meter(label: "stoq_routing_known_nodes", factory: factory)
    }

    /// Counts one request of `type` (`get_chunk`, `ping`, `status`, `service`, `malformed`, …).
    package func request(_ type: String) {
        CoreMetrics.Counter(label: "stoq_requests_total", dimensions: [("type", type)], factory: factory).increment()
    }

    /// Counts a bad answer received from a peer (`corrupt`, `truncated`, `protocol`).
    package func receivedFault(_ kind: String) {
        CoreMetrics.Counter(label: "stoq_received_faults_total", dimensions: [("kind", kind)], factory: factory).increment()
    }

    /// Counts a response that had to wait for the serve throttle.
    package func throttleWait(_ priority: String) {
        CoreMetrics.Counter(label: "stoq_throttle_waits_total", dimensions: [("class", priority)], factory: factory).increment()
    }

    /// Records a peer's health state and smoothed RTT.
    package func peerHealth(_ peer: String, isUp: Bool, rttSeconds: Double?) {
        Meter(label: "stoq_peer_up", dimensions: [("peer", peer)], factory: factory).set(isUp ? 1 : 0)
        if let rttSeconds {
            Meter(label: "stoq_peer_rtt_seconds", dimensions: [("peer", peer)], factory: factory).set(rttSeconds)
        }
    }

    /// Counts a peer's change of state.
    package func peerStateChange(_ peer: String, isUp: Bool) {
        CoreMetrics.Counter(label: "stoq_peer_state_changes_total", dimensions: [("peer", peer), ("state", isUp ? "up" : "down")], factory: factory)
            .increment()
    }

    /// Counts a routing gossip message `sent`, `received` (applied) or `rejected`.
    package func routingGossip(_ direction: String) {
        CoreMetrics.Counter(label: "stoq_routing_gossip_total", dimensions: [("direction", direction)], factory: factory).increment()
    }

    /// Brings the cache counters up to the edge's totals (called before each scrape: the edge
    /// keeps its own counters, these export them as Prometheus counters).
    package func syncCache(hits: Int, misses: Int) {
        let (dh, dm) = synced.advance(hits: hits, misses: misses)
        if dh > 0 { cacheHits.increment(by: dh) }
        if dm > 0 { cacheMisses.increment(by: dm) }
    }

    /// Routes the process-wide `MetricsSystem` to this registry (call once per process, before
    /// any other module makes metrics).
    public func bootstrapMetricsSystem() {
        MetricsSystem.bootstrap(factory)
    }

    /// The Prometheus text exposition of every metric, each family with its `# HELP` line.
    public func render() -> String { Self.addingHelp(to: registry.emitToString()) }

    /// What each metric family means, for its `# HELP` line (`docs/OPERATIONS.md` lists them too).
    public static let help: [String: String] = [
        "stoq_connections": "QUIC connections open now (accepted and dialled).",
        "stoq_connections_accepted_total": "QUIC connections accepted since the node started.",
        "stoq_served_bytes_total": "Chunk bytes this node served to peers (continues across restarts from STORE/counters.json).",
        "stoq_received_bytes_total": "Chunk bytes this node fetched from peers.",
        "stoq_cache_hits_total": "Chunk requests an edge answered from its cache (continues across restarts).",
        "stoq_cache_misses_total": "Chunk requests an edge had to fetch from upstream (continues across restarts).",
        "stoq_active_transfers": "Chunk responses being sent now.",
        "stoq_serve_duration_seconds": "Time to serve one chunk, from request to the last byte acknowledged.",
        "stoq_chunk_fetch_duration_seconds": "Time to fetch one chunk from a peer.",
        "stoq_store_chunks": "Chunks in the node's store.",
        "stoq_store_bytes": "Bytes in the node's store.",
        "stoq_routing_known_nodes": "Nodes in the routing table.",
        "stoq_requests_total": "Requests received, by type (get_chunk, ping, status, malformed, ...).",
        "stoq_received_faults_total": "Bad answers received from peers, by kind (corrupt, truncated, protocol).",
        "stoq_throttle_waits_total": "Responses that waited for the serve rate limit, by priority class.",
        "stoq_peer_up": "1 when the peer answers health probes, 0 when it is down.",
        "stoq_peer_rtt_seconds": "The peer's smoothed round-trip time.",
        "stoq_peer_state_changes_total": "Times a peer went up or down.",
        "stoq_routing_gossip_total": "Routing gossip messages sent, received (applied) or rejected.",
    ]

    /// `text` with a `# HELP` line before each `# TYPE` line that has none: the text from
    /// ``help``, or for a family not listed there, its name in words (never no line at all).
    public static func addingHelp(to text: String) -> String {
        var out: [Substring] = []
        var previous: Substring = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), !previous.hasPrefix("# HELP ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                let words = help[name] ?? name.replacingOccurrences(of: "_", with: " ")
                out.append(Substring("# HELP \(name) \(words)"))
            }
            out.append(line)
            previous = line
        }
        return out.joined(separator: "\n")
    }
}

/// The edge totals already exported.
///
/// `@unchecked Sendable`: state behind `lock`.
private final class SyncedCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var hits = 0
    private var misses = 0
    package func advance(hits h: Int, misses m: Int) -> (Int, Int) {
        lock.withLock {
            defer { hits = max(hits, h); misses = max(misses, m) }
            return (h - hits, m - misses)
        }
    }
}
