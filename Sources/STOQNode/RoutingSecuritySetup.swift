import Logging
import STOQExchange
import STOQIdentity
import STOQPeering

extension RoutingAdvertSecurity {
    /// Signed routing for a node: its CA as the trust roots, its certificate and key to sign its
    /// own adverts. A key that cannot sign here (not a P-256 key in a PEM file) leaves the node
    /// checking others' adverts without announcing its own, with a warning.
    static func forNode(_ configuration: NodeConfiguration, logger: Logger) throws -> RoutingAdvertSecurity {
        let roots = try TrustRoots.load(path: configuration.ca)
        do {
            let credentials = try NodeCredentials.load(certificatePath: configuration.certificate, keyPath: configuration.key)
            return try RoutingAdvertSecurity(trustRoots: roots, credentials: credentials)
        } catch {
            logger.warning("routing: this node cannot sign its routing adverts (\(error)); it takes its peers' signed adverts but announces none of its own")
            return try RoutingAdvertSecurity(trustRoots: roots, credentials: nil)
        }
    }
}
