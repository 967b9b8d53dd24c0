// The STOQ umbrella: one import for the whole protocol layer.
@_exported import STOQErrors
@_exported import STOQIdentity
@_exported import STOQTransport
@_exported import STOQWire
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
