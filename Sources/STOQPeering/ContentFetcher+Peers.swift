import Logging
import STOQContent
import STOQExchange
import STOQRouting
import STOQSwarm

extension ContentFetcher {
    /// Fetches `root` into `store` from the peers at `addresses`, dialled through `peers`, with
    /// `health` probing every source while it runs (DESIGN.md §5 "Health"): a source that stops
    /// answering probes is reported down and loses its requests to the others at once, whatever
    /// the swarm's own stall timers say. `health` must be running (``PeerHealthService/run()``);
    /// nil fetches without probing. A node's fetch (``Node/fetch(_:from:configuration:onProgress:onEvent:)``)
    /// and `stoq get --peers` both come here.
    /// - Parameters:
    ///   - configuration: scheduler settings.
    ///   - onProgress: called as chunks arrive.
    ///   - onEvent: human-readable notes (skipped peers, bans, failovers, health changes).
    ///   - router: ranks the sources by route cost when there are several (a peer it has not
    ///     measured yet is measured first: ``NodeRouter/measure(_:rounds:timeout:)``); nil: the
    ///     sources are asked in the order given.
    /// A source whose connection fails mid-fetch is down, not gone: its requests move to the
    /// others at once, it is dialled again with backoff (``SwarmConfiguration/redialBackoff`` up to
    /// ``SwarmConfiguration/maxRedialBackoff``) and gets requests again once a dial succeeds; only
    /// after ``SwarmConfiguration/downSourceLimit`` unreachable does it stop counting (a fetch with
    /// no live source waits that long, then fails naming the peers and what was tried).
    /// - Throws: ``NodeError`` `.unavailable` when no peer can be reached; the fetch's errors.
    public static func fetch(
        _ root: ContentID, from addresses: [PeerAddress], peers: PeerSet, health: PeerHealthService?, store: any ChunkStore,
        configuration: SwarmConfiguration = .init(), logger: Logger = Logger(label: "stoq.fetch"),
        onProgress: (@Sendable (SwarmProgress) -> Void)? = nil, onEvent: (@Sendable (String) -> Void)? = nil,
        router: NodeRouter? = nil
    ) async throws -> FetchReport {
        // Dial every peer at once: a dead address waits out the handshake timeout, and must not
        // hold up the others. The fetch starts once every dial ended, or once one succeeded and
        // the others had a moment more (``dialGrace(afterFirst:)``): a peer that has not answered
        // by then is left out of this fetch with a note (it is most likely down; before, a dead
        // peer in the list held the whole fetch, and the user's screen, for the handshake timeout).
        // Sources keep the order given.
        //
        // Each dial builds its whole answer after its last `await`, then yields it (never
        // `return (position, .success(try await …))` from a task-group child: Swift 6.3.1
        // miscompiles that shape in release builds — SILGen writes `position` into the child's
        // indirect result before the `try await`, and LLVM's dead-store elimination deletes that
        // store on the normal path, so the group handed back garbage as `position`). The index is
        // still checked: a bad one is skipped.
        let clock = ContinuousClock()
        let dialStart = clock.now
        enum Dial: Sendable {
            case done(Int, Result<PeerClient, any Error>)
            case graceOver
        }
        let (dials, dialled) = AsyncStream.makeStream(of: Dial.self)
        for (position, address) in addresses.enumerated() {
            Task {
                let outcome: Result<PeerClient, any Error>
                do {
                    outcome = .success(try await peers.client(for: address))
                } catch {
                    outcome = .failure(error)
                }
                dialled.yield(.done(position, outcome))
            }
        }
        var results = [Result<PeerClient, any Error>?](repeating: nil, count: addresses.count)
        var answered = 0
        var graceTimer: Task<Void, Never>?
        waiting: for await dial in dials {
            switch dial {
            case .done(let position, let result):
                guard results.indices.contains(position), results[position] == nil else { continue waiting }
                results[position] = result
                answered += 1
                if answered == addresses.count { break waiting }
                if graceTimer == nil, case .success = result {
                    let grace = dialGrace(afterFirst: clock.now - dialStart)
                    graceTimer = Task {
                        try? await Task.sleep(for: grace)
                        dialled.yield(.graceOver)
                    }
                }
            case .graceOver:
                break waiting
            }
        }
        graceTimer?.cancel()
        dialled.finish()
        // Each source is the peer's address in `peers`, not this first connection: a connection
        // that closes mid-fetch (a partition longer than the idle timeout) is dialled again.
        var sources = [any ChunkSource]()
        var clients = [PeerClient]()
        var failures = [String]()
        for (address, result) in zip(addresses, results) {
            switch result {
            case .success(let client)?:
                sources.append(PeerSource(address: address, peers: peers, first: client))
                clients.append(client)
            case .failure(let error)?:
                failures.append("\(address): \(error)")
                onEvent?("skipping \(address): \(error)")
            case nil:
                let waited = Double(Int(((clock.now - dialStart).seconds * 10).rounded())) / 10
                failures.append("\(address): no answer within \(waited) s")
                onEvent?("skipping \(address): no answer within \(waited) s while other peers answered (it may be down); fetching from the others")
            }
        }
        guard !sources.isEmpty else {
            throw NodeError(.unavailable, "none of the peers could be reached (\(failures.joined(separator: "; "))); check the addresses and that the nodes run")
        }
        // Subscribe before watching, so no change is missed.
        let changes = await health?.changes()
        if let health {
            for address in addresses { Task { await health.watch(address) } }
        }
        var preference: SourcePreference?
        if let router, sources.count > 1 {
            let unmeasured = clients.filter { client in
                client.authenticatedPeer.map { router.record(of: RoutingNodeID($0))?.measuredRTT == nil } ?? false
            }
            if !unmeasured.isEmpty { await router.measure(unmeasured) }
            preference = router.sourcePreference()
        }
        let fetcher = ContentFetcher(
            store: store, sources: sources, configuration: configuration, logger: logger,
            onProgress: onProgress, onEvent: onEvent, healthChanges: changes, preference: preference)
        return try await fetcher.fetch(root)
    }

    /// How long a fetch waits for the other peers' dials once one succeeded after `first`: at
    /// least a second, and three times the time the first took (a far peer's handshake takes
    /// longer than a near one's), at most the handshake timeout's usual 10 s.
    static func dialGrace(afterFirst first: Duration) -> Duration {
        min(.seconds(10), max(.seconds(1), first * 3))
    }
}
