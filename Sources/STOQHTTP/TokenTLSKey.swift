import Dispatch
import NIOCore
import NIOSSL
import STOQIdentity
import STOQTransport

/// The HTTPS front door's key when it is in a PKCS#11 token: swift-nio-ssl's BoringSSL has no way
/// to reach a PKCS#11 module itself, but it lets a custom key sign the handshake. This one signs in
/// the token (``TokenKey``, through GnuTLS), off the event loop: a hardware token can take
/// milliseconds per signature, and the event loop must not block on it.
struct TokenTLSKey: NIOSSLCustomPrivateKey, Hashable {
    let token: TokenKey
    /// Signings run here, one at a time per process (the token's session is used under a lock anyway).
    private static let queue = DispatchQueue(label: "stoq.https.token-signing")

    /// P-256 with SHA-256: the only algorithm a STOQ key signs (TLS 1.3 `ecdsa_secp256r1_sha256`,
    /// and TLS 1.2 ECDHE-ECDSA with SHA-256).
    var signatureAlgorithms: [SignatureAlgorithm] { [.ecdsaSecp256R1Sha256] }

    func sign(channel: Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        guard algorithm == .ecdsaSecp256R1Sha256 else {
            promise.fail(HTTPSServerError(.certificate, "the key in the token signs only ECDSA P-256 with SHA-256, not \(algorithm)"))
            return promise.futureResult
        }
        let message = Array(data.readableBytesView)
        let token = self.token
        Self.queue.async {
            // TokenKey hashes with SHA-256 and returns the DER ECDSA signature TLS carries.
            do { promise.succeed(ByteBuffer(bytes: try token.signSHA256(message))) } catch { promise.fail(error) }
        }
        return promise.futureResult
    }

    func decrypt(channel: Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(HTTPSServerError(.certificate, "a P-256 key does not decrypt"))
    }

    static func == (a: TokenTLSKey, b: TokenTLSKey) -> Bool { a.token === b.token }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(token)) }
}
