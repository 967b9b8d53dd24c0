import Logging
import STOQExchange
import STOQIdentity
import STOQPeering

extension RoutingAdvertSecurity {
    /// Signed routing for a node: its CA as the trust roots, its certificate and key to sign its
    /// own adverts. `signer` is the node's key as ``Node/start(_:services:metrics:logger:)`` opened
    /// it (a key file in memory, or a key in a token that signs there); a node without one (its
    /// key is not P-256) checks others' adverts without announcing its own, with a warning.
    static func forNode(_ configuration: NodeConfiguration, signer: (any CertificateSigner)?, logger: Logger) throws -> RoutingAdvertSecurity {
        let roots = try TrustRoots.load(path: configuration.ca)
        do {
            guard let signer else { throw NodeError(.invalidArgument, "the node key is not a P-256 key") }
            let credentials = try NodeCredentials.load(certificatePath: configuration.certificate, keyPath: configuration.key)
            return try RoutingAdvertSecurity(trustRoots: roots, credentials: credentials, signer: signer)
        } catch {
            logger.warning("routing: this node cannot sign its routing adverts (\(error)); it takes its peers' signed adverts but announces none of its own")
            return try RoutingAdvertSecurity(trustRoots: roots, credentials: nil)
        }
    }
}
