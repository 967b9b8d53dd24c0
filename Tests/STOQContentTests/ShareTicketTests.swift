import Crypto
import Testing
@testable import STOQContent

/// Issue 13 §5: the share ticket codec (`stoq1…`), its test vector (docs/PROTOCOL.md, "Tickets")
/// and its strict, bounded decoding.
@Suite struct ShareTicketTests {
    /// The vector of docs/PROTOCOL.md: content 00…1f, key 20…3f, CA fingerprint ca…ca, one
    /// provider (node id 11…11 at [::1]:4433) and the bootstrap [fd00::1]:4000.
    static let vectorText = "stoq1aeaacaqdaqcqmbyibefawdanbyhraeiscmkbkfqxdamrugy4dupb6ibbeirsijjge4ucskrlfqws4lzqgezdgnbvgy3tqoj2hm6d2pr7zlfmvswkzlfmvswkzlfmvswkzlfmvswkzlfmvswkzlfmvswkzlfacairceirceirceirceirceirceirceirceirceirceirceirceirceaaaaaaaaaaaaaaaaaaaaaaaaarcup5aaaaaaaaaaaaaaaaaaaaaaabb6qk7v2ory"

    static func vector() -> ShareTicket {
        ShareTicket(
            content: ContentID(ChunkID(bytes: (0..<32).map { UInt8($0) })!), readKey: (32..<64).map { UInt8($0) }, caFingerprint: [UInt8](repeating: 0xCA, count: 32),
            providers: [.init(nodeID: [UInt8](repeating: 0x11, count: 32), address: .init(host: "::1", port: 4433)!)],
            bootstrap: .init(host: "fd00::1", port: 4000)!)
    }

    @Test func vectorEncodesAndDecodes() throws {
        let ticket = Self.vector()
        #expect(try ticket.text() == Self.vectorText)
        #expect(try ticket.encoded().count == 171)
        let decoded = try ShareTicket(text: "  " + Self.vectorText + "\n")
        #expect(decoded == ticket)
        #expect(decoded.providers[0].address.description == "[::1]:4433")
        #expect(decoded.bootstrap?.description == "[fd00::1]:4000")
    }

    @Test func fullTicketFitsTheTextBound() throws {
        var ticket = Self.vector()
        ticket.providers = (1...8).map { i in .init(nodeID: [UInt8](repeating: UInt8(i), count: 32), address: .init(host: "fd00::\(i)", port: 4433)!) }
        let text = try ticket.text()
        #expect(text.count == 839)
        #expect(try ShareTicket(text: text) == ticket)
        ticket.providers.append(.init(nodeID: [UInt8](repeating: 9, count: 32), address: .init(host: "fd00::9", port: 4433)!))
        #expect(throws: ContentError.self) { try ticket.text() }
    }

    @Test func withoutBootstrap() throws {
        var ticket = Self.vector()
        ticket.bootstrap = nil
        #expect(try ShareTicket(text: ticket.text()) == ticket)
        ticket.providers = []
        #expect(throws: ContentError.self) { try ticket.encoded() }  // nowhere to fetch from
    }

    @Test func refusesDamage() throws {
        let bytes = try Self.vector().encoded()
        // Every single-byte change is caught (checksum, version, flags or a bound).
        for i in bytes.indices {
            var bad = bytes
            bad[i] ^= 0x01
            #expect(throws: ContentError.self) { try ShareTicket(bytes: bad) }
        }
        // Every truncation and any extension.
        for n in 0..<bytes.count { #expect(throws: ContentError.self) { try ShareTicket(bytes: Array(bytes.prefix(n))) } }
        #expect(throws: ContentError.self) { try ShareTicket(bytes: bytes + [0]) }
    }

    @Test func refusesBadText() {
        for text in ["", "stoq1", "stoq:abc", "stoq1" + String(Self.vectorText.dropFirst(5)).uppercased(), String(Self.vectorText.dropLast()),
                     Self.vectorText + "a", Self.vectorText.replacingFirst("a", with: "1"), String(repeating: "a", count: 5000)] {
            #expect(throws: ContentError.self) { try ShareTicket(text: text) }
        }
    }

    @Test func refusesOutOfBoundFields() throws {
        func reencoded(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
            var b = try! Self.vector().encoded()
            b.removeLast(4)
            edit(&b)
            return b + Array(SHA256Digest4.of(b))
        }
        // Version 2, unknown flag, 9 providers, port 0, [::], multicast: each with a valid checksum.
        let cases: [(inout [UInt8]) -> Void] = [
            { $0[0] = 2 }, { $0[97] |= 2 }, { $0[98] = 9 },
            { $0[99 + 48] = 0; $0[99 + 49] = 0 }, { for i in 99 + 32..<99 + 48 { $0[i] = 0 } }, { $0[99 + 32] = 0xFF },
        ]
        for edit in cases { #expect(throws: ContentError.self) { try ShareTicket(bytes: reencoded(edit)) } }
        // A repeated provider.
        var ticket = Self.vector()
        ticket.providers.append(ticket.providers[0])
        #expect(throws: ContentError.self) { try ticket.encoded() }
    }

    @Test func fuzzEntryPointSurvivesNoise() throws {
        var rng = SystemRandomNumberGenerator()
        let good = try Self.vector().encoded()
        ShareTicket.fuzz(good)
        ShareTicket.fuzz(Array(Self.vectorText.utf8))
        for _ in 0..<2000 {
            var b = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) { b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            ShareTicket.fuzz(b)
            ShareTicket.fuzz((0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
    }
}

enum SHA256Digest4 {
    static func of(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes).prefix(4)) }
}

extension String {
    func replacingFirst(_ target: Character, with replacement: Character) -> String {
        guard let i = firstIndex(of: target) else { return self }
        var s = self
        s.replaceSubrange(i...i, with: String(replacement))
        return s
    }
}
