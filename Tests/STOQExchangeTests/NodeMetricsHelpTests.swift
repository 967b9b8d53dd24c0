import Testing
@testable import STOQExchange

/// Every metric family a node exports carries a `# HELP` line (issue 14, "an operator's view").
@Suite struct NodeMetricsHelpTests {
    @Test func everyFamilyHasAHelpLineBeforeItsType() {
        let metrics = NodeMetrics()
        metrics.request("ping")
        metrics.receivedFault("corrupt")
        metrics.throttleWait("bulk")
        metrics.peerHealth("[::1]:4433", isUp: true, rttSeconds: 0.001)
        metrics.peerStateChange("[::1]:4433", isUp: true)
        metrics.routingGossip("sent")
        metrics.syncCache(hits: 1, misses: 1)
        metrics.servedBytes.increment(by: 10)
        let lines = metrics.render().split(separator: "\n")
        let types = lines.indices.filter { lines[$0].hasPrefix("# TYPE ") }
        #expect(types.count >= 10)
        for i in types {
            let name = lines[i].split(separator: " ")[2]
            #expect(i > 0 && lines[i - 1].hasPrefix("# HELP \(name) "), "no HELP for \(name)")
            #expect(NodeMetrics.help[String(name)] != nil, "\(name) is not described in NodeMetrics.help")
        }
    }

    @Test func aFamilyMissingFromTheTableStillGetsAHelpLine() {
        let text = "# TYPE stoq_new_thing_total counter\nstoq_new_thing_total 1\n"
        #expect(NodeMetrics.addingHelp(to: text).hasPrefix("# HELP stoq_new_thing_total stoq new thing total\n# TYPE"))
        let described = "# HELP x y\n# TYPE x counter\nx 1"
        #expect(NodeMetrics.addingHelp(to: described) == described)
    }
}
