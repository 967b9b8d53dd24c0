import Crypto
import STOQErrors
import Foundation
import SwiftASN1
import X509

extension ErrorCode where Domain == IdentityErrorDomain {
    /// An issuer refused to renew a certificate (expired, issued by another CA, bad proof of a
    /// new key). The reason says which.
    public static let renewalRefused = Self("renewalRefused")
}

/// Certificate lifetimes as people write them: `90s`, `10m`, `24h`, `30d` (a bare number is seconds).
public enum CertificateLifetime {
    /// Parses a lifetime.
    /// - Throws: ``IdentityError`` `.invalidValidity` for anything else, or a lifetime that is not
    ///   1 second to 100 years.
    public static func parse(_ text: String) throws(IdentityError) -> Duration {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Int64)] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        var number = Substring(t)
        var scale: Int64 = 1
        if let unit = units.first(where: { t.hasSuffix($0.0) }) {
            number = number.dropLast()
            scale = unit.1
        }
        guard let value = Int64(number), value > 0, value <= 100 * 365 * 86_400 / scale else {
            throw IdentityError(.invalidValidity, "'\(text)' is not a lifetime: give a whole number of seconds, minutes, hours or days, e.g. 90s, 10m, 24h or 30d (at most 100 years)")
        }
        return .seconds(value * scale)
    }

    /// Formats whole seconds the way ``parse(_:)`` reads them (`90s`, `10m`, `24h`, `2d`).
    public static func format(seconds: Int64) -> String {
        if seconds > 0, seconds % 86_400 == 0 { return "\(seconds / 86_400)d" }
        if seconds > 0, seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds > 0, seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }

    /// The lifetime a certificate was issued with, without the backdating of its start
    /// (``CertificateAuthority/backdate(for:)``): what a renewal asks for again.
    public static func nominal(notBefore: Date, notAfter: Date) -> TimeInterval {
        let span = notAfter.timeIntervalSince(notBefore)
        guard span > 0 else { return 0 }
        // backdate = min(300, validity / 10): span = validity + backdate.
        return span >= 3300 ? span - 300 : span / 1.1
    }
}

extension CertificateAuthority {
    /// How far before its issuance a certificate's validity starts (clock skew between nodes):
    /// a tenth of its lifetime, at most 5 minutes, so that short test certificates are not mostly
    /// in the past.
    public static func backdate(for validity: TimeInterval) -> TimeInterval { min(300, max(0, validity) / 10) }

    /// What a new key signs in a renewal request to prove its holder asked for it: an ASCII label,
    /// a zero byte, the SHA-256 of the leaf the requester authenticated with, and the new key (DER
    /// SubjectPublicKeyInfo).
    public static func renewalPossessionMessage(currentLeafDER: [UInt8], publicKey: [UInt8]) -> [UInt8] {
        Array("STOQ certificate renewal v1\0".utf8) + Array(SHA256.hash(data: currentLeafDER)) + publicKey
    }

    /// Renews the certificate a node authenticated with: same subject (name and region) and subject
    /// alternative names, on the same key or (key rotation) a new one whose holder signed
    /// ``renewalPossessionMessage(currentLeafDER:publicKey:)``.
    ///
    /// - Parameters:
    ///   - presentedChain: the DER chain the requester presented in its TLS handshake, leaf first.
    ///   - lifetimeSeconds: the lifetime asked for (0: `maximumLifetime`).
    ///   - newPublicKey: a P-256 SubjectPublicKeyInfo (DER), or empty to keep the current key.
    ///   - signature: the new key's DER ECDSA signature (empty with an empty key).
    ///   - maximumLifetime: the longest lifetime this issuer grants; longer requests get this.
    ///   - now: the time of issuance.
    /// - Returns: the new leaf certificate.
    /// - Throws: ``IdentityError`` `.renewalRefused` with a reason for people.
    public func renew(
        presentedChain: [[UInt8]], lifetimeSeconds: UInt64, newPublicKey: [UInt8] = [], signature: [UInt8] = [],
        maximumLifetime: Duration, now: Date = Date()
    ) throws(IdentityError) -> RenewedCertificate {
        func refuse(_ reason: String) -> IdentityError { IdentityError(.renewalRefused, reason) }
        guard let leafDER = presentedChain.first else {
            throw refuse("the connection presented no certificate; renew over a connection made with the node's current certificate")
        }
        let leaf: Certificate
        do { leaf = try Certificate(derEncoded: leafDER) } catch {
            throw refuse("the presented certificate cannot be parsed")
        }
        let info = CertificateInfo(leaf)
        let who = info.commonName ?? "?"
        guard leaf.issuer == certificate.subject, certificate.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw refuse("the certificate of \(who) was not issued by this issuer's CA")
        }
        guard !info.isCA else { throw refuse("\(who) presented a CA certificate; only node certificates are renewed") }
        let formatter = ISO8601DateFormatter()
        guard now >= leaf.notValidBefore else {
            throw refuse("the certificate of \(who) is not valid before \(formatter.string(from: leaf.notValidBefore)); check the clocks")
        }
        guard now <= leaf.notValidAfter else {
            throw refuse("the certificate of \(who) expired at \(formatter.string(from: leaf.notValidAfter)); only a still-valid certificate is renewed: issue a new one with `stoq certs issue`")
        }
        var publicKey = leaf.publicKey
        if !newPublicKey.isEmpty || !signature.isEmpty {
            let key: P256.Signing.PublicKey
            do { key = try P256.Signing.PublicKey(derRepresentation: newPublicKey) } catch {
                throw refuse("the new public key is not a P-256 key (DER SubjectPublicKeyInfo)")
            }
            let ecdsa: P256.Signing.ECDSASignature
            do { ecdsa = try P256.Signing.ECDSASignature(derRepresentation: signature) } catch {
                throw refuse("the proof of the new key is not a DER ECDSA signature")
            }
            let message = Self.renewalPossessionMessage(currentLeafDER: leafDER, publicKey: newPublicKey)
            guard key.isValidSignature(ecdsa, for: message) else {
                throw refuse("the new key's signature does not verify: the requester does not hold the new key")
            }
            publicKey = Certificate.PublicKey(key)
        }
        let maximum = try Self.seconds(maximumLifetime)
        let validity = lifetimeSeconds == 0 ? maximum : min(Double(lifetimeSeconds), maximum)
        let notAfter = min(now.addingTimeInterval(validity), certificate.notValidAfter)
        guard notAfter > now else { throw refuse("the CA certificate itself expires at \(formatter.string(from: certificate.notValidAfter)); renew the CA") }
        do {
            let sans = try? leaf.extensions.subjectAlternativeNames
            let extensions = try nodeExtensions(publicKey: publicKey, subjectAlternativeNames: sans)
            let renewed = try sign(Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-Self.backdate(for: validity)),
                notValidAfter: notAfter,
                issuer: certificate.subject,
                subject: leaf.subject,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: privateKey
            ))
            var der = DER.Serializer()
            try der.serialize(renewed)
            return RenewedCertificate(der: der.serializedBytes, info: CertificateInfo(renewed))
        } catch {
            throw IdentityError(.malformedCertificate, "cannot build the renewed certificate for \(who): \(error)")
        }
    }
}

/// A certificate an issuer renewed.
public struct RenewedCertificate: Sendable {
    /// The certificate, DER.
    public let der: [UInt8]
    /// Its facts (name, region, node id, validity).
    public let info: CertificateInfo
}

extension NodeCredentials {
    /// Facts about the leaf certificate.
    public var info: CertificateInfo { CertificateInfo(certificate) }

    /// The lifetime the leaf was issued with, in whole seconds (at least 1): what a renewal asks for.
    public var nominalLifetimeSeconds: UInt64 {
        UInt64(max(1, CertificateLifetime.nominal(notBefore: certificate.notValidBefore, notAfter: certificate.notValidAfter).rounded()))
    }

    /// The same key with a new certificate chain (DER, leaf first), as PEM.
    /// - Throws: ``IdentityError`` `.keyMismatch` when the new leaf is not for this key.
    public func replacingChain(_ chainDER: [[UInt8]]) throws(IdentityError) -> NodeCredentials {
        let pem = chainDER.map { PEMDocument(type: "CERTIFICATE", derBytes: $0).pemString }.joined(separator: "\n") + "\n"
        return try NodeCredentials(certificateChainPEM: pem, privateKeyPEM: privateKeyPEM)
    }

    /// The chain as DER, leaf first.
    public var chainDER: [[UInt8]] { (try? PEMFile.certificateDERs(in: certificateChainPEM)) ?? [] }
}

/// When a node renews its certificate, and how it backs off when renewal fails: a state machine
/// without clocks or I/O (the caller passes the time).
///
/// A node renews at two thirds of its certificate's (nominal) lifetime. A failed attempt is
/// retried after a delay that doubles, from 1/30 of the lifetime (0.5 s to 10 s) up to 1/6 of it
/// (1 s to 10 min), also after expiry (the certificate may come back by SIGHUP or the issuer may
/// return). Once the certificate expires, ``next(now:)`` reports ``Action/expired`` once.
public struct RenewalSchedule: Sendable, Equatable {
    /// What to do now.
    public enum Action: Sendable, Equatable {
        /// Nothing until this time (or until something changes).
        case wait(until: Date)
        /// Ask the issuer for a new certificate now.
        case renew
        /// The certificate just expired without renewal: say so, once.
        case expired
    }

    /// Start of the current certificate's validity.
    public private(set) var notBefore: Date
    /// End of the current certificate's validity.
    public private(set) var notAfter: Date
    /// Whether the node has an issuer to renew with.
    public let canRenew: Bool
    /// Successful renewals so far.
    public private(set) var renewals = 0
    /// Failed attempts since the last success.
    public private(set) var consecutiveFailures = 0
    /// Failed attempts in all.
    public private(set) var failures = 0
    /// Why the last attempt failed (nil after a success).
    public private(set) var lastError: String?
    /// When the next attempt is due.
    public private(set) var nextAttempt: Date
    /// Whether the expiry of the current certificate was reported.
    public private(set) var expiryReported = false

    /// Failed attempts in a row after which renewal "keeps failing" (a warning in `/status`).
    public static let failingThreshold = 2

    /// A schedule for a certificate valid from `notBefore` to `notAfter`.
    public init(notBefore: Date, notAfter: Date, canRenew: Bool) {
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.canRenew = canRenew
        self.nextAttempt = Self.renewalTime(notBefore: notBefore, notAfter: notAfter)
    }

    /// Two thirds into the nominal lifetime: a third of it before `notAfter`.
    public static func renewalTime(notBefore: Date, notAfter: Date) -> Date {
        notAfter.addingTimeInterval(-CertificateLifetime.nominal(notBefore: notBefore, notAfter: notAfter) / 3)
    }

    /// The nominal lifetime of the current certificate, in seconds.
    public var lifetime: TimeInterval { CertificateLifetime.nominal(notBefore: notBefore, notAfter: notAfter) }

    /// Whether renewal keeps failing (``failingThreshold`` attempts in a row).
    public var isFailing: Bool { consecutiveFailures >= Self.failingThreshold }

    /// `ok`, `renewal failing` or `expired` at `now`.
    public func state(now: Date) -> String {
        if now >= notAfter { return "expired" }
        return isFailing ? "renewal failing" : "ok"
    }

    /// What to do at `now`.
    public mutating func next(now: Date) -> Action {
        if now >= notAfter && !expiryReported {
            expiryReported = true
            return .expired
        }
        guard canRenew else { return .wait(until: now < notAfter ? notAfter : .distantFuture) }
        if now >= nextAttempt { return .renew }
        return .wait(until: now < notAfter ? min(nextAttempt, notAfter) : nextAttempt)
    }

    /// The delay before the next attempt after `n` failures in a row.
    public func backoff(afterFailures n: Int) -> TimeInterval {
        let base = min(10, max(0.5, lifetime / 30))
        let cap = min(600, max(1, lifetime / 6))
        return min(cap, base * pow(2, Double(max(0, min(n, 30) - 1))))
    }

    /// An attempt failed at `now` for `reason`.
    public mutating func failed(_ reason: String, now: Date) {
        consecutiveFailures += 1
        failures += 1
        lastError = reason
        nextAttempt = now.addingTimeInterval(backoff(afterFailures: consecutiveFailures))
    }

    /// A renewal succeeded: the new certificate is valid from `notBefore` to `notAfter`.
    public mutating func renewed(notBefore: Date, notAfter: Date) {
        renewals += 1
        adopt(notBefore: notBefore, notAfter: notAfter)
    }

    /// A certificate arrived by other means (SIGHUP): schedule for it, without counting a renewal.
    public mutating func adopt(notBefore: Date, notAfter: Date) {
        self.notBefore = notBefore
        self.notAfter = notAfter
        consecutiveFailures = 0
        lastError = nil
        expiryReported = false
        nextAttempt = Self.renewalTime(notBefore: notBefore, notAfter: notAfter)
    }
}
