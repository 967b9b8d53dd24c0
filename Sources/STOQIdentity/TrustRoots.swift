import Foundation
import X509

/// The certificates a node trusts as issuers of its peers' certificates (normally the network CA).
public struct TrustRoots: Sendable {
    /// The trusted certificates in PEM.
    public let pem: String
    /// The parsed certificates.
    public let certificates: [Certificate]

    /// Parses one or more `CERTIFICATE` blocks.
    public init(pem: String) throws(IdentityError) {
        let certificates = try PEMFile.certificates(in: pem)
        guard !certificates.isEmpty else {
            throw IdentityError(.malformedCertificate, "no CERTIFICATE block among the trust roots")
        }
        self.pem = pem
        self.certificates = certificates
    }

    /// Loads a PEM file of trusted certificates.
    public static func load(path: String) throws(IdentityError) -> TrustRoots {
        try TrustRoots(pem: PEMFile.read(path))
    }

    /// Verifies a peer's chain (leaf first, DER) against these roots under RFC 5280 rules at `time`.
    ///
    /// The transport's TLS library makes the same decision during the handshake; this is for tools and
    /// for checking certificates outside a handshake.
    /// - Returns: the node id of the verified leaf.
    public func verify(chainDER: [[UInt8]], at time: Date = Date()) async throws(IdentityError) -> NodeID {
        guard let leafDER = chainDER.first else { throw IdentityError(.malformedCertificate, "the chain is empty") }
        let chain: [Certificate]
        do {
            chain = try chainDER.map { try Certificate(derEncoded: $0) }
        } catch {
            throw IdentityError(.malformedCertificate, "a certificate in the chain does not parse: \(error)")
        }
        var verifier = Verifier(rootCertificates: CertificateStore(certificates)) {
            RFC5280Policy(fixedValidationTime: time)
        }
        let result = await verifier.validate(
            leaf: chain[0],
            intermediates: CertificateStore(chain.dropFirst())
        )
        switch result {
        case .validCertificate:
            return try NodeID(certificateDER: leafDER)
        case .couldNotValidate(let failures):
            let reasons = failures.map { "\($0.policyFailureReason)" }.joined(separator: "; ")
            throw IdentityError(.untrusted, "the certificate of \(CertificateInfo(chain[0]).commonName ?? "the peer") does not verify against the trust roots: \(reasons)")
        }
    }
}
