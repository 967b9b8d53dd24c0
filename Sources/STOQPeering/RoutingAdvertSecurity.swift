import Crypto
import Foundation
import STOQExchange
import STOQIdentity
import STOQRouting
import STOQTransport
import STOQWire
import X509

/// One signed advert as a node holds it: the wire form (re-sent unchanged), its decoded body and
/// the signer's certificate (DER).
public struct SignedRoutingAdvert: Sendable, Hashable {
    /// The advert as it travels (its `hops` and `ageMilliseconds` are rewritten on each hop).
    public var advert: RoutingAdvertMessage.Advert
    /// The decoded body.
    public var body: RoutingAdvertMessage.Body
    /// The signer's DER certificate (its SHA-256 is `advert.certificateDigest`).
    public var certificate: [UInt8]
}

/// Signed routing (docs/PROTOCOL.md "Signed routing adverts"): the node's signing key and
/// certificate, the network's trust roots, and a bounded cache of signer certificates whose chain
/// has been checked, so that a node verifies a chain once per certificate, not once per gossip
/// round.
///
/// `@unchecked Sendable`: the credentials, the cache and the counters are behind `lock`.
public final class RoutingAdvertSecurity: @unchecked Sendable {
    /// The CA certificates a signer's certificate must chain to.
    public let trustRoots: TrustRoots
    /// How long an advert this node signs stays valid.
    public let advertLifetime: Duration
    /// The most certificates the cache holds (oldest out first).
    public let cacheCapacity: Int
    /// The longest lifetime a received advert may claim (beyond it, the advert is refused).
    public static let maximumAdvertLifetime: Duration = .seconds(600)
    /// The default lifetime of the adverts a node signs.
    public static let defaultAdvertLifetime: Duration = .seconds(120)

    private let lock = NSLock()
    private var signing: (signer: any CertificateSigner, certificate: [UInt8], digest: [UInt8], nodeID: NodeID)?
    private var cache: [[UInt8]: Entry] = [:]
    private var order: [[UInt8]] = []
    private var refused: [[UInt8]: Date] = [:]
    private var counters = Counters()
    private var source: (@Sendable () async -> NodeCredentials)?
    private var sourcePEM: String?

    /// A certificate whose chain verified.
    struct Entry {
        var nodeID: NodeID
        var key: P256.Signing.PublicKey
        var notAfter: Date
        var certificate: [UInt8]
    }

    /// What the cache and the verifier did (for `stoq status` and the cost figures).
    public struct Counters: Sendable, Hashable {
        /// Chains verified (cache misses).
        public var chainVerifications = 0
        /// Certificates found in the cache.
        public var cacheHits = 0
        /// Certificates refused (no chain to the CA, expired, not P-256, malformed).
        public var certificatesRefused = 0
        /// Advert signatures checked.
        public var signatureChecks = 0
        /// Advert signatures that did not verify.
        public var badSignatures = 0
        /// Adverts this node signed.
        public var signed = 0
    }

    /// Creates the security of a node (or client) holding `credentials`.
    /// - Parameters:
    ///   - trustRoots: the network CA.
    ///   - credentials: the node's certificate and key; nil to verify only (no own advert).
    ///   - signer: the node's key when it is already open (a key in a token is opened once per
    ///     process); nil to use `credentials`' key (a PEM key, or a `pkcs11:` URI opened here).
    ///   - advertLifetime: how long the node's own adverts stay valid (1 s … 10 min).
    ///   - cacheCapacity: verified certificates kept.
    /// - Throws: ``NodeError`` `.invalidArgument` when the key is not a P-256 key or not the
    ///   certificate's.
    public init(
        trustRoots: TrustRoots, credentials: NodeCredentials?, signer: (any CertificateSigner)? = nil,
        advertLifetime: Duration = RoutingAdvertSecurity.defaultAdvertLifetime, cacheCapacity: Int = 4096
    ) throws {
        self.trustRoots = trustRoots
        self.advertLifetime = min(max(advertLifetime, .seconds(1)), Self.maximumAdvertLifetime)
        self.cacheCapacity = max(1, cacheCapacity)
        if let credentials { try update(credentials, signer: signer) }
    }

    /// Signs with `credentials` from now on (after a renewal or a reload).
    /// - Parameter signer: the key, already open; nil: the key this security signs with now when
    ///   it is the certificate's (a renewal on the same key in a token), else `credentials`' key
    ///   (a PEM key, or a `pkcs11:` URI, opened here).
    /// - Throws: ``NodeError`` `.invalidArgument` when the key is not a P-256 key or not the
    ///   certificate's.
    public func update(_ credentials: NodeCredentials, signer: (any CertificateSigner)? = nil) throws {
        guard let leaf = credentials.chainDER.first else {
            throw NodeError(.invalidArgument, "routing: the node certificate holds no certificate")
        }
        let current = lock.withLock { self.signing?.signer }
        let key: any CertificateSigner
        if let signer {
            key = signer
        } else if let current, current.publicKey == credentials.certificate.publicKey, credentials.keyIsInToken {
            key = current
        } else if credentials.keyIsInToken {
            do { key = try TokenKey(uri: credentials.privateKeyPEM) } catch {
                throw NodeError(.invalidArgument, "routing: the node key cannot sign routing adverts: \(error.reason)")
            }
        } else {
            do { key = try SoftwareSigner(pem: credentials.privateKeyPEM) } catch {
                throw NodeError(.invalidArgument, "routing: the node key cannot sign routing adverts (a P-256 key is needed): \(error.reason)")
            }
        }
        guard key.publicKey == credentials.certificate.publicKey, key.p256PublicKey != nil else {
            throw NodeError(.invalidArgument, "routing: the node key is not the certificate's P-256 key; it cannot sign routing adverts")
        }
        let digest = Array(SHA256.hash(data: leaf))
        lock.withLock { signing = (key, leaf, digest, credentials.nodeID) }
    }

    /// Signs with whatever credentials `source` returns at the time (the node's renewer: a renewed
    /// certificate is used from the next advert on).
    public func follow(_ source: @escaping @Sendable () async -> NodeCredentials) {
        lock.withLock { self.source = source }
    }

    /// Picks up new credentials from the source given to ``follow(_:)``, if any.
    func refresh() async {
        guard let source = lock.withLock({ self.source }) else { return }
        let credentials = await source()
        guard lock.withLock({ sourcePEM != credentials.certificateChainPEM }) else { return }
        if (try? update(credentials)) != nil {
            lock.withLock { sourcePEM = credentials.certificateChainPEM }
        }
    }

    /// The id of the node this security signs for, if it signs.
    public var nodeID: NodeID? { lock.withLock { signing?.nodeID } }

    /// The counters so far.
    public var stats: Counters { lock.withLock { counters } }

    /// Certificates in the cache.
    public var cachedCertificates: Int { lock.withLock { cache.count } }

    // MARK: Signing

    /// Signs `body` (whose `nodeID` is replaced by this node's).
    /// - Returns: nil when this security holds no key.
    public func sign(_ body: RoutingAdvertMessage.Body) -> SignedRoutingAdvert? {
        guard let signing = lock.withLock({ signing }) else { return nil }
        var body = body
        body.nodeID = signing.nodeID.bytes
        let bytes = body.encoded()
        // In memory, or in the token (a few milliseconds on a hardware token; once per resign interval).
        guard let signature = try? signing.signer.p256Signature(for: RoutingAdvertMessage.signingLabel + bytes) else { return nil }
        lock.withLock { counters.signed += 1 }
        return SignedRoutingAdvert(
            advert: .init(hops: 0, ageMilliseconds: 0, certificateDigest: signing.digest, body: bytes, signature: Array(signature.derRepresentation)),
            body: body, certificate: signing.certificate)
    }

    // MARK: Certificates

    /// The cached entry of the certificate with SHA-256 `digest`, valid at `now`.
    func entry(_ digest: [UInt8], now: Date) -> Entry? {
        lock.withLock {
            guard let entry = cache[digest] else { return nil }
            guard entry.notAfter > now else {
                cache[digest] = nil
                order.removeAll { $0 == digest }
                return nil
            }
            counters.cacheHits += 1
            return entry
        }
    }

    /// Makes sure the certificate `der` (SHA-256 `digest`) is in the cache: verifies its chain to
    /// the trust roots at `now` the first time (a refused one is remembered for a minute).
    /// - Returns: whether the certificate is usable.
    @discardableResult
    func admit(_ der: [UInt8], digest: [UInt8], now: Date) async -> Bool {
        if entry(digest, now: now) != nil { return true }
        let known = lock.withLock { () -> Bool in
            if let until = refused[digest], until > now { return true }
            return false
        }
        if known { return false }
        do {
            let nodeID = try await trustRoots.verify(chainDER: [der], at: now)
            let certificate = try Certificate(derEncoded: der)
            guard let p256 = P256.Signing.PublicKey(certificate.publicKey) else {
                throw NodeError(.refused, "not a P-256 key")
            }
            let entry = Entry(nodeID: nodeID, key: p256, notAfter: certificate.notValidAfter, certificate: der)
            lock.withLock {
                counters.chainVerifications += 1
                if cache[digest] == nil {
                    if order.count >= cacheCapacity, let oldest = order.first {
                        order.removeFirst()
                        cache[oldest] = nil
                    }
                    order.append(digest)
                }
                cache[digest] = entry
            }
            return true
        } catch {
            lock.withLock {
                counters.chainVerifications += 1
                counters.certificatesRefused += 1
                if refused.count >= cacheCapacity { refused.removeAll() }
                refused[digest] = now.addingTimeInterval(60)
            }
            return false
        }
    }

    /// Whether `advert` is signed by the holder of the cached certificate it names, for the node
    /// its body names.
    func verifySignature(_ signed: SignedRoutingAdvert, now: Date) -> Bool {
        guard let entry = entry(signed.advert.certificateDigest, now: now), entry.nodeID.bytes == signed.body.nodeID else {
            lock.withLock { counters.badSignatures += 1 }
            return false
        }
        let valid: Bool
        if let signature = try? P256.Signing.ECDSASignature(derRepresentation: signed.advert.signature) {
            valid = entry.key.isValidSignature(signature, for: RoutingAdvertMessage.signingLabel + signed.advert.body)
        } else {
            valid = false
        }
        lock.withLock {
            counters.signatureChecks += 1
            if !valid { counters.badSignatures += 1 }
        }
        return valid
    }

    /// What binds a signed advert: SHA-256 over its certificate digest, body and signature.
    static func preverifiedKey(_ signed: SignedRoutingAdvert) -> [UInt8] {
        var h = SHA256()
        h.update(data: signed.advert.certificateDigest)
        h.update(data: signed.advert.body)
        h.update(data: signed.advert.signature)
        return Array(h.finalize())
    }

    /// Checks the advert's signature as ``verifySignature(_:now:)`` does — outside any router
    /// lock — and, when it verifies, remembers it so that the matrix's verifier takes it under its
    /// lock without checking the signature again.
    func preverify(_ signed: SignedRoutingAdvert, now: Date) -> Bool {
        guard verifySignature(signed, now: now) else { return false }
        PreverifiedAdverts.shared.insert(Self.preverifiedKey(signed))
        return true
    }

    /// Whether the advert's signature was checked by ``preverify(_:now:)`` and its certificate is
    /// still cached and valid at `now` (the record is taken: a second use checks again).
    func takePreverified(_ signed: SignedRoutingAdvert, now: Date) -> Bool {
        guard PreverifiedAdverts.shared.take(Self.preverifiedKey(signed)) else { return false }
        guard let entry = entry(signed.advert.certificateDigest, now: now) else { return false }
        return entry.nodeID.bytes == signed.body.nodeID
    }

    /// The cached DER certificate with SHA-256 `digest`, if any.
    func certificate(_ digest: [UInt8]) -> [UInt8]? {
        lock.withLock { cache[digest]?.certificate }
    }
}

/// Adverts whose signature was checked outside a router's lock (``RoutingAdvertSecurity/preverify(_:now:)``),
/// taken once by the matrix's verifier under that lock; oldest out first beyond ``capacity``. One
/// per process: a key binds the certificate, the body and the signature, so an entry is true
/// whichever router checked it.
///
/// `@unchecked Sendable`: state behind `lock`.
final class PreverifiedAdverts: @unchecked Sendable {
    /// The most remembered (a gossip round carries at most a few hundred adverts).
    static let capacity = 4096
    static let shared = PreverifiedAdverts()
    private let lock = NSLock()
    private var keys: Set<[UInt8]> = []
    private var order: [[UInt8]] = []

    func insert(_ key: [UInt8]) {
        lock.withLock {
            guard keys.insert(key).inserted else { return }
            order.append(key)
            if order.count > Self.capacity { keys.remove(order.removeFirst()) }
        }
    }

    func take(_ key: [UInt8]) -> Bool { lock.withLock { keys.remove(key) != nil } }
}

/// The ``RoutingAdvertVerifier`` a node's matrix runs with: the proof must be a
/// ``SignedRoutingAdvert`` for exactly the advert's node and version, signed by the key of a
/// certificate already admitted to the cache (chain checked), valid now.
struct SignedAdvertVerifier: RoutingAdvertVerifier {
    let security: RoutingAdvertSecurity

    func verify(_ advert: RoutingNodeAdvert, proof: RoutingAdvertProof, now: Duration) -> Bool {
        guard let signed = proof.signed as? SignedRoutingAdvert,
              RoutingNodeID(signed.body.routingID) == advert.node, signed.body.sequence == advert.version
        else { return false }
        let date = Date(timeIntervalSince1970: Double(now.components.seconds) + Double(now.components.attoseconds) / 1e18)
        // Checked already outside the router's lock (NodeRouter.handleAdverts): no second ECDSA check.
        if security.takePreverified(signed, now: date) { return true }
        return security.verifySignature(signed, now: date)
    }
}
