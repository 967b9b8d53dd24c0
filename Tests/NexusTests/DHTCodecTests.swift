import Testing
@testable import Nexus
import STOQSimulation

func randomHash(_ rng: inout SplitMix64) -> NexusHash { NexusHash(rng.next(), rng.next(), rng.next(), rng.next()) }

func randomRecord(_ rng: inout SplitMix64) -> NodeRecord {
    let addrs = (0..<Int(rng.next() % 5)).map { _ in try! NexusAddress(high: 0xFD00_0000_0000_0000 | (rng.next() >> 8), low: rng.next(), port: UInt16(truncatingIfNeeded: rng.next())) }
    return NodeRecord(id: randomHash(&rng), addresses: addrs, region: String(repeating: "r", count: Int(rng.next() % 33)), certificateFingerprint: randomHash(&rng))
}

func randomMessage(_ rng: inout SplitMix64) -> DHTMessage {
    let rpc = rng.next()
    func recs() -> [NodeRecord] { (0..<Int(rng.next() % 21)).map { _ in randomRecord(&rng) } }
    func bytes() -> [UInt8] { (0..<Int(rng.next() % 600)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
    switch rng.next() % 11 {
    case 0: return .ping(rpc: rpc)
    case 1: return .pong(rpc: rpc)
    case 2: return .findNode(rpc: rpc, target: randomHash(&rng))
    case 3: return .nodes(rpc: rpc, closer: recs())
    case 4: return .getRecord(rpc: rpc, key: randomHash(&rng))
    case 5: return .record(rpc: rpc, value: bytes(), ttl: UInt32(truncatingIfNeeded: rng.next()))
    case 6: return .findProviders(rpc: rpc, key: randomHash(&rng))
    case 7: return .providers(rpc: rpc, providers: recs(), closer: recs())
    case 8: return .putRecord(rpc: rpc, key: randomHash(&rng), value: bytes(), ttl: UInt32(truncatingIfNeeded: rng.next()))
    case 9: return .addProvider(rpc: rpc, key: randomHash(&rng), provider: randomRecord(&rng), ttl: 60)
    default: return .ack(rpc: rpc, stored: rng.next() % 2 == 0)
    }
}

@Suite struct DHTCodecTests {
    @Test(arguments: [31 as UInt64, 32, 33])
    func seededRoundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for i in 0..<2_000 {
            let m = randomMessage(&rng)
            let back = try DHTMessage.decode(m.encode())
            #expect(back == m, "seed \(seed) iteration \(i)")
        }
    }

    @Test(arguments: [41 as UInt64, 42, 43])
    func seededGarbageNeverTraps(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var decoded = 0
        for i in 0..<5_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = [0x4E, 0x01] + (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                bytes = randomMessage(&rng).encode()
                if !bytes.isEmpty {
                    for _ in 0..<(1 + rng.next() % 3) { bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: 1 + rng.next() % 255) }
                }
                if rng.next() % 2 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1)))) }
            }
            DHTMessage.fuzz(bytes)
            if (try? DHTMessage.decode(bytes)) != nil { decoded += 1 }
        }
        #expect(decoded < 5_000, "seed \(seed)")
    }

    @Test func boundsAreEnforced() {
        // 33 node records where at most 32 are allowed.
        var w = ByteWriter(); w.u8(0x4E); w.u8(1); w.u8(4); w.u64(1); w.u8(33)
        let e = #expect(throws: NexusError.self) { try DHTMessage.decode(w.bytes) }
        #expect(e?.code == .lengthLimitExceeded)
        let e2 = #expect(throws: NexusError.self) { try DHTMessage.decode(Array(repeating: 0, count: DHTMessage.maxMessageSize + 1)) }
        #expect(e2?.code == .lengthLimitExceeded)
        let e3 = #expect(throws: NexusError.self) { try DHTMessage.decode([0x4E, 2, 1]) }
        #expect(e3?.code == .unsupportedVersion)
    }
}

@Suite struct RoutingTableTests {
    @Test func floodingCannotGrowTheTableOrEvictLongLivedNodes() {
        var rng = SplitMix64(seed: 51)
        let me = randomHash(&rng)
        var table = RoutingTable(selfID: me, k: 20, replacementCacheSize: 8)
        var longLived: [NexusID] = []
        for _ in 0..<2_000 { let r = NodeRecord(id: randomHash(&rng)); table.seen(r, now: 0) }
        longLived = table.allContacts.map(\.record.id)
        let bound = 256 * (20 + 8)
        var probes = 0
        for i in 0..<100_000 {
            // An attacker floods fresh ids; the long-lived nodes keep answering their probes.
            if case .cachedProbe(let head) = table.seen(NodeRecord(id: randomHash(&rng)), now: UInt64(i)) {
                probes += 1
                table.seen(head, now: UInt64(i))
            }
            #expect(table.storedContacts <= bound)
        }
        #expect(probes > 0)
        let still = Set(table.allContacts.map(\.record.id))
        #expect(longLived.allSatisfy { still.contains($0) }, "a live long-lived node was evicted")
        #expect(table.storedContacts <= bound)
    }

    @Test func failedNodesAreReplacedFromTheCache() {
        var rng = SplitMix64(seed: 52)
        let me = NexusHash.zero
        var table = RoutingTable(selfID: me, k: 2, replacementCacheSize: 2, maxFailures: 2)
        // Ids in bucket 0 (first bit set).
        let ids = (0..<4).map { _ in NexusHash(rng.next() | 1 << 63, rng.next(), 0, 0) }
        for id in ids { table.seen(NodeRecord(id: id), now: 0) }
        #expect(table.bucket(0).map(\.record.id) == Array(ids.prefix(2)))
        #expect(table.replacements(0).count == 2)
        let evicted = table.failed(ids[0])
        #expect(evicted)
        #expect(table.bucket(0).map(\.record.id) == [ids[1], ids[3]])
    }

    @Test func closestMatchesBruteForce() {
        var rng = SplitMix64(seed: 53)
        let me = randomHash(&rng)
        var table = RoutingTable(selfID: me)
        for _ in 0..<3_000 { table.seen(NodeRecord(id: randomHash(&rng)), now: 0) }
        for _ in 0..<200 {
            let t = rng.next() % 4 == 0 ? me.flippingBit(Int(rng.next() % 20)) : randomHash(&rng)
            let expected = table.allContacts.map(\.record.id).sorted { t.isCloser($0, than: $1) }.prefix(20)
            #expect(table.closest(to: t, count: 20).map(\.id) == Array(expected))
        }
    }
}

@Suite struct NexusHashTests {
    @Test func bitsMasksAndRandomBucketIDs() {
        var rng = SplitMix64(seed: 71)
        for _ in 0..<200 {
            let h = randomHash(&rng)
            let bits = Int(rng.next() % 257)
            let m = NexusHash.prefixMask(bits)
            #expect((0..<256).allSatisfy { m.bit($0) == ($0 < bits) })
            #expect(NexusHash(bytes: h.bytes) == h && NexusHash(hex: h.hex) == h)
            let i = Int(rng.next() % 256)
            #expect(h.flippingBit(i).bit(i) != h.bit(i) && (h ^ h.flippingBit(i)).leadingZeroBitCount == i)
            var node = KademliaNode(record: NodeRecord(id: h), now: 0)
            let b = Int(rng.next() % 256)
            #expect(node.table.bucketIndex(of: node.randomID(inBucket: b)) == b)
        }
    }
}

/// A sender's record names the addresses it chose. The DHT keeps (and later dials) a sender only at
/// an address a node could listen on: port 0, `::` and multicast make it a client (answered, never
/// kept), because a dial there reached the transport's shared socket (issue 11, found by NetFuzz).
@Test func aSenderAtAnUndialableAddressIsAnsweredButNeverKept() throws {
    var rng = SplitMix64(seed: 11)
    var node = KademliaNode(record: NodeRecord(id: randomHash(&rng), addresses: [try NexusAddress(parsing: "[::1]:4433")]), now: 0)
    let loopback: UInt64 = 1
    for address in [try NexusAddress(high: 0, low: loopback, port: 0), try NexusAddress(high: 0, low: 0, port: 4433),
                    try NexusAddress(high: 0xFF02 << 48, low: 1, port: 4433), try NexusAddress(high: 0xFF0E << 48, low: 5, port: 9)] {
        #expect(!address.isDialable, "\(address)")
        let sender = NodeRecord(id: randomHash(&rng), addresses: [address])
        node.handle(.ping(rpc: 7), from: sender, now: 1)
        #expect(!node.table.contains(sender.id), "\(address) entered the table")
    }
    let good = try NexusAddress(high: 0xFD00 << 48, low: 1, port: 4433)
    let loopbackPort1 = try NexusAddress(parsing: "[::1]:1")
    #expect(good.isDialable && loopbackPort1.isDialable)
    let sender = NodeRecord(id: randomHash(&rng), addresses: [try NexusAddress(high: 0, low: loopback, port: 0), good])
    node.handle(.ping(rpc: 8), from: sender, now: 2)
    #expect(node.table.contains(sender.id), "a sender with one dialable address is kept")
}
