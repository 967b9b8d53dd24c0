import ArgumentParser
import Foundation
import Nexus
import STOQ
import STOQNode

/// `stoq get ID --bootstrap '[::1]:4433'`: the content's providers (its origin and the edges that
/// cache it) found through the Nexus DHT become the peers the fetch ranks, probes and uses, so a
/// reader needs no hand-written `--peers` list. A DHT name (`stoq name set`) is resolved here too
/// (see `Get.resolveName`, which asks the peers first for a published name).
struct DHTDiscoveryOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Nexus DHT nodes to join through, comma-separated: '[::1]:4433'. The content's providers found there (its origin, and the edges caching it) are fetched from, and a DHT name (`stoq name set`) is resolved there. Needs --cert, --key and --ca.",
        valueName: "addresses"))
    var bootstrap: String?
    /// The old spelling of `--bootstrap`.
    @Option(name: .customLong("dht"), help: .hidden) var legacyDHT: String?

    /// The DHT entry points given (`--bootstrap`, or the old `--dht`), unparsed.
    var seeds: String? { bootstrap ?? legacyDHT }

    func validate() throws {
        if bootstrap != nil && legacyDHT != nil { throw ValidationError("give --bootstrap only (--dht is its old spelling)") }
    }

    /// The providers a lookup may hand to the fetch (the DHT keeps at most 64 per lookup).
    static let maximumProviders = 16

    /// With `--bootstrap`: finds the providers of `content` and returns the peer options to fetch
    /// with (the providers, plus any `--peers`). Without it: `peers` unchanged.
    func discover(_ content: ContentID, peers: PeerOptions) async throws -> PeerOptions {
        guard seeds != nil else { return peers }
        return try await withClient(peers: peers) { client in try await find(content, peers: peers, client: client) }
    }

    /// With `--bootstrap`: the content a DHT name points to (its record's signature verified), said
    /// on stderr; nil when no DHT node holds a record for it (or it is not a valid Nexus name).
    func resolveName(_ name: String, peers: PeerOptions) async throws -> ContentID? {
        guard seeds != nil else { return nil }
        return try await withClient(peers: peers) { client in try await resolve(name, client: client) }
    }

    /// Runs `body` with a client of the DHT joined through the seeds, closing it afterwards.
    private func withClient<T>(peers: PeerOptions, _ body: (NexusClient) async throws -> T) async throws -> T {
        let seeds = try parsePeerList(self.seeds ?? "", option: bootstrap != nil ? "--bootstrap" : "--dht")
        guard let cert = peers.cert, let key = peers.key, let ca = peers.ca else {
            throw ValidationError("--bootstrap needs --cert, --key and --ca: the DHT's nodes answer only certificates of the network's CA")
        }
        let client = try await NexusClient.connect(seeds: seeds, certificate: cert, key: key, ca: ca)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    private func find(_ content: ContentID, peers: PeerOptions, client: NexusClient) async throws -> PeerOptions {
        let t0 = ContinuousClock.now
        let lookup = try await client.dht.lookup(.providers, target: NexusID(bytes: content.manifest.bytes)!)
        let ms = (ContinuousClock.now - t0).seconds * 1000
        var found: [PeerAddress] = []
        var lines: [String] = []
        for provider in lookup.providers {
            guard let address = provider.addresses.first(where: \.isDialable)?.peerAddress, !found.contains(address) else { continue }
            guard found.count < Self.maximumProviders else { break }
            found.append(address)
            lines.append("\(provider.id.shortHex)… \(address)" + (provider.region.isEmpty ? "" : " (\(provider.region))"))
        }
        let given = try peers.addresses()
        guard !found.isEmpty || !given.isEmpty else {
            throw CLIError("no provider of \(content) found through Nexus (asked \(lookup.messages) nodes); check that its origin runs with --dht or --bootstrap and holds it (`stoq ls`), or give --peers")
        }
        note(String(format: "found %d provider%@ of %@ through Nexus in %.1f ms (%d requests, %d rounds)%@",
                    found.count, found.count == 1 ? "" : "s", "\(content)", ms, lookup.messages, lookup.rounds,
                    found.isEmpty ? "" : ": " + lines.joined(separator: ", ")))
        var out = peers
        out.peers = (given + found.filter { !given.contains($0) }).map(\.description).joined(separator: ",")
        return out
    }

    /// Resolves a Nexus name to a content id (nil: no record for it, or not a valid Nexus name).
    private func resolve(_ name: String, client: NexusClient) async throws -> ContentID? {
        guard let nexusName = try? NexusName(name) else { return nil }
        do {
            let (record, lookup) = try await client.getName(nexusName)
            switch record.value {
            case .content(let id):
                guard let chunk = ChunkID(bytes: id.bytes) else { return nil }
                let content = ContentID(chunk)
                let versions = max(1, lookup.values.count)
                note("name '\(record.name)' → \(content) (DHT record v\(record.version), signature verified; the highest of \(versions) version\(versions == 1 ? "" : "s") its replicas returned)")
                return content
            case .service(let endpoints):
                throw CLIError("'\(name)' names a service (\(endpoints.count) nodes), not content; `stoq resolve \(name)` picks its node, then give the content id")
            }
        } catch let error as NexusError where error.code == .notFound {
            return nil
        }
    }

    private func note(_ text: String) {
        Console.shared.note(text)
    }
}
