import Logging
import STOQContent
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
    /// - Throws: ``NodeError`` `.unavailable` when no peer can be reached; the fetch's errors.
    public static func fetch(
        _ root: ContentID, from addresses: [PeerAddress], peers: PeerSet, health: PeerHealthService?, store: any ChunkStore,
        configuration: SwarmConfiguration = .init(), logger: Logger = Logger(label: "stoq.fetch"),
        onProgress: (@Sendable (SwarmProgress) -> Void)? = nil, onEvent: (@Sendable (String) -> Void)? = nil
    ) async throws -> FetchReport {
        var sources = [any ChunkSource]()
        var failures = [String]()
        for address in addresses {
            do {
                sources.append(try await peers.client(for: address))
            } catch {
                failures.append("\(address): \(error)")
                onEvent?("skipping \(address): \(error)")
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
        let fetcher = ContentFetcher(
            store: store, sources: sources, configuration: configuration, logger: logger,
            onProgress: onProgress, onEvent: onEvent, healthChanges: changes)
        return try await fetcher.fetch(root)
    }
}
