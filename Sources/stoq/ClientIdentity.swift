import Foundation

/// The identity a client command uses when `--cert`, `--key` and `--ca` are not given: the
/// `client` certificate, its key and the network CA that `stoq init` writes into `~/.stoq/certs`
/// (following `$HOME`). With them, `stoq get`, `stoq put --node`, `stoq status` and the other
/// commands that talk to nodes need no identity flags on the machine where `stoq init` ran.
enum ClientIdentity {
    /// `~/.stoq/certs/client.pem`.
    static var cert: String { Init.defaultDirectory() + "/client.pem" }
    /// `~/.stoq/certs/client.key`.
    static var key: String { Init.defaultDirectory() + "/client.key" }
    /// `~/.stoq/certs/ca.pem`.
    static var ca: String { Init.defaultDirectory() + "/ca.pem" }

    /// Fills each of `cert`, `key` and `ca` that was not given with its default, when that
    /// default file exists (a command that may run without an identity stays without one).
    static func fill(cert: inout String?, key: inout String?, ca: inout String?) {
        let exists = { (path: String) in FileManager.default.fileExists(atPath: path) }
        if cert == nil, key == nil, exists(Self.cert), exists(Self.key) {
            cert = Self.cert
            key = Self.key
        }
        if ca == nil, exists(Self.ca) { ca = Self.ca }
    }
}
