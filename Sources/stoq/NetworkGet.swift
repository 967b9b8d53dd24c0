import ArgumentParser
import Foundation
import STOQ
import STOQNode

/// Options for fetching from peers over `stoq/1` (used by `stoq get --peers`).
struct PeerOptions: ParsableArguments {
    @Option(help: "Fetch from these peers first, comma-separated IPv6 addresses: '[::1]:4433,[fd00::2]:4433'.")
    var peers: String?
    @Option(help: "Client certificate (PEM) presented to the peers.") var cert: String?
    @Option(help: "Client private key (PEM).") var key: String?
    @Option(help: "Network CA certificate (PEM) the peers' certificates must chain to.") var ca: String?
    @Flag(help: "Show a progress bar even when stdout is not a terminal.") var progress = false
    @Option(help: "Reach every peer through this relay node (a node with the relay role), e.g. when the direct path is slow or blocked: '[fd00::9]:4433'.")
    var via: String?

    /// The parsed peer addresses.
    func addresses() throws -> [PeerAddress] {
        guard let peers else { return [] }
        return try peers.split(separator: ",").map { text in
            guard let a = PeerAddress(String(text.trimmingCharacters(in: .whitespaces))) else {
                throw ValidationError("'\(text)' is not an IPv6 address like [::1]:4433 (STOQ is IPv6-only)")
            }
            return a
        }
    }

    /// Fetches `id` from the peers into `store`, printing progress and a summary.
    func fetch(_ id: ContentID, into store: any ChunkStore) async throws -> FetchReport {
        let addresses = try addresses()
        guard let cert, let key, let ca else { throw ValidationError("--peers needs --cert, --key and --ca (mutual TLS)") }
        let tls = TLSConfiguration(
            certificateChainPEM: try PEMFile.read(cert), privateKeyPEM: try PEMFile.read(key), trustRootsPEM: try PEMFile.read(ca)
        )
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: EndpointConfiguration())
        let peers = PeerSet(endpoint: endpoint)
        var sources: [any ChunkSource] = []
        var relay: Connection?
        if let via {
            guard let address = PeerAddress(via) else { throw ValidationError("--via '\(via)' is not an IPv6 address like [::1]:4433") }
            do { relay = try await peers.client(for: address).connection } catch {
                await endpoint.close()
                throw CLIError("cannot reach the relay \(address): \(error)")
            }
        }
        for address in addresses {
            do {
                if let relay {
                    sources.append(PeerClient(relay: relay, to: address))
                } else {
                    sources.append(try await peers.client(for: address))
                }
            } catch {
                FileHandle.standardError.write(Data("stoq: skipping \(address): \(error)\n".utf8))
            }
        }
        guard !sources.isEmpty else {
            await endpoint.close()
            throw CLIError("none of the peers could be reached")
        }
        let bar = ProgressBar(enabled: progress || isatty(1) != 0)
        let fetcher = ContentFetcher(
            store: store, sources: sources,
            onProgress: { bar.update(done: $0.bytesDone, total: $0.totalBytes) },
            onEvent: { note in bar.note(note) }
        )
        do {
            let report = try await fetcher.fetch(id)
            bar.finish()
            await peers.closeAll()
            await endpoint.close()
            let perSource = report.sources.map { "\($0.name) \($0.bytes) B" }.joined(separator: ", ")
            print(String(format: "fetched %d chunks (%d already here), %d bytes in %.2f s (%.1f Mbit/s) from %@",
                         report.chunks, report.chunksAlreadyPresent, report.fetchedBytes, report.seconds, report.megabitsPerSecond, perSource))
            return report
        } catch {
            bar.finish()
            await peers.closeAll()
            await endpoint.close()
            throw error
        }
    }
}

/// A one-line terminal progress bar.
///
/// `@unchecked Sendable`: state behind `lock`.
final class ProgressBar: @unchecked Sendable {
    private let enabled: Bool
    private let lock = NSLock()
    private var last = ContinuousClock.now
    private var shown = false

    init(enabled: Bool) { self.enabled = enabled }

    func update(done: Int, total: Int) {
        guard enabled, total > 0 else { return }
        lock.withLock {
            guard ContinuousClock.now - last > .milliseconds(100) || done == total else { return }
            last = .now
            let width = 30
            let filled = Int(Double(width) * Double(done) / Double(total))
            let line = "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
                + String(format: "%5.1f %% %8.1f MiB", 100 * Double(done) / Double(total), Double(done) / 1_048_576)
            FileHandle.standardError.write(Data(line.utf8))
            shown = true
        }
    }

    func note(_ text: String) {
        lock.withLock {
            FileHandle.standardError.write(Data(((shown ? "\n" : "") + "stoq: " + text + "\n").utf8))
            shown = false
        }
    }

    func finish() { lock.withLock { if shown { FileHandle.standardError.write(Data("\n".utf8)); shown = false } } }
}
