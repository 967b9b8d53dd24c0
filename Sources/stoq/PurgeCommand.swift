import ArgumentParser
import Foundation
import STOQ
import STOQEdge
import STOQNode

/// `stoq purge ID|NAME --node EDGE`: drops the cached chunks of a content on an edge and on the
/// edges below it (mutual TLS), and says what was dropped.
struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop the cached chunks of a content (or of what a published name points to) on edges and the edges below them."
    )
    @Argument(help: "Content id (stoq:…), or a published name (NAME or name:NAME) resolved through the first --node.") var target: String
    @Option(help: "The edges, comma-separated: '[::1]:4434,[::1]:4435'. An origin drops nothing (its store is not a cache) and passes the purge to its edges.")
    var node: String
    @Option(help: "Client certificate (PEM).") var cert: String = ClientIdentity.cert
    @Option(help: "Client private key (PEM).") var key: String = ClientIdentity.key
    @Option(help: "Network CA certificate (PEM).") var ca: String = ClientIdentity.ca
    @Option(help: "An access grant with the purge right (its text or a file), when your certificate is not an operator's or publisher's of the nodes.") var grant: String?

    func run() async throws {
        let nodes: [PeerAddress] = try node.split(separator: ",").map { text in
            guard let address = PeerAddress(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--node takes IPv6 addresses like '[::1]:4434' (comma-separated), not '\(text)'")
            }
            return address
        }
        guard let first = nodes.first else { throw ValidationError("--node names no edge") }
        let content: ContentID
        if let id = ContentID(target) {
            content = id
        } else {
            let name = target.hasPrefix("name:") ? String(target.dropFirst(5)) : target
            do { try NameRecord.validate(name: name) } catch {
                throw ValidationError("'\(target)' is neither a content id (stoq: followed by 52 base32 characters) nor a name: \(ErrorReport.peopleText(error))")
            }
            content = try await withPeer(first, cert: cert, key: key, ca: ca) { client in
                guard let bytes = try await client.resolveName(name) else { throw CLIError("\(first) does not know the name '\(name)'") }
                let record = try NameRecord.decode(bytes)
                guard record.name == name, record.hasValidSignature else { throw CLIError("\(first) answered '\(name)' with a record that does not verify") }
                FileHandle.standardError.write(Data("stoq: \(name) is \(record.content) (v\(record.version))\n".utf8))
                return record.content
            }
        }
        var failed = 0
        for address in nodes {
            do {
                let totals = try await withPeer(address, cert: cert, key: key, ca: ca) { client in
                    try await GrantInput.present(grant, on: client)
                    return try await client.purge(content)
                }
                print(Self.describe(totals, content: content, at: address))
            } catch {
                failed += 1
                Console.shared.error("purge of \(content) on \(address) failed: \(ErrorReport.peopleText(error)); check that a node runs there and that --cert/--key/--ca are an operator's")
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }

    /// One line saying what a purge dropped.
    static func describe(_ t: ContentAccessMessage.PurgeTotals, content: ContentID, at address: PeerAddress) -> String {
        func bytes(_ n: UInt64) -> String { humanBytes(Int64(clamping: n)) }
        var line = "purged \(content) on \(address): dropped \(t.localChunks) chunks (\(bytes(t.localBytes))) there"
        line += "; \(t.edges) edge\(t.edges == 1 ? "" : "s") below dropped \(t.belowChunks) chunks (\(bytes(t.belowBytes)))"
        if t.unanswered > 0 { line += "; \(t.unanswered) edge\(t.unanswered == 1 ? "" : "s") below did not answer (they may still hold it)" }
        return line
    }
}

extension PeerOptions {
    /// The read key a peer hands out for `content` when it is public (first peer that has one);
    /// nil when it is private, unknown, or no peer answered. Every peer is asked at once, and the
    /// first answer that settles it wins: a dead peer first in `--peers` must not hold the end of
    /// a `get` for its handshake timeout.
    func publicKey(of content: ContentID) async -> [UInt8]? {
        guard let ca, (cert == nil) == (key == nil), let addresses = try? addresses(), !addresses.isEmpty else { return nil }
        enum Answer: Sendable {
            case key([UInt8], PeerAddress)
            case isPrivate
            case unknown
        }
        let (answers, answered) = AsyncStream.makeStream(of: Answer.self)
        let cert = self.cert, key = self.key
        let asks = addresses.map { address in
            Task {
                let reply = try? await withPeer(address, cert: cert, key: key, ca: ca) { client in try await client.contentKey(for: content) }
                let answer: Answer
                switch reply {
                case .key(let bytes): answer = .key(bytes, address)
                case .private: answer = .isPrivate
                default: answer = .unknown
                }
                answered.yield(answer)
            }
        }
        defer {
            for ask in asks { ask.cancel() }
            answered.finish()
        }
        var pending = addresses.count
        for await answer in answers {
            switch answer {
            case .key(let bytes, let address):
                Console.shared.note("\(content) is public: reading it with the key \(address) handed out")
                return bytes
            case .isPrivate:
                return nil
            case .unknown:
                pending -= 1
                if pending == 0 { return nil }
            }
        }
        return nil
    }
}
