import Crypto
import Foundation
import Logging
import NIOCore
import STOQIdentity
import STOQNode
import STOQTransport
import STOQWire

/// The second factor for nodes (`stoq node --require-enrolment TABLE`): besides a certificate in
/// the CT log, a peer must prove it holds the per-node **enrolment secret** the issuer handed it at
/// issuance (`stoq certs issue --enrol TABLE`), which is not in the certificate, not derived from
/// its key and kept in a separate file (docs/PROTOCOL.md "Enrolment proof").
///
/// At first contact the verifier opens a stream on the peer's connection and sends
/// `ENROL_CHALLENGE` (0x28) with a fresh 32-byte nonce; the peer answers `ENROL_PROOF` (0x29) with
/// `HMAC-SHA256(secret, "stoq-enrol-v1" ‖ verifier node id ‖ prover node id ‖ nonce)`. The verifier
/// recomputes it with the secret its table holds for the prover's node id (the one its
/// certificate authenticated). The proof is bound to both node ids and a nonce the verifier chose,
/// so it cannot be replayed to another node or on another connection.
public enum Enrolment {
    /// ENROL_CHALLENGE: verifier → peer, payload a 32-byte nonce.
    public static let challengeType: UInt64 = 0x28
    /// ENROL_PROOF: peer → verifier, payload the 32-byte HMAC.
    public static let proofType: UInt64 = 0x29
    /// QUIC application error code closing a peer whose proof is missing or wrong ("EN").
    public static let refusalCode: UInt64 = 0x454E
    /// ERROR code a peer without a secret answers with (4: refused).
    public static let noSecretCode: UInt64 = 4
    /// Secret and nonce length.
    public static let length = 32
    /// How long a verifier waits for the proof.
    public static let timeout: Duration = .seconds(3)
    private static let label = Array("stoq-enrol-v1".utf8)

    /// The proof `prover` sends `verifier` for `nonce`.
    public static func proof(secret: [UInt8], verifier: [UInt8], prover: [UInt8], nonce: [UInt8]) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: label); mac.update(data: verifier); mac.update(data: prover); mac.update(data: nonce)
        return Array(mac.finalize())
    }

    /// Constant-time check of a proof.
    public static func check(_ proof: [UInt8], secret: [UInt8], verifier: [UInt8], prover: [UInt8], nonce: [UInt8]) -> Bool {
        guard proof.count == length else { return false }
        let expected = Self.proof(secret: secret, verifier: verifier, prover: prover, nonce: nonce)
        var difference: UInt8 = 0
        for (a, b) in zip(proof, expected) { difference |= a ^ b }
        return difference == 0
    }

    /// Reads a secret file: 64 hex digits (what `stoq certs issue --enrol` writes).
    public static func loadSecret(path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NexusError(.malformedInput, "cannot read the enrolment secret \(path); the issuer writes it with `stoq certs issue --enrol TABLE` next to the certificate (NAME.enrol)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let bytes = Hex.decode(text), bytes.count == length else {
            throw NexusError(.malformedInput, "\(path) is not an enrolment secret (64 hex digits)")
        }
        return bytes
    }

    /// Decodes a challenge or proof frame's payload: exactly 32 bytes. Safe on any input.
    public static func decodePayload(_ frame: Frame) throws(NexusError) -> [UInt8] {
        var payload = frame.payload
        guard payload.readableBytes == length, let bytes = payload.readBytes(length: length) else {
            throw NexusError(.malformedInput, "an enrolment frame carries exactly \(length) bytes; this one \(frame.payload.readableBytes)")
        }
        return bytes
    }

    /// Fuzz entry point: decodes arbitrary bytes as frames and their enrolment payloads.
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: 64)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while let frame = try? decoder.pollFrame() {
            if let payload = try? decodePayload(frame) { precondition(payload.count == length) }
        }
    }
}

/// The verifier's table: node id (hex) → that node's enrolment secret (hex), a JSON object written
/// by `stoq certs issue --enrol TABLE` (mode 0600). Read again when a node id is missing, so nodes
/// issued after the verifier started are admitted without a restart; removing an entry refuses the
/// node from the next connection on.
public final class EnrolmentTable: Sendable {
    /// The file.
    public let path: String

    /// Uses the table at `path` (it must exist and parse now).
    public init(path: String) throws {
        self.path = path
        _ = try Self.read(path)
    }

    static func read(_ path: String) throws -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NexusError(.malformedInput, "no enrolment table at \(path); the issuer writes it with `stoq certs issue --enrol \(path)`")
        }
        guard let table = try? JSONDecoder().decode([String: String].self, from: data) else {
            throw NexusError(.malformedInput, "\(path) is not an enrolment table (a JSON object: node id → secret, both hex)")
        }
        return table
    }

    /// The secret enrolled for `node`, or nil.
    public func secret(for node: [UInt8]) -> [UInt8]? {
        guard let table = try? Self.read(path), let hex = table[Hex.encode(node)], let bytes = Hex.decode(hex), bytes.count == Enrolment.length else { return nil }
        return bytes
    }

    /// Adds (or replaces) `node`'s secret, writing the table atomically with mode 0600.
    public static func enrol(node: [UInt8], secret: [UInt8], path: String) throws {
        var table = (try? read(path)) ?? [:]
        table[Hex.encode(node)] = Hex.encode(secret)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(table)
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]), rename(temporary, path) == 0 else {
            throw NexusError(.logStorageFailure, "cannot write the enrolment table \(path)")
        }
    }

    /// Challenges the peer of `connection` (this node is `verifier`) and checks its proof.
    /// - Returns: nil when the proof is right, else why the peer is refused (for people).
    public func challenge(_ connection: Connection, verifier: [UInt8]) async -> String? {
        guard let prover = connection.peerNodeID?.bytes else { return "the peer presented no certificate; this node requires enrolled nodes" }
        guard let secret = secret(for: prover) else {
            return "node \(Hex.encode(prover).prefix(16))… is not enrolled with this network (no entry in its enrolment table); ask the issuer for `stoq certs issue --enrol`"
        }
        var nonce = [UInt8](repeating: 0, count: Enrolment.length)
        var generator = SystemRandomNumberGenerator()
        for i in nonce.indices { nonce[i] = UInt8.random(in: .min ... .max, using: &generator) }
        let sent = nonce
        let answer: Result<[UInt8], NexusError>? = await withDeadline(Enrolment.timeout) {
            do {
                let stream = try await connection.openBidirectionalStream(priority: .control)
                try await stream.write(nexusFrame(Enrolment.challengeType, sent))
                try await stream.finish()
                var decoder = FrameDecoder(maximumPayloadLength: 2048)
                decoder.handle(bytes: try await stream.readAll(limit: 4096))
                guard let frame = try decoder.pollFrame() else { return .failure(NexusError(.malformedInput, "the peer closed the stream without an enrolment proof")) }
                if frame.type.rawValue == Enrolment.proofType { return .success(try Enrolment.decodePayload(frame)) }
                if case .error(_, let message)? = try? STOQMessage.decode(frame) {
                    return .failure(NexusError(.malformedInput, "the peer sent no enrolment proof (\(message.prefix(512)))"))
                }
                return .failure(NexusError(.malformedInput, "the peer answered with frame \(frame.type), not an enrolment proof"))
            } catch let error as NexusError {
                return .failure(error)
            } catch {
                return .failure(NexusError(.malformedInput, "the enrolment challenge failed: \(error)"))
            }
        }
        switch answer {
        case nil: return "no enrolment proof within \(Enrolment.timeout); run the node with --enrolment-secret FILE (its NAME.enrol)"
        case .failure(let error)?: return "enrolment proof missing: \(error.reason); run the node with --enrolment-secret FILE (its NAME.enrol)"
        case .success(let proof)?:
            return Enrolment.check(proof, secret: secret, verifier: verifier, prover: prover, nonce: nonce)
                ? nil : "wrong enrolment proof for node \(Hex.encode(prover).prefix(16))…: the peer does not hold the secret enrolled for its certificate"
        }
    }
}

/// Answers `ENROL_CHALLENGE` (0x28) with this node's proof (a node run with `--enrolment-secret`),
/// or an ERROR saying it has no secret.
public struct EnrolmentService: NodeService {
    /// The node's secret (nil: answer that there is none).
    public let secret: [UInt8]?
    /// This node's id.
    public let nodeID: [UInt8]

    /// Creates the service.
    public init(secret: [UInt8]?, nodeID: [UInt8]) { self.secret = secret; self.nodeID = nodeID }

    public var name: String { "enrolment" }
    public var frameTypes: ClosedRange<UInt64> { Enrolment.challengeType...Enrolment.challengeType }
    public var maximumRequestLength: Int { 64 }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let reply: ByteBuffer
        do {
            let nonce = try Enrolment.decodePayload(request)
            guard let secret else { throw NexusError(.notLogged, "this node holds no enrolment secret") }
            guard let verifier = connection.peerNodeID?.bytes else { throw NexusError(.malformedInput, "the challenger presented no certificate") }
            reply = nexusFrame(Enrolment.proofType, Enrolment.proof(secret: secret, verifier: verifier, prover: nodeID, nonce: nonce))
        } catch {
            reply = STOQMessage.error(code: Enrolment.noSecretCode, message: (error as? NexusError)?.reason ?? "\(error)").encoded()
        }
        do {
            try await stream.write(reply)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }
}
