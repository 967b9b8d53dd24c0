import Crypto
import Foundation
import STOQContent
import STOQEdge
import STOQHTTP
import STOQNode
import STOQTestSupport
import XCTest

/// The responder on real nodes over QUIC on [::1]: an edge serving an origin's content and names.
final class NodeContentSourceTests: XCTestCase {
    func testAnEdgeServesContentAndNamesAndTellsWatchersOfNewVersions() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let (v1, keys, bytes1) = try network.publish(on: origin, bytes: 600_000, seed: 7)
        let bytes2 = pseudoRandomBytes(50_000, seed: 8)
        let v2 = try ContentPublisher(store: origin.store, keys: keys).put(bytes: bytes2, name: "v2.txt").id
        let edge = try await network.node("edge", roles: ["edge"], upstream: [origin.address])
        // The network's operator ("client"): an origin takes names only from itself, its operators,
        // its publishers and grant holders (issue 15).
        let publisher = try await network.node("client", roles: ["client"])
        let owner = P256.Signing.PrivateKey()
        let atEdge = ContentResponder(source: NodeContentSource(node: edge, readKey: NodeContentSource.publisherReadKey(keys)))
        let atOrigin = ContentResponder(source: NodeContentSource(node: origin, readKey: NodeContentSource.publisherReadKey(keys)))
        try await withServing(origin) {
            try await withServing(edge) {
                // Cold edge: fetched from the origin (a miss), then from the edge's cache (a hit).
                let cold = try await drive(atEdge, "/stoq/\(v1)")
                XCTAssertEqual(cold.status, 200)
                XCTAssertEqual(cold.body, bytes1)
                XCTAssertEqual(cold.record.logInfo.finalCache, "miss")
                let warm = try await drive(atEdge, "/stoq/\(v1)", headers: [("range", "bytes=1000-1999")])
                XCTAssertEqual(warm.body, Array(bytes1[1000...1999]))
                XCTAssertEqual(warm.record.logInfo.finalCache, "hit")

                // An edge without the read key answers 403; an unknown id is 404 (asked upstream).
                let keyless = ContentResponder(source: NodeContentSource(node: edge, readKey: NodeContentSource.publisherReadKey(nil)))
                do { let s = try await drive(keyless, "/stoq/\(v1)").status; XCTAssertEqual(s, 403) }
                do { let s = try await drive(atEdge, "/stoq/\(ContentID(ChunkID.of([1, 2, 3])))").status; XCTAssertEqual(s, 404) }

                // A name through the edge: the version in the ETag, the remaining TTL as max-age.
                let toOrigin = try await publisher.peers.client(for: origin.address)
                _ = try await toOrigin.publishName(NameRecord.sign(name: "site", content: v1, version: 1, ttlSeconds: 600, owner: owner).encode())
                let named = try await drive(atEdge, "/name/site")
                XCTAssertEqual(named.body, bytes1)
                XCTAssertEqual(named.header("etag"), CachePolicy.etag(file: v1, version: 1))
                let maxAge = named.header("cache-control").flatMap { Int($0.split(separator: "=").last ?? "") } ?? -1
                XCTAssertTrue((1...600).contains(maxAge), "\(named.header("cache-control") ?? "none")")
                let own = try await drive(atOrigin, "HEAD", "/name/site")
                XCTAssertEqual(own.header("cache-control"), "public, max-age=600")

                // Watchers on the edge and on the origin hear of v2 once it is published.
                let edgeWatch = try XCTUnwrap(atEdge.watch(name: "site"))
                let originWatch = try XCTUnwrap(atOrigin.watch(name: "site"))
                try await Task.sleep(for: .milliseconds(200))  // let the watchers subscribe (not a timing assertion)
                _ = try await toOrigin.publishName(NameRecord.sign(name: "site", content: v2, version: 2, ttlSeconds: 600, owner: owner).encode())
                let expected = "{\"name\":\"site\",\"version\":2,\"content\":\"\(v2)\"}"
                let heardAtOrigin = try await first(originWatch, within: 20) { _ in true }
                XCTAssertEqual(heardAtOrigin, expected)
                let heardAtEdge = try await first(edgeWatch, within: 20) { _ in true }
                XCTAssertEqual(heardAtEdge, expected)
                let now = try await drive(atEdge, "/name/site")
                XCTAssertEqual(now.body, bytes2)
                XCTAssertEqual(now.header("content-type"), "text/plain; charset=utf-8")
            }
        }
        await publisher.close()
    }

    /// A cold edge: a range fetches about the chunks it covers, and the first byte of the whole file
    /// is handed over while most of it has not reached the edge yet (the rest follows as it is read).
    func testAColdEdgeStreamsWithoutFetchingTheWholeFileFirst() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let size = 8_000_000
        let (id, keys, bytes) = try network.publish(on: origin, bytes: size, seed: 21)
        let edge = try await network.node("edge", roles: ["edge"], upstream: [origin.address])
        let provider = try XCTUnwrap(edge.edge)
        let responder = ContentResponder(source: NodeContentSource(node: edge, readKey: NodeContentSource.publisherReadKey(keys)))
        try await withServing(origin) {
            try await withServing(edge) {
                let range = try await drive(responder, "/stoq/\(id)", headers: [("range", "bytes=4000000-4000099")])
                XCTAssertEqual(range.status, 206)
                XCTAssertEqual(range.body, Array(bytes[4_000_000..<4_000_100]))
                let afterRange = await provider.counters.upstreamBytes
                XCTAssertLessThan(afterRange, size / 8, "a 100-byte range pulled \(afterRange) bytes to the edge")

                let clock = ContinuousClock()
                let coldStart = clock.now
                let response = await responder.respond(to: HTTPRequest(method: "GET", target: "/stoq/\(id)", headers: [], wireProtocol: .http3, client: "test"))
                XCTAssertEqual(response.status, 200)
                let firstPiece = try await response.body.next()
                var received = try XCTUnwrap(firstPiece)
                let atFirstByte = await provider.counters.upstreamBytes
                XCTAssertLessThan(atFirstByte, size / 2, "the edge held \(atFirstByte) of \(size) bytes before the first byte left")
                let firstByte = clock.now - coldStart
                while let piece = try await response.body.next() { received += piece }
                let cold = clock.now - coldStart
                XCTAssertEqual(received, bytes)
                let warmStart = clock.now
                let warm = try await drive(responder, "/stoq/\(id)")
                let warmTime = clock.now - warmStart
                XCTAssertEqual(warm.body, bytes)
                XCTAssertEqual(warm.record.logInfo.finalCache, "hit")
                // Figures for the report (debug build, shared machine), not assertions.
                print("cold edge, \(size) bytes: first byte after \(firstByte) with \(atFirstByte) bytes at the edge; whole file \(cold); warm \(warmTime)")
            }
        }
    }

    /// A node's front-door lookup hands its publisher key out only for content that key opens:
    /// another publisher's directory is 403, not listed, and an unknown id stays 404.
    func testTheNodeLookupDoesNotListAnotherPublishersDirectory() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await network.node("origin")
        let dir = try temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/site/inner", withIntermediateDirectories: true)
        try Data("secret plan".utf8).write(to: URL(fileURLWithPath: dir + "/site/inner/plan.txt"))
        let mine = PublisherKeys.random()
        let theirs = PublisherKeys.random()
        let theirSite = try ContentPublisher(store: origin.store, keys: theirs).put(path: dir + "/site").id
        let mySite = try ContentPublisher(store: origin.store, keys: mine).put(path: dir + "/site", name: "mine").id
        let lookup = NodeContentSource.nodeReadKey(node: origin, publisher: mine)
        let mineKey = await lookup(mySite)
        XCTAssertNotNil(mineKey)
        let theirKey = await lookup(theirSite)
        XCTAssertNil(theirKey, "the node's publisher key does not open another publisher's content")
        let responder = ContentResponder(source: NodeContentSource(node: origin, readKey: lookup))
        let listing = try await drive(responder, "/stoq/\(theirSite)/inner/")
        XCTAssertEqual(listing.status, 403)
        XCTAssertFalse(String(decoding: listing.body, as: UTF8.self).contains("plan.txt"))
        let own = try await drive(responder, "/stoq/\(mySite)/inner/")
        XCTAssertEqual(own.status, 200)
        XCTAssertTrue(String(decoding: own.body, as: UTF8.self).contains("plan.txt"))
        do { let s = try await drive(responder, "/stoq/\(ContentID(ChunkID.of([9, 9, 9])))").status; XCTAssertEqual(s, 404) }
        await origin.close()
    }
}
