import Crypto
import Foundation
import SwiftASN1
import X509

/// A node's certificate chain and private key: what it presents in the TLS handshake.
///
/// Both are PEM text that other TLS tools (OpenSSL, GnuTLS, Python's `ssl`) read as they are:
/// the chain is one or more `CERTIFICATE` blocks, leaf first; the key is an unencrypted PKCS#8
/// `PRIVATE KEY` block (P-256 ECDSA).
public struct NodeCredentials: Sendable {
    /// The certificate chain in PEM, leaf first.
    public let certificateChainPEM: String
    /// The private key in PEM (PKCS#8), or the `pkcs11:` URI of a key in a token.
    public let privateKeyPEM: String
    /// The parsed leaf certificate.
    public let certificate: Certificate
    /// The node id of the leaf's key.
    public var nodeID: NodeID { NodeID(publicKey: certificate.publicKey) }
    /// The region recorded in the certificate (subject OU `region=…`), if any.
    public var region: String? { CertificateInfo(certificate).region }

    /// Pairs a chain with its key, checking that they parse and belong together.
    public init(certificateChainPEM: String, privateKeyPEM: String) throws(IdentityError) {
        let chain = try PEMFile.certificates(in: certificateChainPEM)
        guard let leaf = chain.first else {
            throw IdentityError(.malformedCertificate, "no CERTIFICATE block in the certificate PEM")
        }
        // A key in a token (a `pkcs11:` URI) is checked against the certificate by GnuTLS when
        // the transport loads it.
        if !PKCS11URI.isURI(privateKeyPEM) {
            let key = try PEMFile.privateKey(in: privateKeyPEM)
            guard key.publicKey == leaf.publicKey else {
                throw IdentityError(.keyMismatch, "the private key does not belong to the certificate for \(CertificateInfo(leaf).commonName ?? "?")")
            }
        }
        self.certificateChainPEM = certificateChainPEM
        self.privateKeyPEM = privateKeyPEM
        self.certificate = leaf
    }

    /// Loads a certificate chain file and a key file (as written by `stoq certs issue`).
    public static func load(certificatePath: String, keyPath: String) throws(IdentityError) -> NodeCredentials {
        try NodeCredentials(
            certificateChainPEM: PEMFile.read(certificatePath),
            privateKeyPEM: PEMFile.read(keyPath)
        )
    }

    /// Writes `NAME.pem` and `NAME.key` (mode 0600) into `directory`, creating it if needed.
    /// - Returns: the two paths written.
    @discardableResult
    public func write(to directory: String, name: String) throws(IdentityError) -> (certificate: String, key: String) {
        let certPath = (directory as NSString).appendingPathComponent("\(name).pem")
        let keyPath = (directory as NSString).appendingPathComponent("\(name).key")
        try PEMFile.write(certificateChainPEM, to: certPath, mode: 0o644)
        try PEMFile.write(privateKeyPEM, to: keyPath, mode: 0o600)
        return (certPath, keyPath)
    }
}

/// Human-facing facts about a certificate.
public struct CertificateInfo: Sendable {
    /// The certificate.
    public let certificate: Certificate
    /// Wraps a certificate.
    public init(_ certificate: Certificate) { self.certificate = certificate }

    /// The subject common name.
    public var commonName: String? {
        certificate.subject.lazy.flatMap { $0 }.first { $0.type == .RDNAttributeType.commonName }.flatMap { String($0.value) }
    }

    /// The region recorded as subject OU `region=NAME`.
    public var region: String? {
        for attribute in certificate.subject.lazy.flatMap({ $0 }) where attribute.type == .RDNAttributeType.organizationalUnitName {
            if let text = String(attribute.value), text.hasPrefix("region=") { return String(text.dropFirst(7)) }
        }
        return nil
    }

    /// The node id of the certificate's key.
    public var nodeID: NodeID { NodeID(publicKey: certificate.publicKey) }
    /// Start of validity.
    public var notValidBefore: Date { certificate.notValidBefore }
    /// End of validity.
    public var notValidAfter: Date { certificate.notValidAfter }
    /// Whether the certificate is a CA.
    public var isCA: Bool {
        (try? certificate.extensions.basicConstraints).flatMap { $0 }.map {
            if case .isCertificateAuthority = $0 { return true } else { return false }
        } ?? false
    }
    /// DNS names and IP addresses in the subject alternative name extension.
    public var subjectAlternativeNames: [String] {
        guard let sans = (try? certificate.extensions.subjectAlternativeNames) ?? nil else { return [] }
        return sans.map { name in
            switch name {
            case .dnsName(let dns): return "DNS:\(dns)"
            case .ipAddress(let ip): return "IP:\(IPAddressText.format(Array(ip.bytes)))"
            case .uniformResourceIdentifier(let uri): return "URI:\(uri)"
            default: return "\(name)"
            }
        }
    }
}
