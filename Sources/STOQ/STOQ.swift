// The STOQ umbrella: one import for the whole protocol layer.
@_exported import STOQErrors
@_exported import STOQIdentity
@_exported import STOQTransport
@_exported import STOQWire
@_exported import STOQAccess
@_exported import STOQContent
@_exported import STOQRouting
@_exported import STOQSwarm
@_exported import STOQEdge
@_exported import STOQExchange
@_exported import STOQPeering
@_exported import STOQEdgeNode
@_exported import STOQAdmin
@_exported import STOQNode
@_exported import STOQHTTP
@_exported import STOQAudit

/// The version of this STOQ build, as `stoq --version` prints it, and the wire protocol it speaks.
public enum STOQVersion {
    /// The software version (semantic versioning).
    public static let software = "0.1.0"
    /// The wire protocol (ALPN) every node of this version speaks.
    public static let wireProtocol = STOQMessage.alpn
    /// One line: `stoq 0.1.0 (stoq/1)`.
    public static var line: String { "stoq \(software) (\(wireProtocol))" }
}
