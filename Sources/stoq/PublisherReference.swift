import Foundation
import STOQ

/// What `stoq node --publisher` accepts: a node id (64 hex characters), a certificate file (PEM),
/// or the name of a certificate `stoq init` made (`client` → `~/.stoq/certs/client.pem`).
/// Resolved to the node id the origin compares uploads against.
enum PublisherReference {
    /// The node id `reference` names.
    static func resolve(_ reference: String, flag: String = "--publisher") throws -> String {
        let text = reference.trimmingCharacters(in: .whitespaces)
        if text.count == 64, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        var path = text
        if !FileManager.default.fileExists(atPath: path), !text.contains("/") {
            path = Init.defaultDirectory() + "/\(text).pem"
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError("\(flag) \(text) is neither a node id (64 hex characters), a certificate file, nor a certificate made by stoq init (\(path) does not exist); give one of those")
        }
        guard let certificate = try PEMFile.certificates(in: PEMFile.read(path)).first else {
            throw CLIError("\(flag) \(text): \(path) holds no certificate; give a PEM certificate, a node id or a name made by stoq init")
        }
        return CertificateInfo(certificate).nodeID.hex
    }
}
