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
        // hold up the others. Sources keep the order given.
        //
        // Each child builds its whole answer after its last `await`, then returns it (never
        // `return (position, .success(try await …))`). Swift 6.3.1 miscompiles that shape in
        // release builds: SILGen writes `position` into the child's indirect result before the
        // `try await`, and LLVM's dead-store elimination then deletes that store on the path where
        // the call returns normally (the `catch` path keeps its own). The task group handed back
        // whatever bytes were in the result buffer as `position`, and `results[position] = …`
        // trapped in `Array.subscript.modify` (ud2, SIGILL) — or, when the garbage happened to be
        // a valid index, silently filed a peer's connection under another peer. Found with
        // `-Xllvm -opt-bisect-limit` (the first bad pass is DSEPass on this closure); the
        // reduction is in the issue note. The index is still checked: a bad one is skipped.
        let dialled = await withTaskGroup(of: (Int, Result<PeerClient, any Error>).self) { group in
            for (position, address) in addresses.enumerated() {
                group.addTask {
                    let outcome: Result<PeerClient, any Error>
                    do {
                        outcome = .success(try await peers.client(for: address))
                    } catch {
                        outcome = .failure(error)
                    }
                    return (position, outcome)
                }
            }
            var results = [Result<PeerClient, any Error>?](repeating: nil, count: addresses.count)
            for await (position, result) in group where results.indices.contains(position) { results[position] = result }
            return results
        }
        // Each source is the peer's address in `peers`, not this first connection: a connection
        // that closes mid-fetch (a partition longer than the idle timeout) is dialled again.
        var sources = [any ChunkSource]()
        var clients = [PeerClient]()
        var failures = [String]()
        for (address, result) in zip(addresses, dialled) {
            switch result {
            case .success(let client)?:
                sources.append(PeerSource(address: address, peers: peers, first: client))
                clients.append(client)
            case .failure(let error)?:
                failures.append("\(address): \(error)")
                onEvent?("skipping \(address): \(error)")
            case nil:
                break
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
}
