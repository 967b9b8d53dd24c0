/// The `STOQContent` module: chunking, ids, manifests, encryption, compression and the chunk store.
/// No networking (DESIGN.md §4).
///
/// Goals
/// - Content-defined chunking (``FastCDC``) at hardware speed, streaming, on all cores
///   (``ChunkStreamer``), with the result independent of the thread count.
/// - Every stored byte verifiable by anyone: chunk ids are SHA-256 of the stored (encrypted) bytes
///   (``ChunkID``); content ids are the ids of manifests (``ContentID``, printed `stoq:<base32>`).
/// - Keyed convergent encryption (``ConvergentCipher``): dedup within a publisher, nothing readable
///   without the publisher's read key (``KeyTable``).
/// - One store API (``ChunkStore``) with memory and disk backends; the disk store survives `kill -9`
///   at any moment and a full disk, and ``ChunkStore/verify(repair:)`` finds what went wrong.
///
/// Non-goals (for now)
/// - Per-reader key wrapping (X25519); readers share the publisher read key.
/// - Hiding names and sizes: manifests are stored in the clear (only chunk keys are sealed).
/// - Several writers on one disk store at once: a process holds the store's lock while open.
public enum STOQContentModule {}
