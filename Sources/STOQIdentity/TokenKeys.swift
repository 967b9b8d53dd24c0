import Crypto
import Foundation
import SwiftASN1
import X509

/// `pkcs11:` URIs (RFC 7512): a private key that lives in a hardware token (or SoftHSM2) instead of
/// a file. Wherever STOQ takes a key file (`--key`, `--ca-key`), it also takes such a URI; the key
/// is then used through GnuTLS's PKCS#11 support and never leaves the token.
public enum PKCS11URI {
    /// Whether `text` is a PKCS#11 URI rather than a file path.
    public static func isURI(_ text: String) -> Bool { text.lowercased().hasPrefix("pkcs11:") }

    /// The URI without its `pin-value=` attribute, for messages and logs (a PIN never reaches them).
    public static func redacted(_ uri: String) -> String {
        guard isURI(uri) else { return uri }
        let body = uri.dropFirst("pkcs11:".count)
        let parts = body.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        func clean(_ s: Substring, separator: Character) -> String {
            s.split(separator: separator, omittingEmptySubsequences: false)
                .map { $0.lowercased().hasPrefix("pin-value=") ? "pin-value=…" : String($0) }
                .joined(separator: String(separator))
        }
        var out = "pkcs11:" + clean(parts[0], separator: ";")
        if parts.count > 1 { out += "?" + clean(parts[1], separator: "&") }
        return out
    }
}

/// Something that signs with a P-256 key it does not hand out: a key in a PKCS#11 token
/// (`TokenKey` in STOQTransport) or a key file held in memory (``SoftwareSigner``). A
/// ``CertificateAuthority`` whose key is in a token signs certificates through it, and a node signs
/// everything it signs with its certificate key (routing adverts, DHT node records, audit heads)
/// through it, so the same code serves a key file and a key in a token.
public protocol CertificateSigner: Sendable {
    /// The public half of the key.
    var publicKey: Certificate.PublicKey { get }
    /// An ECDSA signature over SHA-256(`message`), DER-encoded.
    func signSHA256(_ message: [UInt8]) throws -> [UInt8]
}

/// A P-256 key in memory (read from a key file): the ``CertificateSigner`` of a node whose key is
/// not in a token.
public struct SoftwareSigner: CertificateSigner {
    /// The key.
    public let key: P256.Signing.PrivateKey
    /// The public half of the key.
    public var publicKey: Certificate.PublicKey { Certificate.PublicKey(key.publicKey) }

    /// Wraps `key`.
    public init(_ key: P256.Signing.PrivateKey) { self.key = key }

    /// Reads a P-256 key from PEM (PKCS#8 `PRIVATE KEY` or SEC 1 `EC PRIVATE KEY`).
    /// - Throws: ``IdentityError`` `.malformedKey` when the text holds no P-256 key.
    public init(pem: String) throws(IdentityError) {
        guard let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) else {
            throw IdentityError(.malformedKey, "no P-256 private key in the PEM text; STOQ node keys are P-256 (`stoq certs issue` writes one)")
        }
        self.key = key
    }

    /// An ECDSA signature over SHA-256(`message`), DER-encoded.
    public func signSHA256(_ message: [UInt8]) throws -> [UInt8] {
        Array(try key.signature(for: message).derRepresentation)
    }
}

extension CertificateSigner {
    /// The public key as a P-256 key (nil for another curve, which no STOQ signer holds).
    public var p256PublicKey: P256.Signing.PublicKey? { P256.Signing.PublicKey(publicKey) }

    /// An ECDSA P-256 signature over SHA-256(`message`), as swift-crypto represents it (for
    /// formats that store it raw, `.rawRepresentation`, or DER, `.derRepresentation`).
    public func p256Signature(for message: [UInt8]) throws -> P256.Signing.ECDSASignature {
        try P256.Signing.ECDSASignature(derRepresentation: signSHA256(message))
    }

    /// Signs `template`'s to-be-signed part with this key and returns the certificate with that
    /// signature (the template's own signature, made by a throwaway key, is dropped). The
    /// template's signature algorithm must be ECDSA with SHA-256.
    func resign(_ template: Certificate) throws(IdentityError) -> Certificate {
        do {
            var der = DER.Serializer()
            try der.serialize(template)
            let root = try DER.parse(der.serializedBytes)
            guard case .constructed(let nodes) = root.content else {
                throw IdentityError(.malformedCertificate, "a certificate is not a DER SEQUENCE")
            }
            var children = nodes.makeIterator()
            guard let tbs = children.next(), let algorithm = children.next() else {
                throw IdentityError(.malformedCertificate, "a certificate lacks its to-be-signed part")
            }
            let signature = try signSHA256(Array(template.tbsCertificateBytes))
            var out = DER.Serializer()
            try out.appendConstructedNode(identifier: .sequence) { body in
                body.serializeRawBytes(tbs.encodedBytes)
                body.serializeRawBytes(algorithm.encodedBytes)
                try body.serialize(ASN1BitString(bytes: signature[...]))
            }
            let certificate = try Certificate(derEncoded: out.serializedBytes)
            guard publicKey.isValidSignature(certificate.signature, for: certificate) else {
                throw IdentityError(.keyMismatch, "the token's signature does not verify with its public key")
            }
            return certificate
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedKey, "the key in the token could not sign the certificate: \(error)")
        }
    }
}

extension CertificateAuthority {
    /// Creates a CA whose key is in a token: a self-signed certificate for `signer`'s key, signed
    /// by the token. Nothing secret is written anywhere; ``privateKeyPEM`` holds `keyURI`
    /// (without a PIN) so ``write(to:)`` leaves a `ca.key` that names the token object.
    public static func create(
        commonName: String = "STOQ CA", signer: any CertificateSigner, keyURI: String,
        validity: Duration = defaultCAValidity, now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        try validate(name: commonName)
        let name = try distinguishedName(commonName: commonName, region: nil)
        let throwaway = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let template: Certificate
        do {
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: signer.publicKey)
            }
            template = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: signer.publicKey,
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(try seconds(validity)),
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
                issuerPrivateKey: throwaway)
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedCertificate, "cannot build the CA certificate: \(error)")
        }
        let certificate = try signer.resign(template)
        let pem: String
        do { pem = try certificate.serializeAsPEM().pemString } catch {
            throw IdentityError(.malformedCertificate, "cannot encode the CA certificate: \(error)")
        }
        return try CertificateAuthority(certificatePEM: pem, signer: signer, keyURI: keyURI)
    }

    /// Loads a CA whose certificate is `certificatePEM` and whose key is in a token (`signer`).
    /// - Throws: ``IdentityError`` `.keyMismatch` when the token's key is not the certificate's.
    public init(certificatePEM: String, signer: any CertificateSigner, keyURI: String) throws(IdentityError) {
        guard let certificate = try PEMFile.certificates(in: certificatePEM).first else {
            throw IdentityError(.malformedCertificate, "no CERTIFICATE block in the CA PEM")
        }
        guard signer.publicKey == certificate.publicKey else {
            throw IdentityError(.keyMismatch, "the key \(PKCS11URI.redacted(keyURI)) in the token does not belong to the CA certificate")
        }
        self.certificate = certificate
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = PKCS11URI.redacted(keyURI)
        // Never signs: every certificate this CA builds is re-signed by the token (`sign(_:)`).
        self.privateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        self.signer = signer
    }

    /// Whether this CA's key is in a token.
    public var keyIsInToken: Bool { signer != nil }

    /// `template` as this CA signs it: unchanged for a CA with a key file (it built the template
    /// with its key), re-signed by the token otherwise.
    func sign(_ template: Certificate) throws(IdentityError) -> Certificate {
        guard let signer else { return template }
        return try signer.resign(template)
    }

    /// Issues a node certificate for a key this CA never sees (one in a token): the CA needs only
    /// the public key. Same contents as ``issue(name:region:validity:dnsNames:ipAddresses:now:)``.
    /// - Returns: the certificate, and its chain PEM (the leaf) to write as `NAME.pem`.
    public func issue(
        name: String, publicKey: Certificate.PublicKey, region: String? = nil, validity: Duration = defaultNodeValidity,
        dnsNames: [String] = [], ipAddresses: [String] = [], now: Date = Date()
    ) throws(IdentityError) -> (certificate: Certificate, pem: String) {
        try Self.validate(name: name)
        if let region { try Self.validate(name: region) }
        var sans = [GeneralName]()
        var seen = Set<String>()
        for dns in (Self.isDNSName(name) ? [name] : []) + dnsNames where seen.insert(dns.lowercased()).inserted {
            sans.append(.dnsName(dns))
        }
        for ip in ipAddresses {
            guard let bytes = Self.parseIPv6(ip) else {
                throw IdentityError(.invalidName, "\(ip) is not an IPv6 address (STOQ is IPv6-only)")
            }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        do {
            let extensions = try nodeExtensions(publicKey: publicKey, subjectAlternativeNames: sans.isEmpty ? nil : SubjectAlternativeNames(sans))
            let leaf = try sign(Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-Self.backdate(for: try Self.seconds(validity))),
                notValidAfter: min(now.addingTimeInterval(try Self.seconds(validity)), certificate.notValidAfter),
                issuer: certificate.subject, subject: try Self.distinguishedName(commonName: name, region: region),
                signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: privateKey))
            return (leaf, try leaf.serializeAsPEM().pemString + "\n")
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedCertificate, "cannot build the certificate for \(name): \(error)")
        }
    }
}

extension PEMFile {
    /// The P-256 public key in a PEM text (`PUBLIC KEY`, DER SubjectPublicKeyInfo), as
    /// `p11tool --generate-privkey --outfile` writes it.
    public static func publicKey(in pem: String) throws(IdentityError) -> Certificate.PublicKey {
        guard let key = try? P256.Signing.PublicKey(pemRepresentation: pem) else {
            throw IdentityError(.malformedKey, "no P-256 public key in PEM ('BEGIN PUBLIC KEY'); give the file `p11tool --generate-privkey … --outfile` wrote")
        }
        return Certificate.PublicKey(key)
    }
}

extension NodeCredentials {
    /// Whether the private key is in a token (``privateKeyPEM`` is a `pkcs11:` URI).
    public var keyIsInToken: Bool { PKCS11URI.isURI(privateKeyPEM) }
}
