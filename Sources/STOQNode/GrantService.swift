import Foundation
import Logging
import NIOCore
import STOQAccess
import STOQExchange
import STOQIdentity
import STOQTransport
import STOQWire

/// Answers GRANT, REVOCATIONS and REVOCATIONS_REQUEST (frame types 0x22–0x25; docs/PROTOCOL.md,
/// "Access grants"): verifies grants a connection presents and keeps them for it (``AccessPolicy``),
/// takes publishers' revocation lists and passes a newer one on to the edges below (the purge
/// subscribers), and hands out the list it holds.
public struct GrantService: NodeService {
    /// The node's policy.
    public let access: AccessPolicy
    /// Where the edges below are (revocation lists go to them as purges do).
    public let purges: PurgeCoordinator?
    private let logger: Logger

    /// Creates the service.
    public init(access: AccessPolicy, purges: PurgeCoordinator?, logger: Logger = Logger(label: "stoq.grants")) {
        self.access = access
        self.purges = purges
        self.logger = logger
    }

    public var name: String { "grants" }
    public var frameTypes: ClosedRange<UInt64> { GrantMessage.Types.grant.rawValue...GrantMessage.Types.revocationsRequest.rawValue }
    public var maximumRequestLength: Int { GrantMessage.maximumPayloadLength + 16 }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let answer: ByteBuffer
        do {
            switch try GrantMessage.decode(request) {
            case .grant(let bytes):
                let grant = try AccessGrant(encoded: bytes)
                let held = try await access.present(grant, peer: connection.peerNodeID, connection: ObjectIdentifier(connection))
                logger.info("grant accepted", metadata: ["grant": "\(grant.id)", "rights": "\(held.effective.rights)", "peer": "\(connection.peerNodeID?.short ?? "-")"])
                answer = GrantMessage.grantAccepted(grantID: grant.grantID, rights: held.effective.rights.rawValue, notAfter: held.effective.notAfter).encoded()
            case .revocations(let bytes):
                let list = try RevocationList(encoded: bytes)
                let (current, changed) = try await access.accept(list)
                if changed {
                    logger.notice("revocation list taken", metadata: ["publisher": "\(list.publisher.short)", "version": "\(list.version)", "revoked": "\(list.grantIDs.count)"])
                    await passOn(current, except: connection)
                }
                answer = GrantMessage.revocations(current.encoded()).encoded()
            case .revocationsRequest(let publisher):
                let id = try NodeID(bytes: publisher.bytes)
                answer = GrantMessage.revocations(await access.revocations(of: id)?.encoded() ?? []).encoded()
            case .grantAccepted:
                answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: "unexpected request GRANT_ACCEPTED: it is an answer").encoded()
            }
        } catch let error as AccessError {
            answer = STOQMessage.error(code: AccessPolicy.noGrantCode, message: String(error.reason.prefix(1000))).encoded()
        } catch {
            answer = STOQMessage.error(code: ChunkErrorCode.badRequest, message: String("malformed \(request.type) request: \((error as? WireError)?.reason ?? "\(error)"); see docs/PROTOCOL.md, \"Access grants\"".prefix(1000))).encoded()
        }
        do {
            try await stream.write(answer)
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    /// Pushes a newer list to the edges below (each verifies it itself), a few seconds at most.
    func passOn(_ list: RevocationList, except origin: Connection) async {
        guard let purges else { return }
        let targets = await purges.subscriberConnections.filter { $0 !== origin }
        await withTaskGroup(of: Void.self) { group in
            for target in targets {
                group.addTask { [logger] in
                    let pushed = await withDeadline(.seconds(5)) {
                        try? await PeerClient(connection: target, name: "\(target.remoteAddress)").pushRevocations(list)
                    }
                    if (pushed ?? nil) == nil { logger.info("an edge below did not take the revocation list", metadata: ["peer": "\(target.remoteAddress)"]) }
                }
            }
        }
    }

    /// Asks `client` (an upstream) for the lists of this node's issuers and takes the newer ones.
    public static func fetchRevocations(from client: PeerClient, into access: AccessPolicy, logger: Logger) async {
        for issuer in access.issuers {
            do {
                if let list = try await client.revocations(of: issuer) { _ = try await access.accept(list) }
            } catch {
                logger.info("no revocation list from upstream", metadata: ["peer": "\(client.name)", "publisher": "\(issuer.short)", "error": "\(error)"])
            }
        }
    }

    public func status() async -> [String: any Sendable]? {
        let lists = await access.allRevocations
        return ["grants_held": await access.heldGrants, "revocation_lists": lists.count, "revoked_grants": lists.reduce(0) { $0 + $1.grantIDs.count },
                "operators": access.roles.operators.count]
    }
}

/// The revocation lists a node keeps in its store (`STORE/revocations.json`), written atomically.
public enum RevocationStore {
    /// The file in a store directory.
    public static func path(in store: String) -> String { store + "/revocations.json" }

    /// The lists saved (unverified; ``AccessPolicy`` checks each again).
    public static func load(store: String, logger: Logger) -> [RevocationList] {
        (StateFile.load([String].self, path: path(in: store), logger: logger) ?? []).compactMap { text in
            Data(base64Encoded: text).flatMap { try? RevocationList(encoded: Array($0)) }
        }
    }

    /// Saves the lists (errors logged: the lists are learnt again from upstream or the publisher).
    public static func save(_ lists: [RevocationList], store: String, logger: Logger) {
        do { try StateFile.save(lists.map { Data($0.encoded()).base64EncodedString() }, path: path(in: store)) } catch {
            logger.warning("cannot save the revocation lists", metadata: ["error": "\(error)"])
        }
    }
}
