extension RoutingSnapshot {
    /// The RTT in milliseconds of the measured link `from → to` (measured by `from` itself, or
    /// announced by it in gossip), or nil when the snapshot holds no such measured link.
    public func measuredLatency(from a: RoutingNodeID, to b: RoutingNodeID) -> Float? {
        guard let u = slotOf[a], let v = slotOf[b], let e = edgeIndex(Int(u), Int(v)), edgeMeasured[e] else { return nil }
        return edges[e].latency
    }
}
