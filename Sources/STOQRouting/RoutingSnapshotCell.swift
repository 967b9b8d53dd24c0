import Synchronization

/// Hands the latest `RoutingSnapshot` from the thread that updates the matrix to the
/// threads that query it. Publishing swaps one reference under a lock; readers take the
/// reference and query without holding anything, so updates never block queries.
@available(macOS 15.0, *)
public final class RoutingSnapshotCell: Sendable {
    private let current: Mutex<RoutingSnapshot>
    private let currentIndex = Mutex<PairRoutingIndex?>(nil)

    /// Creates a cell holding `initial`.
    public init(_ initial: RoutingSnapshot) { current = Mutex(initial) }

    /// The latest snapshot.
    public func load() -> RoutingSnapshot { current.withLock { $0 } }

    /// The newest pair-routing index, if one was stored (its snapshot may be a publish or two
    /// older than `load()`: indexes are built after their snapshot is published).
    public func loadIndex() -> PairRoutingIndex? { currentIndex.withLock { $0 } }

    /// Publishes a pair-routing index (one for an older snapshot than the stored one is ignored).
    public func storeIndex(_ index: PairRoutingIndex) {
        currentIndex.withLock {
            if $0 == nil || index.snapshot.version >= $0!.snapshot.version { $0 = index }
        }
    }

    /// Publishes a newer snapshot (an older version is ignored).
    public func store(_ snapshot: RoutingSnapshot) {
        current.withLock { if snapshot.version >= $0.version { $0 = snapshot } }
    }
}
