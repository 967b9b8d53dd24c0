import Foundation
import STOQContent
import STOQIdentity
import STOQNode
import STOQTransport

/// A throwaway network for real-QUIC node tests on `[::1]`: one CA, and nodes with their own
/// certificates and stores in a temporary directory that ``close()`` removes.
final class TestNetwork: Sendable {
    let directory: String
    let ca: CertificateAuthority
    let caPath: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-node-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateAuthority.create(commonName: "STOQ node test CA")
        caPath = try ca.write(to: directory).certificate
    }

    /// Issues credentials for `name` and returns a configuration listening on an ephemeral port.
    func configuration(_ name: String, roles: [String] = ["origin"], upstream: [PeerAddress] = []) throws -> NodeConfiguration {
        let credentials = try ca.issue(name: name, dnsNames: ["localhost"], ipAddresses: ["::1"])
        let paths = try credentials.write(to: directory, name: name)
        return NodeConfiguration(
            name: name, listen: PeerAddress(host: "::1", port: 0), certificate: paths.certificate, key: paths.key,
            ca: caPath, store: (directory as NSString).appendingPathComponent("\(name)-store"), roles: roles,
            upstream: upstream, idleTimeoutSeconds: 10)
    }

    /// Starts a node named `name`.
    func node(_ name: String, roles: [String] = ["origin"], upstream: [PeerAddress] = [], services: [any NodeService] = []) async throws -> Node {
        try await Node.start(try configuration(name, roles: roles, upstream: upstream), services: services)
    }

    /// Removes the directory.
    func close() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a node serving in the background, then closes it.
func withServing<T: Sendable>(_ node: Node, _ body: () async throws -> T) async throws -> T {
    let serving = Task { await node.run() }
    do {
        let result = try await body()
        await node.close()
        await serving.value
        return result
    } catch {
        await node.close()
        await serving.value
        throw error
    }
}
