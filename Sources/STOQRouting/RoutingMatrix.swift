/// The routing matrix of one node (sans-IO): for every known node its EWMA RTT and
/// variation (when measured), bandwidth, load, region and position, Vivaldi coordinate,
/// gossip hop count and freshness; plus the links other nodes measured.
///
/// Inputs: `handleMeasurement` (PING/PONG results), `handleGossip` (route discovery),
/// `handlePeerState` (health), `handleTimeout`. Outputs: `makeGossip`, `pollSnapshot`,
/// `pollTimeout`. Every `updateInterval` (100 ms) `handleTimeout` publishes an immutable
/// `RoutingSnapshot`: queries run on the snapshot they hold, so updates never block them
/// (copy-on-write: the next snapshot is built from the matrix while readers use the last).
///
/// State lives in flat per-slot arrays; slot 0 is the owner.
public struct RoutingMatrix {
    /// The tuning the matrix was created with.
    public let configuration: RoutingConfiguration
    /// The owner.
    public let selfID: RoutingNodeID
    /// Checks that adverts about other nodes are their own (signed routing); nil: every advert is
    /// taken as it comes (simulations).
    public let verifier: (any RoutingAdvertVerifier)?

    private var ids: [RoutingNodeID] = []
    private var slotOf: [RoutingNodeID: Int32] = [:]
    private var region: [UInt16] = []
    private var geo: [GeoCoordinate] = []
    private var coordinates: [VivaldiCoordinate] = []
    private var load: [Float] = []
    private var bandwidth: [Float] = []
    private var hops: [UInt8] = []
    private var version: [UInt64] = []
    private var lastHeard: [Int64] = []
    private var down: [Bool] = []
    private var usable: [Bool] = []
    private var links: [[LinkRecord]] = []
    private var ownLinks: [Int32: OwnLink] = [:]
    private var proofs: [RoutingAdvertProof?] = []
    private var expires: [Int64] = []

    // Overlay rows: `width` slots per node.
    private let width: Int
    private var overlayTarget: [Int32] = []
    private var overlayLatency: [Float] = []
    private var overlayKilometres: [Float] = []
    private var overlayCount: [UInt8] = []
    private var dirtyRows: [Int32] = []
    private var isDirty: [Bool] = []
    private var refreshCursor = 0
    private var overlayEpoch: UInt64 = 0

    private var snapshotVersion: UInt64 = 0
    private var latest: RoutingSnapshot?
    private var unpolledSnapshot = false
    private var nextPublish: Int64 = 0
    private var gossipCursor = 1
    private var vivaldiErrors: [Float] = []
    private var vivaldiErrorCursor = 0
    private var measurementCount: UInt64 = 0
    private var engine = RouteQueryEngine()

    private struct LinkRecord {
        var target: Int32
        var rtt: Float
        var bandwidth: Float
        var version: UInt64
        var kilometres: Float
    }

    private struct OwnLink {
        var rtt = RTTEstimate()
        var predictor = HoltPredictor()
        var ewmaErrorSum: Double = 0
        var ewmaErrorCount: UInt32 = 0
        var bandwidth: Float = 0
    }

    /// Creates the matrix of node `selfID`.
    ///
    /// - Parameters:
    ///   - selfID: the owner.
    ///   - region: the owner's region.
    ///   - geo: the owner's position.
    ///   - bandwidthBitsPerSecond: the owner's access bandwidth (0 = unknown).
    ///   - configuration: tuning.
    ///   - verifier: with one, the matrix takes an advert about another node only with a proof the
    ///     verifier accepts, newer than what it holds and not expired, and that node's links only
    ///     from its proof (signed routing).
    public init(
        selfID: RoutingNodeID, region: UInt16 = 0, geo: GeoCoordinate = .unknown,
        bandwidthBitsPerSecond: Float = 0, configuration: RoutingConfiguration = RoutingConfiguration(),
        verifier: (any RoutingAdvertVerifier)? = nil
    ) {
        self.selfID = selfID
        self.verifier = verifier
        self.configuration = configuration
        self.width = max(1, configuration.nearestNeighbours + configuration.longRangeLinks)
        _ = insert(selfID, hops: 0, now: 0)
        self.region[0] = region
        self.geo[0] = geo
        self.bandwidth[0] = bandwidthBitsPerSecond
    }

    // MARK: Reading

    /// Number of nodes known (the owner included).
    public var knownNodeCount: Int { ids.count }

    /// The owner's Vivaldi coordinate.
    public var coordinate: VivaldiCoordinate { coordinates[0] }

    /// The latest published snapshot (publishes one first if none exists yet).
    public mutating func currentSnapshot(now: Duration) -> RoutingSnapshot {
        if let latest { return latest }
        return publish(now: now)
    }

    /// The latest published snapshot, if any.
    public var snapshot: RoutingSnapshot? { latest }

    /// What the matrix knows about `node`.
    public func record(of node: RoutingNodeID) -> RoutingNodeRecord? {
        guard let slot = slotOf[node] else { return nil }
        let s = Int(slot)
        return RoutingNodeRecord(
            node: node, region: region[s], geo: geo[s], coordinate: coordinates[s], load: load[s],
            bandwidthBitsPerSecond: bandwidth[s], hops: hops[s], version: version[s],
            lastHeard: .nanoseconds(lastHeard[s]), measuredRTT: ownLinks[slot]?.rtt, isDown: down[s]
        )
    }

    /// Every node the matrix knows, the owner first.
    public var knownNodes: [RoutingNodeID] { ids }

    /// Prediction quality so far (Holt and EWMA per link, Vivaldi).
    public func predictionReport() -> RoutingPredictionReport {
        var holtSum = 0.0, holtCount = 0.0, ewmaSum = 0.0, ewmaCount = 0.0
        for link in ownLinks.values {
            if link.predictor.samples > 1 {
                holtSum += link.predictor.relativeErrorSum
                holtCount += Double(link.predictor.samples - 1)
            }
            ewmaSum += link.ewmaErrorSum
            ewmaCount += Double(link.ewmaErrorCount)
        }
        let sorted = vivaldiErrors.sorted()
        return RoutingPredictionReport(
            measuredLinks: ownLinks.count,
            holtMeanRelativeError: holtCount > 0 ? holtSum / holtCount : 0,
            ewmaMeanRelativeError: ewmaCount > 0 ? ewmaSum / ewmaCount : 0,
            vivaldiMedianRelativeError: sorted.isEmpty ? 0 : Double(sorted[sorted.count / 2]),
            vivaldiLocalError: coordinates[0].error
        )
    }

    // MARK: Inputs

    /// Sets the owner's load (announced in its next gossip).
    public mutating func setLocalLoad(_ value: Float) {
        if value.isFinite && value >= 0 { load[0] = value }
    }

    /// Feeds one RTT measurement (a PING/PONG result): updates the EWMA RTT and variation,
    /// the Holt predictor, the owner's Vivaldi coordinate (when the peer sent its own), and
    /// the peer's load and bandwidth.
    ///
    /// - Returns: the relative error of the Holt prediction of this sample, if there was one.
    @discardableResult
    public mutating func handleMeasurement(_ measurement: RoutingMeasurement, now: Duration) -> Float? {
        let nowNs = Self.nanoseconds(now)
        let rtt = Float(Self.nanoseconds(measurement.rtt)) / 1e6
        guard rtt > 0, rtt.isFinite, measurement.peer != selfID else { return nil }
        guard let slot = slotOf[measurement.peer] ?? insert(measurement.peer, hops: 1, now: nowNs) else { return nil }
        let s = Int(slot)
        lastHeard[s] = max(lastHeard[s], nowNs)
        hops[s] = 1
        if let region = measurement.region { self.region[s] = region }
        if let geo = measurement.geo, geo.isValid { self.geo[s] = geo }
        if let load = measurement.load, load.isFinite, load >= 0 { self.load[s] = load }

        var own = ownLinks[slot] ?? OwnLink()
        if own.rtt.samples > 0 {
            own.ewmaErrorSum += Double(abs(own.rtt.smoothed - rtt) / rtt)
            own.ewmaErrorCount += 1
        }
        let holtError = own.predictor.observe(rtt)
        own.rtt.add(rtt, alpha: configuration.rttGain, beta: configuration.rttVariationGain)
        if let observed = measurement.bandwidthBitsPerSecond, observed.isFinite, observed > 0 {
            own.bandwidth = own.bandwidth > 0 ? 0.75 * own.bandwidth + 0.25 * observed : observed
        }
        ownLinks[slot] = own

        if let remote = measurement.coordinate, remote.isValid {
            let predicted = coordinates[0].distance(to: remote)
            recordVivaldiError(abs(predicted - rtt) / rtt)
            measurementCount &+= 1
            coordinates[0].update(
                rtt: rtt, remote: remote, configuration: configuration.vivaldi,
                tieBreak: selfID.rawValue ^ measurement.peer.rawValue &+ measurementCount
            )
            coordinates[s] = remote
        }
        let kilometres = Float(geo[0].distanceKilometres(to: geo[s]))
        upsertLink(
            from: 0,
            LinkRecord(target: slot, rtt: own.rtt.smoothed, bandwidth: own.bandwidth, version: UInt64(max(0, nowNs)), kilometres: kilometres)
        )
        return holtError
    }

    /// Health monitoring says a peer is up or down; down nodes carry no routes.
    public mutating func handlePeerState(_ peer: RoutingNodeID, isUp: Bool, now: Duration) {
        guard let slot = slotOf[peer], slot != 0 else { return }
        down[Int(slot)] = !isUp
        if isUp { lastHeard[Int(slot)] = max(lastHeard[Int(slot)], Self.nanoseconds(now)) }
    }

    /// Merges gossip from a peer (route discovery): for each node, the newest version wins;
    /// for equal versions the smaller hop count (sender's + 1) wins. Bounded: invalid
    /// adverts and adverts beyond `maxNodes` are refused.
    public mutating func handleGossip(_ gossip: RoutingGossip, now: Duration) -> RoutingGossipOutcome {
        let nowNs = Self.nanoseconds(now)
        var outcome = RoutingGossipOutcome()
        let limit = configuration.maxAdvertsPerGossip
        var signedSlots: [Int] = []
        for advert in gossip.nodes.prefix(limit) {
            guard advert.node != selfID else { continue }
            guard advert.coordinate.isValid, advert.geo.isValid, advert.load.isFinite, advert.load >= 0,
                  advert.bandwidthBitsPerSecond.isFinite, advert.bandwidthBitsPerSecond >= 0,
                  advert.hops < configuration.maxHops
            else {
                outcome.rejected += 1
                continue
            }
            let newHops = advert.node == gossip.sender ? 1 : advert.hops + 1
            // Signed routing: an advert newer than what the matrix holds counts only with a valid,
            // unexpired proof (checked after the cheap staleness test, so a replay costs nothing).
            func authentic() -> Bool {
                guard let verifier else { return true }
                guard let proof = advert.proof, Self.nanoseconds(proof.expiresAt) > nowNs,
                      verifier.verify(advert, proof: proof, now: now)
                else {
                    outcome.rejected += 1
                    outcome.unverified += 1
                    return false
                }
                return true
            }
            if let slot = slotOf[advert.node] {
                let s = Int(slot)
                if advert.version > version[s] {
                    guard authentic() else { continue }
                    apply(advert, to: s, hops: newHops, now: nowNs)
                    signedSlots.append(s)
                    outcome.acceptedNodes += 1
                } else if advert.version == version[s] && newHops < hops[s]
                            && (verifier == nil || (advert.proof != nil && advert.proof?.fingerprint == proofs[s]?.fingerprint)) {
                    hops[s] = newHops
                    lastHeard[s] = max(lastHeard[s], nowNs - Int64(advert.ageMilliseconds) * 1_000_000)
                    outcome.acceptedNodes += 1
                } else {
                    outcome.stale += 1
                }
            } else if !authentic() {
                continue
            } else if let slot = insert(advert.node, hops: newHops, now: nowNs - Int64(advert.ageMilliseconds) * 1_000_000) {
                apply(advert, to: Int(slot), hops: newHops, now: nowNs)
                signedSlots.append(Int(slot))
                outcome.acceptedNodes += 1
            } else {
                outcome.rejected += 1
            }
        }
        if gossip.nodes.count > limit { outcome.rejected += gossip.nodes.count - limit }
        if verifier != nil {
            for s in signedSlots { applySignedLinks(s) }
            // Signed routing: a node's links travel only inside its own signed advert.
            outcome.rejected += gossip.links.count
            outcome.unverified += gossip.links.count
            return outcome
        }
        for advert in gossip.links.prefix(limit) {
            guard advert.from != selfID else { continue }
            guard advert.rttMilliseconds.isFinite, advert.rttMilliseconds > 0,
                  advert.bandwidthBitsPerSecond.isFinite, advert.bandwidthBitsPerSecond >= 0,
                  let from = slotOf[advert.from], let to = slotOf[advert.to], from != to
            else {
                outcome.rejected += 1
                continue
            }
            let kilometres = Float(geo[Int(from)].distanceKilometres(to: geo[Int(to)]))
            let record = LinkRecord(
                target: to, rtt: advert.rttMilliseconds, bandwidth: advert.bandwidthBitsPerSecond,
                version: advert.version, kilometres: kilometres
            )
            if upsertLink(from: Int(from), record) { outcome.acceptedLinks += 1 } else { outcome.stale += 1 }
        }
        if gossip.links.count > limit { outcome.rejected += gossip.links.count - limit }
        return outcome
    }

    /// Builds the next gossip message: the owner's advert and measured links, then the next
    /// `gossipNodesPerMessage` known fresh nodes (round robin) with some of their links.
    public mutating func makeGossip(now: Duration) -> RoutingGossip {
        let nowNs = Self.nanoseconds(now)
        version[0] = max(version[0] + 1, UInt64(max(0, nowNs)))
        lastHeard[0] = nowNs
        var nodes = [advert(of: 0, now: nowNs)]
        var linkAdverts: [RoutingLinkAdvert] = []
        for link in links[0] { linkAdverts.append(linkAdvert(from: 0, link)) }
        let signed = verifier != nil
        let count = ids.count
        var scanned = 0
        while nodes.count <= configuration.gossipNodesPerMessage && scanned < count - 1 {
            if gossipCursor >= count { gossipCursor = 1 }
            let s = gossipCursor
            gossipCursor += 1
            scanned += 1
            guard !down[s], nowNs - lastHeard[s] <= Self.nanoseconds(configuration.staleAfter), nowNs < expires[s] else { continue }
            if signed {
                // Only what the node signed travels on, unchanged (its links are inside the proof).
                guard proofs[s] != nil else { continue }
                nodes.append(advert(of: s, now: nowNs))
                continue
            }
            nodes.append(advert(of: s, now: nowNs))
            for link in links[s].prefix(configuration.gossipLinksPerNode) { linkAdverts.append(linkAdvert(from: s, link)) }
        }
        return RoutingGossip(sender: selfID, nodes: nodes, links: linkAdverts)
    }

    /// When `handleTimeout(now:)` should next run (the next publish).
    public func pollTimeout() -> Duration { .nanoseconds(nextPublish) }

    /// Publishes a snapshot when the update interval has passed.
    public mutating func handleTimeout(now: Duration) {
        if Self.nanoseconds(now) >= nextPublish { publish(now: now) }
    }

    /// The snapshot published since the last call, if any (hand it to query threads).
    public mutating func pollSnapshot() -> RoutingSnapshot? {
        guard unpolledSnapshot else { return nil }
        unpolledSnapshot = false
        return latest
    }

    /// Builds and publishes a snapshot now: refreshes up to `overlayRowsPerUpdate` overlay
    /// rows (new nodes first), decides which nodes are usable, and lays the graph out as CSR.
    @discardableResult
    public mutating func publish(now: Duration) -> RoutingSnapshot {
        let nowNs = Self.nanoseconds(now)
        refreshUsable(nowNs)
        refreshOverlay(budget: configuration.overlayRowsPerUpdate)
        let snapshot = buildSnapshot()
        latest = snapshot
        unpolledSnapshot = true
        nextPublish = nowNs + Self.nanoseconds(configuration.updateInterval)
        return snapshot
    }

    /// Recomputes every overlay row now (e.g. after loading a large table at start).
    public mutating func rebuildOverlay(now: Duration) {
        refreshUsable(Self.nanoseconds(now))
        refreshOverlay(budget: ids.count)
    }

    // MARK: Queries on the latest snapshot

    /// Ranks candidate sources for fetching `size` bytes to the owner, cheapest first.
    public mutating func rankSources(
        for candidates: [RoutingNodeID], size: Int, weights: RouteCostWeights = RouteCostWeights(), now: Duration
    ) -> [RankedSource] {
        let snapshot = currentSnapshot(now: now)
        return engine.rankSources(in: snapshot, candidates: candidates, size: size, weights: weights)
    }

    /// The cheapest route from the owner to `destination` (direct or through relays).
    public mutating func route(
        to destination: RoutingNodeID, size: Int, weights: RouteCostWeights = RouteCostWeights(), now: Duration
    ) -> Route? {
        let snapshot = currentSnapshot(now: now)
        return engine.route(in: snapshot, from: selfID, to: destination, size: size, weights: weights)
    }

    // MARK: Internals

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Predicted RTT (ms) between two nodes: Vivaldi when both coordinates are trained,
    /// else a geographic estimate (fibre at ~100 km per ms of RTT, 1.5x path stretch, 10 ms access).
    @inline(__always)
    static func predictLatency(_ a: VivaldiCoordinate, _ b: VivaldiCoordinate, _ ga: GeoCoordinate, _ gb: GeoCoordinate) -> Float {
        if a.error < 0.999 && b.error < 0.999 { return a.distance(to: b) }
        return Float(ga.distanceKilometres(to: gb)) * 0.015 + 10
    }

    private mutating func insert(_ node: RoutingNodeID, hops: UInt8, now: Int64) -> Int32? {
        guard ids.count < configuration.maxNodes || ids.isEmpty else { return nil }
        let slot = Int32(ids.count)
        ids.append(node)
        slotOf[node] = slot
        region.append(0)
        geo.append(.unknown)
        coordinates.append(.origin)
        load.append(0)
        bandwidth.append(0)
        self.hops.append(hops)
        version.append(0)
        lastHeard.append(now)
        down.append(false)
        usable.append(true)
        links.append([])
        proofs.append(nil)
        expires.append(.max)
        overlayTarget.append(contentsOf: repeatElement(0, count: width))
        overlayLatency.append(contentsOf: repeatElement(0, count: width))
        overlayKilometres.append(contentsOf: repeatElement(0, count: width))
        overlayCount.append(0)
        isDirty.append(true)
        dirtyRows.append(slot)
        return slot
    }

    private mutating func apply(_ advert: RoutingNodeAdvert, to s: Int, hops newHops: UInt8, now: Int64) {
        let moved = coordinates[s].error >= 0.999
            || abs(coordinates[s].distance(to: advert.coordinate) - coordinates[s].height - advert.coordinate.height) > 5
        version[s] = advert.version
        hops[s] = newHops
        region[s] = advert.region
        geo[s] = advert.geo
        coordinates[s] = advert.coordinate
        load[s] = advert.load
        bandwidth[s] = advert.bandwidthBitsPerSecond
        lastHeard[s] = max(lastHeard[s], now - Int64(advert.ageMilliseconds) * 1_000_000)
        if let proof = advert.proof, verifier != nil {
            proofs[s] = proof
            expires[s] = Self.nanoseconds(proof.expiresAt)
        }
        if moved && !isDirty[s] {
            isDirty[s] = true
            dirtyRows.append(Int32(s))
        }
    }

    /// Signed routing: sets node `s`'s links to those its proof carries (after every node of the
    /// message is known, so links to nodes announced in the same message count).
    private mutating func applySignedLinks(_ s: Int) {
        guard let proof = proofs[s] else { return }
        let version = self.version[s]
        do {
            // The node's links are what it signed, all of them, and nothing else.
            var signedLinks: [LinkRecord] = []
            for link in proof.links.prefix(configuration.maxLinksPerNode) where link.from == ids[s] {
                guard let target = slotOf[link.to], Int(target) != s, link.rttMilliseconds.isFinite, link.rttMilliseconds > 0,
                      link.bandwidthBitsPerSecond.isFinite, link.bandwidthBitsPerSecond >= 0
                else { continue }
                signedLinks.append(LinkRecord(
                    target: target, rtt: link.rttMilliseconds, bandwidth: link.bandwidthBitsPerSecond, version: version,
                    kilometres: Float(geo[s].distanceKilometres(to: geo[Int(target)]))))
            }
            links[s] = signedLinks
        }
    }

    private func advert(of s: Int, now: Int64) -> RoutingNodeAdvert {
        let age = s == 0 ? 0 : max(0, now - lastHeard[s]) / 1_000_000
        return RoutingNodeAdvert(
            node: ids[s], version: version[s], hops: s == 0 ? 0 : hops[s], region: region[s], geo: geo[s],
            coordinate: coordinates[s], load: load[s], bandwidthBitsPerSecond: bandwidth[s],
            ageMilliseconds: UInt32(clamping: age), proof: s == 0 ? nil : proofs[s]
        )
    }

    private func linkAdvert(from s: Int, _ link: LinkRecord) -> RoutingLinkAdvert {
        RoutingLinkAdvert(
            from: ids[s], to: ids[Int(link.target)], version: link.version, rttMilliseconds: link.rtt,
            bandwidthBitsPerSecond: link.bandwidth
        )
    }

    /// Inserts or refreshes a link; returns false when the stored one is as new or newer.
    @discardableResult
    private mutating func upsertLink(from s: Int, _ record: LinkRecord) -> Bool {
        if let index = links[s].firstIndex(where: { $0.target == record.target }) {
            guard record.version > links[s][index].version || s == 0 else { return false }
            links[s][index] = record
            return true
        }
        if links[s].count >= configuration.maxLinksPerNode {
            // Replace the oldest link.
            var oldest = 0
            for i in links[s].indices where links[s][i].version < links[s][oldest].version { oldest = i }
            guard links[s][oldest].version < record.version else { return false }
            links[s][oldest] = record
        } else {
            links[s].append(record)
        }
        return true
    }

    private mutating func recordVivaldiError(_ error: Float) {
        guard error.isFinite else { return }
        if vivaldiErrors.count < 512 {
            vivaldiErrors.append(error)
        } else {
            vivaldiErrors[vivaldiErrorCursor] = error
            vivaldiErrorCursor = (vivaldiErrorCursor + 1) % vivaldiErrors.count
        }
    }

    private mutating func refreshUsable(_ nowNs: Int64) {
        let stale = Self.nanoseconds(configuration.staleAfter)
        for s in usable.indices {
            usable[s] = s == 0 || (!down[s] && nowNs - lastHeard[s] <= stale && nowNs < expires[s])
        }
    }

    private mutating func refreshOverlay(budget: Int) {
        var remaining = budget
        while remaining > 0, let row = dirtyRows.popLast() {
            isDirty[Int(row)] = false
            computeRow(Int(row))
            remaining -= 1
        }
        let count = ids.count
        var scanned = 0
        while remaining > 0 && scanned < count {
            if refreshCursor >= count {
                refreshCursor = 0
                overlayEpoch &+= 1
            }
            computeRow(refreshCursor)
            refreshCursor += 1
            remaining -= 1
            scanned += 1
        }
    }

    /// k nearest usable nodes of `u` by predicted latency, plus a few pseudo-random far ones.
    private mutating func computeRow(_ u: Int) {
        let base = u * width
        let count = ids.count
        guard usable[u], count > 1 else {
            overlayCount[u] = 0
            return
        }
        let k = configuration.nearestNeighbours
        // Bounded max-heap of the k best (latency, slot).
        var heapLatency: [Float] = []
        var heapSlot: [Int32] = []
        heapLatency.reserveCapacity(k)
        heapSlot.reserveCapacity(k)
        let cu = coordinates[u]
        let gu = geo[u]
        for v in 0 ..< count where v != u && usable[v] {
            let latency = Self.predictLatency(cu, coordinates[v], gu, geo[v])
            if heapLatency.count < k {
                heapLatency.append(latency)
                heapSlot.append(Int32(v))
                var child = heapLatency.count - 1
                while child > 0 {
                    let parent = (child - 1) / 2
                    guard heapLatency[child] > heapLatency[parent] else { break }
                    heapLatency.swapAt(child, parent)
                    heapSlot.swapAt(child, parent)
                    child = parent
                }
            } else if k > 0 && latency < heapLatency[0] {
                heapLatency[0] = latency
                heapSlot[0] = Int32(v)
                var parent = 0
                while true {
                    let left = 2 * parent + 1
                    if left >= k { break }
                    var largest = left
                    if left + 1 < k && heapLatency[left + 1] > heapLatency[left] { largest = left + 1 }
                    guard heapLatency[largest] > heapLatency[parent] else { break }
                    heapLatency.swapAt(largest, parent)
                    heapSlot.swapAt(largest, parent)
                    parent = largest
                }
            }
        }
        var filled = 0
        for i in heapSlot.indices {
            overlayTarget[base + filled] = heapSlot[i]
            overlayLatency[base + filled] = heapLatency[i]
            overlayKilometres[base + filled] = Float(gu.distanceKilometres(to: geo[Int(heapSlot[i])]))
            filled += 1
        }
        // Long-range links: pseudo-random, re-drawn every full refresh cycle.
        var state = configuration.seed ^ (UInt64(u) &* 0x9E37_79B9_7F4A_7C15) ^ (overlayEpoch &* 0xD1B5_4A32_D192_ED03)
        var attempts = 0
        while filled < width && attempts < configuration.longRangeLinks * 4 {
            attempts += 1
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            let v = Int(z % UInt64(count))
            guard v != u, usable[v] else { continue }
            var duplicate = false
            for i in 0 ..< filled where overlayTarget[base + i] == Int32(v) { duplicate = true; break }
            if duplicate { continue }
            overlayTarget[base + filled] = Int32(v)
            overlayLatency[base + filled] = Self.predictLatency(cu, coordinates[v], gu, geo[v])
            overlayKilometres[base + filled] = Float(gu.distanceKilometres(to: geo[v]))
            filled += 1
        }
        overlayCount[u] = UInt8(filled)
    }

    private mutating func buildSnapshot() -> RoutingSnapshot {
        snapshotVersion += 1
        let count = ids.count
        let defaultBandwidth = configuration.defaultBandwidthBitsPerSecond
        var rowStart = [Int32](repeating: 0, count: count + 1)
        var target: [Int32] = []
        var latency: [Float] = []
        var secondsPerBit: [Float] = []
        var kilometres: [Float] = []
        var measured: [Bool] = []
        let estimate = count * (width + 4)
        target.reserveCapacity(estimate)
        latency.reserveCapacity(estimate)
        secondsPerBit.reserveCapacity(estimate)
        kilometres.reserveCapacity(estimate)
        measured.reserveCapacity(estimate)
        func bottleneck(_ u: Int, _ v: Int) -> Float {
            let a = bandwidth[u] > 0 ? bandwidth[u] : defaultBandwidth
            let b = bandwidth[v] > 0 ? bandwidth[v] : defaultBandwidth
            return 1 / min(a, b)
        }
        // k-nearest lists are not symmetric, so a node (or a small cluster) might have no way
        // in. Each node also gets the reverse of the last link of its own row (a long-range link
        // when there is one): every node is entered from a pseudo-random node, which keeps the
        // overlay strongly connected with high probability.
        var reverse: [Int32: [Int32]] = [:]
        for v in 0 ..< count where usable[v] && overlayCount[v] > 0 {
            let w = overlayTarget[v * width + Int(overlayCount[v]) - 1]
            var present = false
            for j in 0 ..< Int(overlayCount[Int(w)]) where overlayTarget[Int(w) * width + j] == Int32(v) { present = true; break }
            if !present { reverse[w, default: []].append(Int32(v)) }
        }
        for u in 0 ..< count {
            rowStart[u] = Int32(target.count)
            guard usable[u] else { continue }
            let measuredLinks = links[u]
            for v in reverse[Int32(u)] ?? [] {
                target.append(v)
                latency.append(Self.predictLatency(coordinates[u], coordinates[Int(v)], geo[u], geo[Int(v)]))
                secondsPerBit.append(bottleneck(u, Int(v)))
                kilometres.append(Float(geo[u].distanceKilometres(to: geo[Int(v)])))
                measured.append(false)
            }
            for link in measuredLinks where usable[Int(link.target)] {
                target.append(link.target)
                latency.append(link.rtt)
                secondsPerBit.append(link.bandwidth > 0 ? 1 / link.bandwidth : bottleneck(u, Int(link.target)))
                kilometres.append(link.kilometres)
                measured.append(true)
            }
            let base = u * width
            for j in 0 ..< Int(overlayCount[u]) {
                let v = overlayTarget[base + j]
                guard usable[Int(v)] else { continue }
                var isMeasured = false
                for link in measuredLinks where link.target == v { isMeasured = true; break }
                if isMeasured { continue }
                target.append(v)
                latency.append(overlayLatency[base + j])
                secondsPerBit.append(bottleneck(u, Int(v)))
                kilometres.append(overlayKilometres[base + j])
                measured.append(false)
            }
        }
        rowStart[count] = Int32(target.count)
        return RoutingSnapshot(
            version: snapshotVersion, selfID: selfID, selfSlot: 0, ids: ids, slotOf: slotOf, load: load,
            bandwidth: bandwidth, geo: geo, region: region, hops: hops, coordinates: coordinates, usable: usable,
            rowStart: rowStart, edgeTarget: target, edgeLatency: latency, edgeSecondsPerBit: secondsPerBit,
            edgeKilometres: kilometres, edgeMeasured: measured, defaultSecondsPerBit: 1 / defaultBandwidth
        )
    }
}

@available(*, unavailable)
extension RoutingMatrix: Sendable {}
