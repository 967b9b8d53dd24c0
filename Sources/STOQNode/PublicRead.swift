import STOQExchange
import STOQIdentity
import STOQTransport

extension TLSConfiguration {
    /// This node configuration, changed to also accept anonymous readers (`--public-read`):
    /// clients may come without a certificate (one that is presented is still verified), and the
    /// node sends the CA certificate after its own so a reader that pins the CA by the SHA-256 of
    /// its SubjectPublicKeyInfo (a share ticket) can verify the node without holding the CA file.
    public func servingAnonymousReaders() throws -> TLSConfiguration {
        var tls = self
        tls.allowsAnonymousClients = true
        if let chain = certificateChainPEM, let roots = trustRootsPEM {
            let have = Set(try PEMFile.certificateDERs(in: chain))
            let caDERs = try PEMFile.certificateDERs(in: roots)
            // Append the CA certificate(s) the chain does not already carry.
            if caDERs.contains(where: { !have.contains($0) }) {
                tls.certificateChainPEM = chain.hasSuffix("\n") ? chain + roots : chain + "\n" + roots
            }
        }
        return tls
    }
}

extension NodeConfiguration {
    /// SHA-256 of the network CA certificate's DER SubjectPublicKeyInfo: what a share ticket pins.
    public func caFingerprint() throws -> [UInt8] {
        guard let der = try PEMFile.certificateDERs(in: PEMFile.read(ca)).first else {
            throw NodeError(.invalidArgument, "\(ca) holds no certificate; give the network CA's ca.pem")
        }
        return try NodeID(certificateDER: der).bytes
    }
}
