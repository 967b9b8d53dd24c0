import Foundation
import Logging
import STOQEdge
import STOQExchange
import STOQIdentity
import STOQTransport
import STOQWire

/// Told what health probing learns: every answered probe and every change of a peer's state.
/// Called from the probing tasks; keep it quick and non-blocking.
public protocol PeerProbeObserver: Sendable {
    /// A probe of `peer` (whose handshake proved `nodeID`) was answered after `rtt` with `pong`.
    func probeAnswered(peer: PeerAddress, nodeID: NodeID?, rtt: Duration, pong: STOQMessage.Pong)
    /// `peer` went down (probes unanswered) or came back up.
    func peerStateChanged(peer: PeerAddress, isUp: Bool)
}

/// What a node knows about one peer's health, for `stoq status` and metrics.
public struct PeerHealthReport: Sendable, Hashable {
    /// The peer.
    public var peer: PeerAddress
    /// Whether it answers probes.
    public var isUp: Bool
    /// Smoothed PING/PONG round trip (nil before the first answer).
    public var smoothedRTT: Duration?
    /// Probes sent.
    public var probesSent: UInt64
    /// Probes answered in time.
    public var answered: UInt64
    /// Probes that timed out.
    public var timeouts: UInt64
    /// Probes unanswered in a row.
    public var consecutiveFailures: Int
    /// Answers that came after their timeout (counted as misses).
    public var lateAnswers: UInt64 = 0

    /// One line for logs and `stoq get`: state, probes, misses and the smoothed RTT.
    public var summary: String {
        let rtt = smoothedRTT.map { String(format: ", srtt %.1f ms", Double($0.nanoseconds) / 1e6) } ?? ""
        return "\(peer) \(isUp ? "up" : "down"): \(probesSent) probes, \(answered) answered, \(timeouts) timed out, \(lateAnswers) late\(rtt)"
    }
}

/// Health probing settings of a node (`health` in the node configuration). Defaults are
/// DESIGN.md's: a probe per peer every second, 100 ms to answer, 3 misses mark a peer down.
public struct HealthSettings: Codable, Sendable, Hashable {
    /// Time between probes of one peer, ms (default 1000).
    public var intervalMilliseconds: Int?
    /// How long a probe may take, ms (default 100; must be below the interval).
    public var timeoutMilliseconds: Int?
    /// Consecutive misses that mark a peer down (default 3).
    public var failureThreshold: Int?
    /// Consecutive answers that mark a down peer up (default 1).
    public var recoveryThreshold: Int?
    /// Set false to switch probing off.
    public var enabled: Bool?

    /// Creates settings (nil fields take the defaults).
    public init(intervalMilliseconds: Int? = nil, timeoutMilliseconds: Int? = nil, failureThreshold: Int? = nil, recoveryThreshold: Int? = nil, enabled: Bool? = nil) {
        self.intervalMilliseconds = intervalMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.failureThreshold = failureThreshold
        self.recoveryThreshold = recoveryThreshold
        self.enabled = enabled
    }

    /// The monitor configuration these settings describe.
    /// - Throws: ``NodeError`` `.invalidArgument` for values the monitor cannot use.
    public func monitorConfiguration() throws -> HealthMonitor<PeerAddress>.Configuration {
        let interval = intervalMilliseconds ?? 1000
        let timeout = timeoutMilliseconds ?? 100
        let failures = failureThreshold ?? 3
        let recovery = recoveryThreshold ?? 1
        guard timeout > 0, interval > timeout else {
            throw NodeError(.invalidArgument, "health: the probe timeout (\(timeout) ms) must be positive and below the interval (\(interval) ms)")
        }
        guard failures >= 1, recovery >= 1 else {
            throw NodeError(.invalidArgument, "health: failure and recovery thresholds are at least 1")
        }
        return .init(
            interval: UInt64(interval) * 1_000_000, timeout: UInt64(timeout) * 1_000_000,
            failureThreshold: failures, recoveryThreshold: recovery)
    }
}

/// Runs a sans-IO ``HealthMonitor`` over a node's peer connections: it sends the monitor's
/// probes as PING on the ``PeerSet``'s connections, feeds the PONGs back with the real clock,
/// and announces each change of state at once to every subscriber of ``changes()``, to the
/// ``PeerSet`` (``PeerSet/isDown(_:)``, ``PeerSet/healthyFirst(_:)`` for choosing among peers),
/// and to the node's metrics.
///
/// A probe whose connection fails drops it from the peer set, so the next probe dials again and
/// finds the peer when it returns. Marking a peer down does not close its connection: transfers
/// running on it finish if the peer was only slow to answer.
public actor PeerHealthService {
    private var monitor: HealthMonitor<PeerAddress>
    private let peers: PeerSet
    private let metrics: NodeMetrics?
    private let logger: Logger
    private let origin = ContinuousClock.now
    private var subscribers: [UUID: AsyncStream<PeerHealthChange>.Continuation] = [:]
    private var wake: AsyncStream<Void>.Continuation?
    private var timer: Task<Void, Never>?
    /// The deadline the timer was armed for: how late it fires is this node's own scheduling lag.
    private var armedDeadline: UInt64?
    private var probes: [PeerAddress: Task<Void, Never>] = [:]
    private var stopped = false
    private var watching = Set<PeerAddress>()
    private let observer: (any PeerProbeObserver)?

    /// Creates a service probing through `peers`.
    /// - Parameter observer: told every answered probe (RTT and PONG) and every change of state
    ///   (a node's router).
    public init(
        peers: PeerSet, configuration: HealthMonitor<PeerAddress>.Configuration = .init(), metrics: NodeMetrics? = nil,
        observer: (any PeerProbeObserver)? = nil, logger: Logger = Logger(label: "stoq.health")
    ) {
        self.observer = observer
        self.peers = peers
        self.monitor = HealthMonitor(configuration: configuration, nonceSeed: UInt64.random(in: 1 ... .max))
        self.metrics = metrics
        self.logger = logger
    }

    private nonisolated func now() -> UInt64 { UInt64(max(0, (ContinuousClock.now - origin).nanoseconds)) }

    /// Starts probing `peer`: it dials first (for at most one probe interval) so the first RTT
    /// sample measures a round trip, not a handshake; then the first probe goes out.
    public func watch(_ peer: PeerAddress) async {
        guard !stopped, monitor.health(of: peer) == nil, watching.insert(peer).inserted else { return }
        let peers = self.peers
        let interval = monitor.configuration.interval
        let (ready, signal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        Task {  // the dial goes on in the peer set if the interval ends first
            _ = try? await peers.client(for: peer)
            signal.yield()
        }
        let timer = Task {
            try? await Task.sleep(for: .nanoseconds(Int64(interval)))
            signal.yield()
        }
        for await _ in ready { break }
        timer.cancel()
        guard !stopped, watching.contains(peer) else { return }
        monitor.addPeer(peer, now: now())
        metrics?.peerHealth(peer.description, isUp: true, rttSeconds: nil)
        drain()
        wake?.yield()
    }

    /// Stops probing `peer`.
    public func unwatch(_ peer: PeerAddress) {
        watching.remove(peer)
        monitor.removePeer(peer)
        probes.removeValue(forKey: peer)?.cancel()
    }

    /// Whether `peer` answers probes (peers not watched count as up).
    public func isUp(_ peer: PeerAddress) -> Bool {
        monitor.health(of: peer)?.isUp ?? true
    }

    /// Every watched peer's health.
    public func snapshot() -> [PeerHealthReport] {
        monitor.peers.compactMap { peer in
            monitor.health(of: peer).map { h in
                PeerHealthReport(
                    peer: peer, isUp: h.isUp, smoothedRTT: h.smoothedRTT.map { .nanoseconds(Int64($0)) },
                    probesSent: h.probesSent, answered: h.answered, timeouts: h.timeouts, consecutiveFailures: h.consecutiveFailures,
                    lateAnswers: h.lateAnswers)
            }
        }.sorted { $0.peer.description < $1.peer.description }
    }

    /// State changes from now on, delivered as they happen; the stream ends when the service stops.
    public func changes() -> AsyncStream<PeerHealthChange> {
        let (stream, continuation) = AsyncStream<PeerHealthChange>.makeStream()
        if stopped {
            continuation.finish()
            return stream
        }
        let id = UUID()
        subscribers[id] = continuation
        continuation.onTermination = { _ in Task { await self.unsubscribe(id) } }
        return stream
    }

    private func unsubscribe(_ id: UUID) { subscribers[id] = nil }

    /// Probes until ``stop()``.
    public func run() async {
        guard !stopped else { return }
        let (wakeups, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wake = continuation
        continuation.yield()
        for await _ in wakeups {
            if stopped { break }
            let t = now()
            // Slowness is not death: a timer that fired late means this node was starved of CPU,
            // and an answer may be waiting unread; the monitor extends the probes' timeouts by it.
            if let deadline = armedDeadline, t > deadline { monitor.handleSchedulingLag(t - deadline, now: t) }
            armedDeadline = nil
            monitor.handleTimeout(now: t)
            drain()
            arm()
        }
        timer?.cancel()
    }

    /// Stops probing and ends every ``changes()`` stream.
    public func stop() {
        stopped = true
        timer?.cancel()
        wake?.finish()
        for task in probes.values { task.cancel() }
        probes.removeAll()
        for continuation in subscribers.values { continuation.finish() }
        subscribers.removeAll()
    }

    private func arm() {
        timer?.cancel()
        guard let deadline = monitor.pollTimeout(), let wake else { return }
        armedDeadline = deadline
        let delay = Int64(deadline) - Int64(now())
        timer = Task {
            if delay > 0 { try? await Task.sleep(for: .nanoseconds(delay)) }
            if !Task.isCancelled { wake.yield() }
        }
    }

    /// A probe was answered at `receivedAt` (stamped where the answer was read, not when this actor
    /// got to it); it went out `sendDelay` after the monitor asked for it.
    private func answered(_ peer: PeerAddress, nonce: UInt64, receivedAt: UInt64, sendDelay: UInt64) {
        guard !stopped else { return }
        let t = now()
        if sendDelay > 0 { monitor.handleSchedulingLag(sendDelay, now: t) }
        monitor.handleProbeResponse(from: peer, nonce: nonce, now: min(receivedAt, t))
        if let h = monitor.health(of: peer) {
            metrics?.peerHealth(peer.description, isUp: h.isUp, rttSeconds: h.smoothedRTT.map { $0 / 1e9 })
        }
        drain()
        wake?.yield()
    }

    private func drain() {
        while let action = monitor.pollAction() {
            switch action {
            case .sendProbe(let peer, let nonce):
                // One probe per peer in flight: a newer probe replaces an unanswered one.
                probes[peer]?.cancel()
                let peers = self.peers
                let observer = self.observer
                let asked = now()
                probes[peer] = Task {
                    do {
                        let answer = try await self.sendProbe(to: peer, nonce: nonce, askedAt: asked, peers: peers)
                        observer?.probeAnswered(peer: peer, nodeID: answer.client.authenticatedPeer, rtt: answer.rtt, pong: answer.pong)
                        self.answered(peer, nonce: nonce, receivedAt: answer.receivedAt, sendDelay: answer.sendDelay)
                    } catch is CancellationError {
                    } catch is STOQError {
                        // The connection is gone: dial afresh for the next probe.
                        if !Task.isCancelled { await peers.drop(peer) }
                    } catch {
                        // No answer; the monitor's timeout counts it.
                    }
                }
            }
        }
        while let event = monitor.pollEvent() {
            let change: PeerHealthChange
            switch event {
            case .peerDown(let peer): change = PeerHealthChange(peer: peer, isUp: false)
            case .peerUp(let peer): change = PeerHealthChange(peer: peer, isUp: true)
            }
            announce(change)
        }
    }

    /// Sends one probe off the actor and stamps the answer where it is read, so a busy actor (or a
    /// starved process catching up) does not turn an answer that came in time into a late one.
    private nonisolated func sendProbe(
        to peer: PeerAddress, nonce: UInt64, askedAt: UInt64, peers: PeerSet
    ) async throws -> (client: PeerClient, rtt: Duration, pong: STOQMessage.Pong, receivedAt: UInt64, sendDelay: UInt64) {
        let started = now()
        let client = try await peers.client(for: peer)
        let (rtt, pong) = try await client.probe(nonce: nonce)
        return (client, rtt, pong, now(), started > askedAt ? started - askedAt : 0)
    }

    private func announce(_ change: PeerHealthChange) {
        if change.isUp {
            logger.notice("peer up", metadata: ["peer": "\(change.peer)"])
        } else {
            logger.warning("peer down: \(monitor.configuration.failureThreshold) probes unanswered", metadata: ["peer": "\(change.peer)"])
        }
        let h = monitor.health(of: change.peer)
        metrics?.peerHealth(change.peer.description, isUp: change.isUp, rttSeconds: h?.smoothedRTT.map { $0 / 1e9 })
        metrics?.peerStateChange(change.peer.description, isUp: change.isUp)
        peers.downPeers.set(change.peer, down: !change.isUp)
        observer?.peerStateChanged(peer: change.peer, isUp: change.isUp)
        for continuation in subscribers.values { continuation.yield(change) }
    }
}
