import Crypto
import Foundation
import NIOCore
import STOQIdentity
import STOQWire
import X509

/// A publisher's signed list of revoked grant ids, with a version (docs/PROTOCOL.md, "Access grants").
///
/// Each new list of a publisher replaces the old one entirely, so it holds every id still revoked;
/// a node keeps the highest version it has seen. Signed with the publisher's certificate key
/// (ECDSA P-256) over the label `STOQ revocations v1`, a zero byte, then `publisher`, `version`,
/// `count` and the ids as encoded; it carries the certificate.
public struct RevocationList: Hashable, Sendable {
    /// The publisher's node id.
    public let publisher: NodeID
    /// The list's version (higher replaces lower).
    public let version: UInt64
    /// The revoked grant ids (16 bytes each).
    public let grantIDs: [[UInt8]]
    /// The publisher's certificate (DER).
    public let certificate: [UInt8]
    /// The signature (DER ECDSA).
    public let signature: [UInt8]

    /// The most ids in one list.
    public static let maximumGrants = 4096
    /// The longest encoded list.
    public static let maximumEncodedLength = 32 + 10 + 4 + maximumGrants * 16 + 2 + AccessGrant.maximumCertificateLength + 2 + 160
    static let label = Array("STOQ revocations v1".utf8) + [0]

    /// The ids as a set.
    public var revoked: Set<[UInt8]> { Set(grantIDs) }

    /// Signs a new list.
    /// - Throws: ``AccessError`` `.malformed` for too many ids, or a key that is not the certificate's.
    public static func sign(version: UInt64, grantIDs: [[UInt8]], certificate: [UInt8], key: P256.Signing.PrivateKey) throws(AccessError) -> RevocationList {
        guard grantIDs.count <= maximumGrants, grantIDs.allSatisfy({ $0.count == 16 }) else {
            throw AccessError(.malformed, "a revocation list holds at most \(maximumGrants) grant ids of 16 bytes")
        }
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.malformed, "the publisher's certificate does not parse") }
        guard let certKey = P256.Signing.PublicKey(parsed.publicKey), certKey.rawRepresentation == key.publicKey.rawRepresentation else {
            throw AccessError(.malformed, "the key is not the key of the certificate; sign with the certificate's own key (--cert/--key)")
        }
        let publisher = NodeID(publicKey: parsed.publicKey)
        let signed = signedBytes(publisher: publisher, version: version, grantIDs: grantIDs)
        let signature: [UInt8]
        do { signature = Array(try key.signature(for: label + signed).derRepresentation) } catch {
            throw AccessError(.malformed, "cannot sign the revocation list: \(error)")
        }
        return RevocationList(publisher: publisher, version: version, grantIDs: grantIDs, certificate: certificate, signature: signature)
    }

    init(publisher: NodeID, version: UInt64, grantIDs: [[UInt8]], certificate: [UInt8], signature: [UInt8]) {
        self.publisher = publisher
        self.version = version
        self.grantIDs = grantIDs
        self.certificate = certificate
        self.signature = signature
    }

    static func signedBytes(publisher: NodeID, version: UInt64, grantIDs: [[UInt8]]) -> [UInt8] {
        var w = WireWriter()
        w.bytes(publisher.bytes)
        w.varint(version)
        w.varint(UInt64(grantIDs.count))
        for id in grantIDs { w.bytes(id) }
        return Array(w.buffer.readableBytesView)
    }

    /// The binary form: the signed part, then `certificate:bytes` `signature:bytes`.
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.bytes(Self.signedBytes(publisher: publisher, version: version, grantIDs: grantIDs))
        w.lengthPrefixedBytes(certificate)
        w.lengthPrefixedBytes(signature)
        return Array(w.buffer.readableBytesView)
    }

    /// Reads the binary form, checking every bound (not the signature).
    public init(encoded bytes: [UInt8]) throws(AccessError) {
        guard bytes.count <= Self.maximumEncodedLength else { throw AccessError(.malformed, "a revocation list is at most \(Self.maximumEncodedLength) bytes") }
        do {
            var r = WireReader(ByteBuffer(bytes: bytes), context: "revocation list")
            let publisher = try NodeID(bytes: try r.bytes("publisher", count: 32))
            let version = try r.varint("version")
            let count = try r.varint("count", max: UInt64(Self.maximumGrants))
            var ids: [[UInt8]] = []
            for _ in 0..<count { ids.append(try r.bytes("grantID", count: 16)) }
            let certificate = try r.lengthPrefixedBytes("certificate", max: AccessGrant.maximumCertificateLength)
            let signature = try r.lengthPrefixedBytes("signature", max: 160)
            try r.finish()
            guard !certificate.isEmpty, !signature.isEmpty else { throw WireError(.malformed, "a revocation list carries its certificate and signature") }
            self.init(publisher: publisher, version: version, grantIDs: ids, certificate: certificate, signature: signature)
        } catch let error as WireError {
            throw AccessError(.malformed, "not a valid revocation list: \(error.reason)")
        } catch {
            throw AccessError(.malformed, "not a valid revocation list: the publisher id is not 32 bytes")
        }
    }

    /// Checks the certificate is the publisher's and the signature (sans-IO, no chain).
    public func verifySignature() throws(AccessError) {
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.badSignature, "the revocation list's certificate does not parse") }
        guard NodeID(publicKey: parsed.publicKey) == publisher else {
            throw AccessError(.badSignature, "the revocation list's certificate is not its publisher's")
        }
        guard let key = P256.Signing.PublicKey(parsed.publicKey),
              let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature),
              key.isValidSignature(sig, for: Self.label + Self.signedBytes(publisher: publisher, version: version, grantIDs: grantIDs))
        else { throw AccessError(.badSignature, "the revocation list's signature does not verify (altered or forged)") }
    }

    /// Verifies signature and certificate chain (at `now`, or the end of the certificate's validity).
    public func verify(trust: TrustRoots, now: Date) async throws(AccessError) {
        try verifySignature()
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.badSignature, "the revocation list's certificate does not parse") }
        do { _ = try await trust.verify(chainDER: [certificate], at: min(now, parsed.notValidAfter.addingTimeInterval(-1))) } catch {
            throw AccessError(.badSignature, "the revocation list's certificate is not from this network's CA: \(error.reason)")
        }
    }
}

