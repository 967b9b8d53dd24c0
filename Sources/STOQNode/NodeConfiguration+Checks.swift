import Foundation
import STOQAdmin
import STOQContent
import STOQExchange
import STOQIdentity

extension NodeConfiguration {
    /// Checks what a node needs before it listens: a usable cache size, an IPv6 admin address,
    /// and a certificate that is valid now, belongs to the key, and verifies against the CA.
    ///
    /// ``Node/start(_:services:metrics:logger:)`` runs this first, so a node refuses to start
    /// (nothing bound, nothing opened) rather than start "ready" and fail every handshake.
    /// - Parameter now: the time the certificate must be valid at (tests pass a fixed date).
    /// - Throws: ``NodeError`` `.invalidArgument` whose reason says what is wrong and what to do.
    public func validate(now: Date = Date()) async throws {
        if let cacheBytes, cacheBytes <= 0 {
            // nginx (`max_size`) and Varnish (`-s malloc,SIZE`) take a positive size too; a cache of
            // nothing would make every read a miss, which is a relay's job, not an edge's.
            throw NodeError(.invalidArgument, "the cache size must be a positive number of bytes, not \(cacheBytes); the default is 1073741824 (1 GiB), and a small cache such as 1048576 keeps little (an edge has no \"no cache\" setting)")
        }
        if let storeFormat, StoreFormat(rawValue: storeFormat) == nil {
            throw NodeError(.invalidArgument, "the store format must be packs or files, not '\(storeFormat)' (--store-format / config key storeFormat)")
        }
        if let storeVerifySeconds, storeVerifySeconds < 0 {
            throw NodeError(.invalidArgument, "storeVerifySeconds must be 0 (hash every read) or a positive number of seconds, not \(storeVerifySeconds); the default is 604800 (7 days)")
        }
        if let admin { try AdminServer.checkAddress(admin) }
        for publisher in publishers ?? [] where NodeID(hex: publisher) == nil {
            throw NodeError(.invalidArgument, "the publisher '\(publisher)' is not a node id; give the 64 hex characters `stoq certs show CERT` prints as \"node id\"")
        }
        for reader in privateReaders ?? [] where NodeID(hex: reader) == nil {
            throw NodeError(.invalidArgument, "the private reader '\(reader)' is not a node id; give the 64 hex characters `stoq certs show CERT` prints as \"node id\"")
        }
        try await checkCredentials(now: now)
    }

    /// Loads the certificate and key, and refuses a pair that does not match, a certificate that
    /// is not valid at `now`, or one the configured CA did not issue.
    func checkCredentials(now: Date) async throws {
        let credentials: NodeCredentials
        do {
            credentials = try NodeCredentials.load(certificatePath: certificate, keyPath: key)
        } catch {
            throw NodeError(.invalidArgument, "cannot use the certificate \(certificate) with the key \(key): \(error.reason)")
        }
        let formatter = ISO8601DateFormatter()
        let info = CertificateInfo(credentials.certificate)
        let reissue = "issue a new one with `stoq certs issue --ca-dir CA_DIR --name \(info.commonName ?? "NAME") --out DIR`"
        if now < info.notValidBefore {
            throw NodeError(.invalidArgument, "the certificate \(certificate) is not valid yet: it starts at \(formatter.string(from: info.notValidBefore)) and it is now \(formatter.string(from: now)); check this machine's clock, or \(reissue)")
        }
        if now > info.notValidAfter {
            throw NodeError(.invalidArgument, "the certificate \(certificate) expired at \(formatter.string(from: info.notValidAfter)) (it is now \(formatter.string(from: now))); \(reissue)")
        }
        let roots: TrustRoots
        do {
            roots = try TrustRoots.load(path: ca)
        } catch {
            throw NodeError(.invalidArgument, "cannot read the CA certificate \(ca): \(error.reason)")
        }
        let chain: [[UInt8]]
        do {
            chain = try PEMFile.certificateDERs(in: credentials.certificateChainPEM)
        } catch {
            throw NodeError(.invalidArgument, "cannot read the certificate \(certificate): \(error)")
        }
        do {
            _ = try await roots.verify(chainDER: chain, at: now)
        } catch {
            throw NodeError(.invalidArgument, "the certificate \(certificate) was not issued by the CA in \(ca) (\(error.reason)); peers of this network would refuse it: \(reissue) from this network's CA, or give the right --ca")
        }
    }
}
