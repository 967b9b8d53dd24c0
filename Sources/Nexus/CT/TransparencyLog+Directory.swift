import Crypto
import Foundation

extension TransparencyLog {
    /// Opens the log kept in directory `path`: `log.sqlite`, its signing key `log-key.pem` (mode
    /// 0600) and `log-key.pub.pem`.
    /// - Parameter create: create the directory and a new key if missing.
    /// - Throws: ``NexusError`` `.emptyLog` when there is no log there and `create` is false.
    public static func open(directory path: String, create: Bool) throws -> TransparencyLog {
        let fm = FileManager.default
        let keyPath = path + "/log-key.pem"
        let key: P256.Signing.PrivateKey
        if let pem = fm.contents(atPath: keyPath) {
            key = try P256.Signing.PrivateKey(pemRepresentation: String(decoding: pem, as: UTF8.self))
        } else {
            guard create else {
                throw NexusError(.emptyLog, "no CT log in \(path) (missing log-key.pem); create one with `stoq ct append CERT --log \(path)` or `stoq certs issue --ct-log \(path)`")
            }
            try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
            key = P256.Signing.PrivateKey()
            guard fm.createFile(atPath: keyPath, contents: Data(key.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]),
                  fm.createFile(atPath: path + "/log-key.pub.pem", contents: Data(key.publicKey.pemRepresentation.utf8)) else {
                throw NexusError(.logStorageFailure, "cannot write the log key into \(path)")
            }
        }
        return try TransparencyLog(path: path + "/log.sqlite", signingKey: key)
    }
}
