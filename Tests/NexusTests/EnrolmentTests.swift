import Foundation
import NIOCore
import STOQWire
import Testing
@testable import Nexus

/// The enrolment second factor (issue 15 item 8): the proof, its bindings, the table, the frames.
@Suite("Enrolment proof")
struct EnrolmentTests {
    let secret = [UInt8](repeating: 7, count: 32)
    let verifier = [UInt8](repeating: 1, count: 32)
    let prover = [UInt8](repeating: 2, count: 32)
    let nonce = [UInt8](repeating: 3, count: 32)

    @Test("the right proof passes; another secret, node, verifier or nonce fails")
    func proof() {
        let mac = Enrolment.proof(secret: secret, verifier: verifier, prover: prover, nonce: nonce)
        #expect(mac.count == 32)
        #expect(Enrolment.check(mac, secret: secret, verifier: verifier, prover: prover, nonce: nonce))
        var otherSecret = secret
        otherSecret[0] ^= 1
        #expect(!Enrolment.check(mac, secret: otherSecret, verifier: verifier, prover: prover, nonce: nonce))
        #expect(!Enrolment.check(mac, secret: secret, verifier: prover, prover: verifier, nonce: nonce))
        #expect(!Enrolment.check(mac, secret: secret, verifier: verifier, prover: prover, nonce: secret))
        #expect(!Enrolment.check(Array(mac.prefix(31)), secret: secret, verifier: verifier, prover: prover, nonce: nonce))
    }

    @Test("the table is written atomically, read back, and an unknown node has no secret")
    func table() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("enrol-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try EnrolmentTable.enrol(node: prover, secret: secret, path: path)
        let table = try EnrolmentTable(path: path)
        #expect(table.secret(for: prover) == secret)
        #expect(table.secret(for: verifier) == nil)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test("frames carry exactly 32 bytes")
    func frames() {
        for length in [0, 31, 33, 64] {
            let frame = Frame(type: FrameType(rawValue: Enrolment.challengeType), payload: ByteBuffer(bytes: [UInt8](repeating: 0, count: length)))
            #expect(throws: NexusError.self) { try Enrolment.decodePayload(frame) }
        }
        let frame = Frame(type: FrameType(rawValue: Enrolment.proofType), payload: ByteBuffer(bytes: nonce))
        #expect((try? Enrolment.decodePayload(frame)) == nonce)
        Enrolment.fuzz([0x28, 0x20] + nonce + [0x29, 0x05, 1, 2, 3, 4, 5])
    }
}
