import ArgumentParser
import Foundation
import Nexus
import STOQ
import STOQNode

/// `stoq get ID --bootstrap '[::1]:4433'`: the content's providers (its origin and the edges that
/// cache it) found through the Nexus DHT become the peers the fetch ranks, probes and uses, so a
/// reader needs no hand-written `--peers` list. A name given instead of a content id is resolved
/// through Nexus names first (`stoq name set`), else through the peers (names published with
/// `stoq publish`).
struct DHTDiscoveryOptions: ParsableArguments {
    @Option(name: [.customLong("bootstrap"), .customLong("dht")], help: ArgumentHelp(
        "Find the content's providers (its origin, and the edges caching it) through the Nexus DHT, joined through these nodes, comma-separated: '[::1]:4433'. A name is resolved through Nexus first. Needs --cert, --key and --ca.",
        valueName: "addresses"))
    var bootstrap: String?

    /// The providers a lookup may hand to the fetch (the DHT keeps at most 64 per lookup).
    static let maximumProviders = 16

    /// With `--bootstrap`: resolves `id` when it is a Nexus name, finds its providers and returns
    /// the content id and peer options to fetch with (the providers, plus any `--peers`). Without
    /// it: `id` and `peers` unchanged.
    func discover(_ id: String, peers: PeerOptions) async throws -> (id: String, peers: PeerOptions) {
        guard let bootstrap else { return (id, peers) }
        let seeds = try parsePeerList(bootstrap, option: "--bootstrap")
        guard let cert = peers.cert, let key = peers.key, let ca = peers.ca else {
            throw ValidationError("--bootstrap needs --cert, --key and --ca: the DHT's nodes answer only certificates of the network's CA")
        }
        let client = try await NexusClient.connect(seeds: seeds, certificate: cert, key: key, ca: ca)
        do {
            let result = try await find(id, peers: peers, client: client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    private func find(_ text: String, peers: PeerOptions, client: NexusClient) async throws -> (id: String, peers: PeerOptions) {
        var cid = ContentID(text)
        if cid == nil {
            guard !text.hasPrefix("stoq:") else {
                throw ValidationError("\(text) is not a content id (expected stoq: followed by 52 base32 characters)")
            }
            let nameText = text.hasPrefix("name:") ? String(text.dropFirst(5)) : text
            let resolved = try await resolve(nameText, client: client)
            guard let resolved else {
                // Not a Nexus name: a CDN name (`stoq publish`) is resolved through the peers.
                guard peers.peers != nil else {
                    throw CLIError("no DHT node holds a Nexus name record for '\(nameText)'; publish it with `stoq name set`, or give --peers (an edge or the origin) to resolve a name published with `stoq publish`")
                }
                note("'\(nameText)' is not a Nexus name; resolving it through the peers (names published with `stoq publish`)")
                return (text, peers)
            }
            cid = resolved
        }
        let content = cid!
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
        return (content.description, out)
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
                note("\(record.name) is \(content) (Nexus name record v\(record.version), signature verified; the highest of \(versions) version\(versions == 1 ? "" : "s") its replicas returned)")
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
