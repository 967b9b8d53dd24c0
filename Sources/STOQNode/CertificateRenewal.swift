import Foundation
import Logging
import NIOCore
import STOQExchange
import STOQIdentity
import STOQTransport
import STOQWire

/// The issuer's side of certificate renewal (docs/PROTOCOL.md, "Certificate renewal"): answers
/// RENEW_REQUEST for nodes that authenticated with their current, still-valid certificate, with a
/// certificate of the same name, region and addresses, for at most ``maximumLifetime``.
///
/// A node runs it with `--role issuer --ca-dir DIR` (or `stoq ca serve`); it holds the CA key.
public final class IssuerService: NodeService {
    /// The CA that signs.
    public let authority: CertificateAuthority
    /// The longest lifetime granted.
    public let maximumLifetime: Duration
    private let onIssued: (@Sendable (RenewedCertificate) async throws -> String?)?
    private let logger: Logger
    private let counters = Counters()

    /// Creates the service.
    /// - Parameters:
    ///   - authority: the network CA (certificate and key).
    ///   - maximumLifetime: the longest lifetime it grants (default 24 h).
    ///   - onIssued: called with every certificate issued before it is handed out (e.g. to append it
    ///     to the network's CT log); a throw refuses the renewal. Returns a note for the log.
    public init(
        authority: CertificateAuthority, maximumLifetime: Duration = .seconds(86_400),
        onIssued: (@Sendable (RenewedCertificate) async throws -> String?)? = nil, logger: Logger = Logger(label: "stoq.issuer")
    ) {
        self.authority = authority
        self.maximumLifetime = maximumLifetime
        self.onIssued = onIssued
        self.logger = logger
    }

    public var name: String { "issuer" }
    public var frameTypes: ClosedRange<UInt64> { RenewalMessage.Types.renewRequest.rawValue...RenewalMessage.Types.renewed.rawValue }
    public var maximumRequestLength: Int { RenewalMessage.maximumRequestLength }

    /// Issues a renewal for a peer that presented `chain`: the answer to one RENEW_REQUEST.
    public func answer(_ request: Frame, presentedChain chain: [[UInt8]], now: Date = Date()) async -> RenewalAnswer {
        let message: RenewalMessage
        do { message = try RenewalMessage.decode(request) } catch {
            counters.add(refused: true)
            return .error(code: ChunkErrorCode.badRequest, message: "malformed \(request.type) request: \(error.reason); see docs/PROTOCOL.md, \"Certificate renewal\"")
        }
        guard case .renewRequest(let r) = message else {
            counters.add(refused: true)
            return .error(code: ChunkErrorCode.badRequest, message: "RENEWED is an answer, not a request")
        }
        do {
            let leaf = try authority.renew(
                presentedChain: chain, lifetimeSeconds: r.lifetimeSeconds, newPublicKey: r.publicKey, signature: r.signature,
                maximumLifetime: maximumLifetime, now: now)
            let note = try await onIssued?(leaf)
            counters.add(refused: false)
            let info = leaf.info
            var metadata: Logger.Metadata = [
                "node": "\(info.commonName ?? "?")", "id": "\(info.nodeID.hex.prefix(16))", "region": "\(info.region ?? "-")",
                "valid_until": "\(ISO8601DateFormatter().string(from: info.notValidAfter))", "rotated": "\(!r.publicKey.isEmpty)",
            ]
            if let note { metadata["ct"] = "\(note)" }
            logger.info("renewed a certificate", metadata: metadata)
            return .renewed([leaf.der])
        } catch {
            counters.add(refused: true)
            let reason = CertificateRenewer.describe(error)
            logger.notice("refused a renewal", metadata: ["reason": "\(reason)"])
            return .error(code: RenewalMessage.refusedCode, message: String(reason.utf8.prefix(1000)) ?? "renewal refused")
        }
    }

    /// Renews the issuer node's own certificate from its CA (no network), like a request from a
    /// peer: the same checks, and the certificate goes to ``onIssued`` (the CT log) too.
    public func renewOwn(_ credentials: NodeCredentials) async throws -> [[UInt8]] {
        let leaf = try authority.renew(presentedChain: credentials.chainDER, lifetimeSeconds: credentials.nominalLifetimeSeconds, maximumLifetime: maximumLifetime)
        _ = try await onIssued?(leaf)
        counters.add(refused: false)
        return [leaf.der]
    }

    public func serve(request: Frame, remaining: ByteBuffer, stream: QUICStream, connection: Connection) async {
        let answer = await answer(request, presentedChain: connection.peerCertificateChain)
        do {
            switch answer {
            case .renewed(let chain): try await stream.write(RenewalMessage.renewed(certificates: chain).encoded())
            case .error(let code, let message): try await stream.write(STOQMessage.error(code: code, message: message).encoded())
            }
            try await stream.finish()
        } catch {
            await stream.reset(code: ChunkErrorCode.internalError)
        }
    }

    public func status() async -> [String: any Sendable]? {
        let c = counters.snapshot
        return ["renewed": c.renewed, "refused": c.refused, "max_lifetime_s": Int(maximumLifetime.components.seconds),
                "ca": CertificateInfo(authority.certificate).commonName ?? "?"]
    }

    /// The issuer's counters.
    public var issued: (renewed: Int, refused: Int) { counters.snapshot }

    final class Counters: @unchecked Sendable {
        private let lock = NSLock()
        private var renewed = 0
        private var refused = 0
        func add(refused r: Bool) { lock.withLock { if r { refused += 1 } else { renewed += 1 } } }
        var snapshot: (renewed: Int, refused: Int) { lock.withLock { (renewed, refused) } }
    }
}

/// The answer to a RENEW_REQUEST.
public enum RenewalAnswer: Sendable, Equatable {
    /// The new chain, DER, leaf first.
    case renewed([[UInt8]])
    /// An ERROR frame (code 6: renewal refused).
    case error(code: UInt64, message: String)
}

extension PeerClient {
    /// Asks the issuer at the other end for a renewal of the certificate this connection was
    /// made with.
    /// - Returns: the new chain, DER, leaf first.
    /// - Throws: ``NodeError`` `.refused` with the issuer's reason, `.protocolViolation` for a bad
    ///   answer; transport errors as they are.
    public func renewCertificate(_ request: RenewalMessage.RenewRequest) async throws -> [[UInt8]] {
        let stream = try await openRequestStream(priority: .control)
        try await stream.write(RenewalMessage.renewRequest(request).encoded())
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: RenewalMessage.maximumAnswerLength)
        let answer: ByteBuffer
        do { answer = try await stream.readAll(limit: RenewalMessage.maximumAnswerLength + 16) } catch {
            throw NodeError(.refused, "\(name) did not answer the renewal request (\(CertificateRenewer.describe(error))); is it the network's issuer (`stoq ca serve`, or `stoq node --role issuer`)?")
        }
        decoder.handle(bytes: answer)
        guard let frame = try decoder.pollFrame() else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering RENEW_REQUEST")
        }
        if RenewalMessage.handles(frame.type), case .renewed(let chain) = try RenewalMessage.decode(frame) { return chain }
        if case .error(let code, let text) = try STOQMessage.decode(frame) {
            if code == RenewalMessage.refusedCode { throw NodeError(.refused, "the issuer \(name) refused the renewal: \(text)") }
            throw NodeError(.refused, "\(name) does not renew certificates (error \(code): \(text)); is it the network's issuer (`stoq ca serve`, or `stoq node --role issuer`)?")
        }
        throw NodeError(.protocolViolation, "\(name) answered RENEW_REQUEST with \(frame.type)")
    }
}

/// Keeps a node's certificate fresh: renews it at two thirds of its lifetime (from an issuer over
/// `stoq/1`, or from a CA the node holds itself), swaps the new one into the endpoint with
/// ``Endpoint/updateIdentity(tls:)`` (connections stay up) and writes the certificate file
/// atomically so a restart uses it. Failures are retried with backoff and reported in the log and
/// in `/status`; expiry without renewal is logged once, clearly.
public actor CertificateRenewer {
    /// How a renewal is obtained: from the current credentials, the new chain (DER, leaf first).
    public typealias Renew = @Sendable (NodeCredentials) async throws -> [[UInt8]]

    private let configuration: NodeConfiguration
    private let endpoint: Endpoint
    private let renew: Renew?
    private let source: String
    private let logger: Logger
    private let trust: TrustRoots?
    private var credentials: NodeCredentials
    private var schedule: RenewalSchedule
    private var sleeper: Task<Void, Never>?
    private var stopped = false

    /// Creates a renewer for a node's endpoint.
    /// - Parameters:
    ///   - configuration: where the certificate, key and CA files are (rewritten on renewal).
    ///   - credentials: the credentials the endpoint runs with now.
    ///   - renew: how to get a renewal (nil: no issuer; the renewer only watches for expiry).
    ///   - source: the issuer, for messages (an address, or "the local CA").
    public init(
        configuration: NodeConfiguration, endpoint: Endpoint, credentials: NodeCredentials, renew: Renew?, source: String,
        logger: Logger
    ) {
        self.configuration = configuration
        self.endpoint = endpoint
        self.credentials = credentials
        self.renew = renew
        self.source = source
        self.logger = logger
        self.trust = try? TrustRoots.load(path: configuration.ca)
        self.schedule = RenewalSchedule(
            notBefore: credentials.info.notValidBefore, notAfter: credentials.info.notValidAfter, canRenew: renew != nil)
    }

    /// A renewal function that dials `issuer` from `endpoint` with the current certificate (a new
    /// connection each time: the issuer checks the certificate a connection was made with).
    ///
    /// An attempt gives up after a twelfth of the certificate's lifetime (1 s to 10 s), so a dead
    /// issuer costs a short certificate few of its retries.
    public static func network(issuer: PeerAddress, endpoint: Endpoint) -> Renew {
        { credentials in
            let limit = min(10, max(1, Double(credentials.nominalLifetimeSeconds) / 12))
            return try await withDeadline(seconds: limit, "the issuer \(issuer) did not answer within \(String(format: "%.1f", limit)) s") {
                let connection = try await endpoint.connect(host: issuer.host, port: issuer.port)
                defer { Task { await connection.close(code: 0, reason: "renewed") } }
                let client = PeerClient(connection: connection, name: issuer.description)
                return try await client.renewCertificate(.init(lifetimeSeconds: credentials.nominalLifetimeSeconds))
            }
        }
    }

    /// Runs `body`, or fails with `message` after `seconds` (the body keeps running to its own end).
    static func withDeadline<T: Sendable>(seconds: Double, _ message: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let once = Once<T>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            Task {
                do { once.resume(.success(try await body())) } catch { once.resume(.failure(error)) }
            }
            Task {
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                once.resume(.failure(NodeError(.unavailable, message)))
            }
        }
    }

    /// A continuation resumed once, by whichever side comes first.
    ///
    /// `@unchecked Sendable`: the continuation is behind `lock`.
    final class Once<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var continuation: CheckedContinuation<T, any Error>?
        private var early: Result<T, any Error>?
        func set(_ c: CheckedContinuation<T, any Error>) {
            let done: Result<T, any Error>? = lock.withLock {
                if let early { return early }
                continuation = c
                return nil
            }
            if let done { c.resume(with: done) }
        }
        func resume(_ result: Result<T, any Error>) {
            let c: CheckedContinuation<T, any Error>? = lock.withLock {
                if let continuation {
                    self.continuation = nil
                    return continuation
                }
                if early == nil { early = result }
                return nil
            }
            c?.resume(with: result)
        }
    }

    /// An error in words for people (no type names).
    static func describe(_ error: any Error) -> String {
        if let e = error as? NodeError { return e.reason }
        if let e = error as? IdentityError { return e.reason }
        if let e = error as? STOQError { return e.reason }
        if let e = error as? WireError { return e.reason }
        return "\(error)"
    }

    /// A renewal function for a node that holds the CA itself (the issuer).
    public static func local(_ authority: CertificateAuthority, maximumLifetime: Duration) -> Renew {
        { credentials in
            let leaf = try authority.renew(presentedChain: credentials.chainDER, lifetimeSeconds: credentials.nominalLifetimeSeconds, maximumLifetime: maximumLifetime)
            return [leaf.der]
        }
    }

    /// The current schedule and counters.
    public var state: RenewalSchedule { schedule }

    /// The current credentials.
    public var current: NodeCredentials { credentials }

    /// Renews on time until ``stop()``.
    public func run() async {
        while !stopped && !Task.isCancelled {
            let now = Date()
            switch schedule.next(now: now) {
            case .expired:
                let f = ISO8601DateFormatter()
                let why = schedule.lastError.map { "; the last renewal attempt failed: \($0)" } ?? (renew == nil ? "; this node has no issuer (give --issuer ADDR)" : "")
                logger.critical("stoq: error: the certificate of \(configuration.name) (\(configuration.certificate)) expired at \(f.string(from: schedule.notAfter)) and was not renewed\(why). Peers no longer accept new connections from this node; renew it with its issuer, or replace the certificate and key files and send SIGHUP")
            case .renew:
                await attempt()
            case .wait(let until):
                let seconds = min(1, max(0.05, until.timeIntervalSince(now)))
                await sleep(seconds)
            }
        }
    }

    /// Stops ``run()``.
    public func stop() {
        stopped = true
        sleeper?.cancel()
    }

    private func sleep(_ seconds: Double) async {
        let task = Task<Void, Never> { _ = try? await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
        sleeper = task
        await task.value
        sleeper = nil
    }

    private func attempt() async {
        guard let renew else { return }
        let old = credentials
        do {
            let chain = try await renew(old)
            let fresh = try old.replacingChain(chain)
            try await check(fresh, against: old)
            try await install(fresh, write: true)
            schedule.renewed(notBefore: fresh.info.notValidBefore, notAfter: fresh.info.notValidAfter)
            let f = ISO8601DateFormatter()
            logger.info("certificate renewed", metadata: [
                "renewals": "\(schedule.renewals)", "valid_until": "\(f.string(from: fresh.info.notValidAfter))", "issuer": "\(source)",
            ])
        } catch {
            let reason = Self.describe(error)
            schedule.failed(reason, now: Date())
            let n = schedule.consecutiveFailures
            if n <= 5 || n % 10 == 0 {
                let f = ISO8601DateFormatter()
                let what = schedule.isFailing ? "certificate renewal keeps failing" : "certificate renewal failed"
                logger.warning("\(what) (\(n) attempt(s) in a row): \(reason); the certificate expires at \(f.string(from: schedule.notAfter)); retrying in \(String(format: "%.1f", schedule.nextAttempt.timeIntervalSinceNow)) s", metadata: ["issuer": "\(source)"])
            }
        }
    }

    /// Refuses a renewed certificate that is not for this node or does not chain to the CA.
    private func check(_ fresh: NodeCredentials, against old: NodeCredentials) async throws {
        let a = old.info, b = fresh.info
        guard a.commonName == b.commonName, a.region == b.region else {
            throw NodeError(.protocolViolation, "the issuer returned a certificate for \(b.commonName ?? "?") (region \(b.region ?? "-")), not for \(a.commonName ?? "?") (region \(a.region ?? "-"))")
        }
        guard fresh.info.notValidAfter > Date() else {
            throw NodeError(.protocolViolation, "the issuer returned a certificate that is already expired")
        }
        if let trust {
            do { _ = try await trust.verify(chainDER: fresh.chainDER) } catch {
                throw NodeError(.protocolViolation, "the issuer returned a certificate the network CA (\(configuration.ca)) did not issue: \(error.reason)")
            }
        }
    }

    /// Swaps `fresh` into the endpoint (new handshakes use it; connections stay) and, when
    /// `write`, writes the certificate (and key) files atomically.
    private func install(_ fresh: NodeCredentials, write: Bool) async throws {
        var tls = try configuration.tlsConfiguration()
        tls.certificateChainPEM = fresh.certificateChainPEM
        tls.privateKeyPEM = fresh.privateKeyPEM
        // A --public-read node sends the CA after its own certificate (readers pin the CA): the
        // renewed chain needs it appended again.
        if configuration.publicRead == true { tls = try tls.servingAnonymousReaders() }
        try await endpoint.updateIdentity(tls: tls)
        credentials = fresh
        if write {
            do {
                if fresh.privateKeyPEM != (try? PEMFile.read(configuration.key)) {
                    try PEMFile.write(fresh.privateKeyPEM, to: configuration.key, mode: 0o600)
                }
                try PEMFile.write(fresh.certificateChainPEM, to: configuration.certificate, mode: 0o644)
            } catch {
                logger.warning("the renewed certificate is in use but could not be written; a restart would use the old one", metadata: [
                    "file": "\(configuration.certificate)", "error": "\(error)",
                ])
            }
        }
    }

    /// Reloads the certificate and key files (SIGHUP): checks them like at start (valid now, the
    /// key matches, issued by the CA) and swaps them in; on any problem keeps the current ones.
    /// - Returns: a line for the log.
    @discardableResult
    public func reload() async -> String {
        do {
            try await configuration.checkCredentials(now: Date())
            let fresh = try NodeCredentials.load(certificatePath: configuration.certificate, keyPath: configuration.key)
            if fresh.nodeID != credentials.nodeID {
                logger.notice("the reloaded certificate has another key: this node's id changes for new connections", metadata: ["id": "\(fresh.nodeID.hex.prefix(16))"])
            }
            try await install(fresh, write: false)
            schedule.adopt(notBefore: fresh.info.notValidBefore, notAfter: fresh.info.notValidAfter)
            let line = "reloaded the certificate \(configuration.certificate): valid until \(ISO8601DateFormatter().string(from: fresh.info.notValidAfter))"
            logger.notice("\(line)")
            return line
        } catch {
            let line = "stoq: error: could not reload the certificate on SIGHUP: \(Self.describe(error)); still using the current one (valid until \(ISO8601DateFormatter().string(from: credentials.info.notValidAfter)))"
            logger.error("\(line)")
            return line
        }
    }

    /// The `certificate` section of `/status`.
    public func statusDocument() -> [String: any Sendable] {
        let now = Date()
        let f = ISO8601DateFormatter()
        var doc: [String: any Sendable] = [
            "not_after": f.string(from: schedule.notAfter),
            "expires_in_s": (schedule.notAfter.timeIntervalSince(now) * 10).rounded() / 10,
            "lifetime_s": schedule.lifetime.rounded(),
            "renewals": schedule.renewals,
            "renewal_failures": schedule.failures,
            "consecutive_failures": schedule.consecutiveFailures,
            "state": schedule.state(now: now),
            "issuer": renew == nil ? "none" : source,
        ]
        if renew != nil { doc["next_renewal"] = f.string(from: schedule.nextAttempt) }
        if let error = schedule.lastError { doc["last_error"] = error }
        if schedule.isFailing || now >= schedule.notAfter {
            doc["warning"] = now >= schedule.notAfter
                ? "the certificate expired and was not renewed; peers refuse new connections from this node"
                : "certificate renewal keeps failing (\(schedule.consecutiveFailures) attempts): \(schedule.lastError ?? "?"); the certificate expires at \(f.string(from: schedule.notAfter))"
        }
        return doc
    }
}

/// What ``Node/start(_:services:metrics:logger:)`` needs for renewal: the node's credentials, how
/// it renews, and the issuer service it runs when it has the `issuer` role.
struct RenewalSetup {
    var credentials: NodeCredentials
    var renew: (Endpoint) -> CertificateRenewer.Renew?
    var source: String
    var services: [any NodeService]
}

extension IssuerService {
    /// The longest lifetime `configuration` lets an issuer grant (`maxLifetime`, default 24 h).
    public static func maximumLifetime(_ configuration: NodeConfiguration) throws -> Duration {
        guard let text = configuration.maxLifetime else { return .seconds(86_400) }
        do { return try CertificateLifetime.parse(text) } catch {
            throw NodeError(.invalidArgument, "--max-lifetime: \(error.reason)")
        }
    }

    /// Loads the CA of a node with the `issuer` role.
    public static func authority(_ configuration: NodeConfiguration) throws -> CertificateAuthority {
        guard let directory = configuration.caDir else {
            throw NodeError(.invalidArgument, "the issuer role needs the CA: give --ca-dir DIR (the directory `stoq certs init-ca` wrote ca.pem and ca.key into)")
        }
        if let uri = configuration.caKey {
            // The CA's key is in a token: renewals are signed there.
            do {
                let token = try TokenKey(uri: uri)
                return try CertificateAuthority(
                    certificatePEM: PEMFile.read((directory as NSString).appendingPathComponent("ca.pem")), signer: token, keyURI: uri)
            } catch let error as STOQError {
                throw NodeError(.invalidArgument, "cannot use the CA key \(PKCS11URI.redacted(uri)) for the issuer role: \(error.reason)")
            } catch let error as IdentityError {
                throw NodeError(.invalidArgument, "cannot load the CA from \(directory) with the key \(PKCS11URI.redacted(uri)) for the issuer role: \(error.reason)")
            }
        }
        do { return try CertificateAuthority.load(directory: directory) } catch {
            throw NodeError(.invalidArgument, "cannot load the CA from \(directory) for the issuer role: \(error.reason)")
        }
    }

    static func renewalSetup(_ configuration: NodeConfiguration, services: [any NodeService], logger: Logger) throws -> RenewalSetup {
        let credentials: NodeCredentials
        do { credentials = try NodeCredentials.load(certificatePath: configuration.certificate, keyPath: configuration.key) } catch {
            throw NodeError(.invalidArgument, "cannot use the certificate \(configuration.certificate) with the key \(configuration.key): \(error.reason)")
        }
        if configuration.roles.contains("issuer") {
            let authority = try authority(configuration)
            let maximum = try maximumLifetime(configuration)
            let given = services.first { $0.name == "issuer" } as? IssuerService
            let service = given ?? IssuerService(authority: authority, maximumLifetime: maximum, logger: logger)
            return RenewalSetup(credentials: credentials, renew: { _ in { try await service.renewOwn($0) } }, source: "the local CA (\(configuration.caDir ?? "?"))", services: given == nil ? [service] : [])
        }
        if let issuer = configuration.issuer {
            return RenewalSetup(credentials: credentials, renew: { CertificateRenewer.network(issuer: issuer, endpoint: $0) }, source: issuer.description, services: [])
        }
        return RenewalSetup(credentials: credentials, renew: { _ in nil }, source: "none", services: [])
    }
}
