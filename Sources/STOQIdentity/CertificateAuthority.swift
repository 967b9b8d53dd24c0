import Crypto
import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The certificate authority of a STOQ network: a self-signed P-256 root that issues node certificates.
///
/// Every node trusts the CA certificate; every node presents a certificate the CA issued.
/// `stoq certs init-ca` writes `ca.pem` and `ca.key`; `stoq certs issue` writes `NAME.pem` and `NAME.key`.
public struct CertificateAuthority: Sendable {
    /// The CA certificate.
    public let certificate: Certificate
    /// The CA certificate in PEM.
    public let certificatePEM: String
    /// The CA private key in PEM (PKCS#8), or the `pkcs11:` URI of a key in a token.
    public let privateKeyPEM: String
    let privateKey: Certificate.PrivateKey
    /// The token that holds the key, when the key is not in a file (TokenKeys.swift).
    var signer: (any CertificateSigner)? = nil

    /// The default validity of a CA certificate: ten years.
    public static let defaultCAValidity: Duration = .seconds(10 * 365 * 86_400)
    /// The default validity of a node certificate: 24 hours (the network rotates them daily).
    public static let defaultNodeValidity: Duration = .seconds(86_400)

    /// Creates a new CA with a fresh P-256 key.
    /// - Parameters:
    ///   - commonName: the CA's name, e.g. "STOQ network CA".
    ///   - validity: how long the CA certificate is valid.
    ///   - now: the start of validity (tests pass a fixed date).
    public static func create(
        commonName: String = "STOQ CA",
        validity: Duration = defaultCAValidity,
        now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        try validate(name: commonName)
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let name = try distinguishedName(commonName: commonName, region: nil)
        do {
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: privateKey.publicKey)
            }
            let certificate = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: privateKey.publicKey,
                notValidBefore: now.addingTimeInterval(-300),
                notValidAfter: now.addingTimeInterval(try seconds(validity)),
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: privateKey
            )
            return CertificateAuthority(
                certificate: certificate,
                certificatePEM: try certificate.serializeAsPEM().pemString,
                privateKeyPEM: key.pemRepresentation,
                privateKey: privateKey
            )
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedCertificate, "cannot build the CA certificate: \(error)")
        }
    }

    /// Loads a CA from its certificate and key PEM.
    public init(certificatePEM: String, privateKeyPEM: String) throws(IdentityError) {
        guard let certificate = try PEMFile.certificates(in: certificatePEM).first else {
            throw IdentityError(.malformedCertificate, "no CERTIFICATE block in the CA PEM")
        }
        let key = try PEMFile.privateKey(in: privateKeyPEM)
        guard key.publicKey == certificate.publicKey else {
            throw IdentityError(.keyMismatch, "the CA key does not belong to the CA certificate")
        }
        self.init(certificate: certificate, certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM, privateKey: key)
    }

    private init(certificate: Certificate, certificatePEM: String, privateKeyPEM: String, privateKey: Certificate.PrivateKey) {
        self.certificate = certificate
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.privateKey = privateKey
    }

    /// Loads `ca.pem` and `ca.key` from a directory written by ``write(to:)``.
    public static func load(directory: String) throws(IdentityError) -> CertificateAuthority {
        try CertificateAuthority(
            certificatePEM: PEMFile.read((directory as NSString).appendingPathComponent("ca.pem")),
            privateKeyPEM: PEMFile.read((directory as NSString).appendingPathComponent("ca.key"))
        )
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `directory`.
    /// - Returns: the two paths written.
    @discardableResult
    public func write(to directory: String) throws(IdentityError) -> (certificate: String, key: String) {
        let certPath = (directory as NSString).appendingPathComponent("ca.pem")
        let keyPath = (directory as NSString).appendingPathComponent("ca.key")
        try PEMFile.write(certificatePEM, to: certPath, mode: 0o644)
        try PEMFile.write(privateKeyPEM, to: keyPath, mode: 0o600)
        return (certPath, keyPath)
    }

    /// Issues a node certificate (usable as both TLS server and client) with a fresh P-256 key.
    ///
    /// - Parameters:
    ///   - name: the node's name (subject CN). When it is a valid DNS name it is also a DNS SAN.
    ///   - region: recorded as subject OU `region=REGION`.
    ///   - validity: defaults to 24 hours.
    ///   - dnsNames: extra DNS subject alternative names (e.g. "localhost").
    ///   - ipAddresses: IPv6 subject alternative names (e.g. "::1"). IPv4 is refused: STOQ is IPv6-only.
    ///   - now: the start of validity (tests pass a date in the past to make an expired certificate).
    public func issue(
        name: String,
        region: String? = nil,
        validity: Duration = defaultNodeValidity,
        dnsNames: [String] = [],
        ipAddresses: [String] = [],
        now: Date = Date()
    ) throws(IdentityError) -> NodeCredentials {
        let key = P256.Signing.PrivateKey()
        let issued = try issue(
            name: name, publicKey: Certificate.PublicKey(key.publicKey), region: region, validity: validity,
            dnsNames: dnsNames, ipAddresses: ipAddresses, now: now)
        return try NodeCredentials(certificateChainPEM: issued.pem, privateKeyPEM: key.pemRepresentation)
    }

    // MARK: helpers

    static func validate(name: String) throws(IdentityError) {
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "-_. ".unicodeScalars.contains(scalar)
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed, !name.hasPrefix(" "), !name.hasSuffix(" ") else {
            throw IdentityError(.invalidName, "'\(name)' is not a valid name: use 1–64 letters, digits, '-', '_', '.' or spaces")
        }
    }

    static func isDNSName(_ name: String) -> Bool {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty && name.utf8.count <= 253 && labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D
                }
        }
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 16)
        let ok = bytes.withUnsafeMutableBytes { inet_pton(AF_INET6, text, $0.baseAddress) }
        guard ok == 1 else { return nil }
        // v4-mapped addresses are IPv4 in disguise.
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF { return nil }
        return bytes
    }

    static func seconds(_ duration: Duration) throws(IdentityError) -> TimeInterval {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        guard seconds > 0, seconds <= 100 * 365 * 86_400 else {
            throw IdentityError(.invalidValidity, "validity must be positive and at most 100 years")
        }
        return seconds
    }

    static func distinguishedName(commonName: String, region: String?) throws(IdentityError) -> DistinguishedName {
        do {
            return try DistinguishedName {
                OrganizationName("STOQ")
                if let region { OrganizationalUnitName("region=\(region)") }
                CommonName(commonName)
            }
        } catch {
            throw IdentityError(.invalidName, "cannot encode the name '\(commonName)': \(error)")
        }
    }
}

extension CertificateAuthority {
    /// The extensions of every node certificate this CA signs, first issue or renewal: not a CA,
    /// digital signature, server and client authentication, the key's identifier, this CA's key
    /// identifier, and the subject alternative names when there are any.
    func nodeExtensions(publicKey: Certificate.PublicKey, subjectAlternativeNames: SubjectAlternativeNames?) throws -> Certificate.Extensions {
        let issuerKeyID = try? certificate.extensions.subjectKeyIdentifier?.keyIdentifier
        return try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectKeyIdentifier(hash: publicKey)
            if let issuerKeyID {
                AuthorityKeyIdentifier(keyIdentifier: issuerKeyID)
            }
            if let subjectAlternativeNames {
                subjectAlternativeNames
            }
        }
    }
}
