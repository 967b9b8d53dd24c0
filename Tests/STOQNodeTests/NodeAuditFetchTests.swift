import Foundation
import STOQAudit
import STOQContent
import STOQNode
import STOQTestSupport
import Testing

/// Issue 15 item 7: a fetch a node makes through the library (``Node/fetch(_:from:configuration:onProgress:onEvent:)``)
/// is in its audit trail like the transfers it serves, over real QUIC on `[::1]`.
@Suite struct NodeAuditFetchTests {
    @Test func aLibraryFetchIsRecordedWithItsSource() async throws {
        let network = try TestNetwork()
        defer { network.close() }
        let origin = try await Node.start(try network.configuration("audit-origin"))
        try await withServing(origin) {
            let content = try network.publish(on: origin, bytes: 1 << 20, seed: 15)
            let client = try await Node.start(try network.configuration("audit-client"))
            try await withServing(client) {
                let report = try await client.fetch(content.id, from: [origin.address])
                #expect(report.sources.first?.nodeID == origin.nodeID)
                let audit = try #require(client.audit)
                var fetched: [AuditRecord] = []
                _ = try AuditVerifier.verify(directory: audit.trail.directory) { entry in
                    if entry.record.direction == .fetched { fetched.append(entry.record) }
                }
                #expect(fetched.count == 1)
                #expect(fetched.first?.content == content.id.manifest.bytes)
                #expect(fetched.first?.peers == [origin.nodeID.bytes])
                // The record counts the manifests fetched as well as the data (issue 15 item 7).
                #expect(report.manifestBytesFetched > 0)
                #expect(fetched.first?.bytes == UInt64(report.fetchedBytes + report.manifestBytesFetched))
                #expect(fetched.first?.grantID == nil)
            }
        }
    }
}
