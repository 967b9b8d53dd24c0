import ArgumentParser
import Foundation
import STOQ

extension Get {
    /// Resolves a name given to `stoq get` to the content it points to. Both kinds of name are
    /// tried: a name published on an origin (`stoq name publish`), asked of `--peers` (an edge or
    /// the origin); else, or when no peer knows it, a DHT name (`stoq name set`), looked up through
    /// `--bootstrap`. Which record was used is said on stderr:
    /// `stoq: name 'x' → stoq:… (origin record v3 from [::1]:4433)` or `(DHT record v…)`.
    func resolveName(_ text: String) async throws -> ContentID {
        let name = text.hasPrefix("name:") ? String(text.dropFirst(5)) : text
        let viaPeers = peerOptions.peers != nil
        let viaDHT = discovery.seeds != nil
        guard viaPeers || viaDHT else {
            throw ContentError(.invalidArgument, "'\(text)' is not a content id (stoq: followed by 52 base32 characters), so it is read as a name: give --peers (an edge or the origin it was published on) or --bootstrap (a Nexus DHT node) to resolve it")
        }
        var problems: [String] = []
        if viaPeers {
            do {
                return try await peerOptions.resolveName(name).content
            } catch {
                guard viaDHT else { throw error }
                problems.append("as a published name: \(error)")
                Console.shared.note("'\(name)' is not a published name on --peers (\(error)); looking it up in the Nexus DHT")
            }
        }
        if let content = try await discovery.resolveName(name, peers: peerOptions) { return content }
        problems.append("in the DHT: no DHT node holds a name record for '\(name)'")
        throw CLIError("could not resolve the name '\(name)' " + problems.joined(separator: "; ")
            + "; check the name, or publish it with `stoq name publish` (on an origin) or `stoq name set` (in the DHT)")
    }
}
