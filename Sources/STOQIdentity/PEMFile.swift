import Crypto
import Foundation
import SwiftASN1
import X509

/// Reading and writing PEM files of certificates and keys.
public enum PEMFile {
    /// Reads a whole text file, with a clear error when it is missing or unreadable. A `pkcs11:`
    /// URI (a key in a token, ``PKCS11URI``) is no file: it comes back as it is, so every `--key`
    /// that is read this way also takes a key in a token.
    public static func read(_ path: String) throws(IdentityError) -> String {
        if PKCS11URI.isURI(path) { return path }
        guard FileManager.default.fileExists(atPath: path) else {
            throw IdentityError(.fileNotFound, "\(path) does not exist")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw IdentityError(.fileUnreadable, "cannot read \(path) as text")
        }
        return text
    }

    /// Writes text atomically with the given permission bits.
    public static func write(_ text: String, to path: String, mode: Int) throws(IdentityError) {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            let tmp = path + ".tmp-\(UInt32.random(in: 0 ... .max))"
            guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
                throw IdentityError(.fileUnwritable, "cannot create \(tmp)")
            }
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: tmp, toPath: path)
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.fileUnwritable, "cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// All `CERTIFICATE` blocks in a PEM text, in order.
    public static func certificates(in pem: String) throws(IdentityError) -> [Certificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: pem)
        } catch {
            throw IdentityError(.malformedCertificate, "not PEM: \(error)")
        }
        var out = [Certificate]()
        for document in documents where document.discriminator == "CERTIFICATE" {
            do {
                out.append(try Certificate(pemDocument: document))
            } catch {
                throw IdentityError(.malformedCertificate, "a CERTIFICATE block does not parse: \(error)")
            }
        }
        return out
    }

    /// The DER bytes of every certificate in a PEM text.
    public static func certificateDERs(in pem: String) throws(IdentityError) -> [[UInt8]] {
        try certificates(in: pem).map { cert in
            var serializer = DER.Serializer()
            try! serializer.serialize(cert)
            return serializer.serializedBytes
        }
    }

    /// The private key in a PEM text (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    public static func privateKey(in pem: String) throws(IdentityError) -> Certificate.PrivateKey {
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) { return Certificate.PrivateKey(key) }
        if let key = try? P384.Signing.PrivateKey(pemRepresentation: pem) { return Certificate.PrivateKey(key) }
        if let key = try? Certificate.PrivateKey(pemEncoded: pem) { return key }
        throw IdentityError(.malformedKey, "the key PEM holds no P-256/P-384/Ed25519/RSA private key")
    }
}

/// Text form of IPv6 (and, for display only, other) addresses found in certificates.
enum IPAddressText {
    static func format(_ bytes: [UInt8]) -> String {
        guard bytes.count == 16 else { return bytes.map(String.init).joined(separator: ".") }
        var groups = [String]()
        for i in stride(from: 0, to: 16, by: 2) {
            groups.append(String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16))
        }
        return groups.joined(separator: ":")
    }
}
