import STOQTransport

/// A request/response server: one request per bidirectional stream.
///
/// Conformers answer one stream; the accept loops for connections and streams are shared.
public protocol StreamServer: Sendable {
    /// Answers one request stream that arrived on `connection`.
    func serve(stream: QUICStream, on connection: Connection) async
    /// Serves one connection until it closes (default: ``serveStreams(of:)``; a conformer may
    /// wrap that with per-connection bookkeeping).
    func serve(connection: Connection) async
}

extension StreamServer {
    /// Serves every stream of `connection` with ``serveStreams(of:)``.
    public func serve(connection: Connection) async {
        await serveStreams(of: connection)
    }

    /// Serves every bidirectional stream of `connection` until it closes, each in its own task.
    public func serveStreams(of connection: Connection) async {
        await withDiscardingTaskGroup { group in
            for await stream in connection.incomingStreams where stream.isBidirectional {
                group.addTask { await self.serve(stream: stream, on: connection) }
            }
        }
    }

    /// Accepts connections from `endpoint` until it closes, serving each in its own task.
    public func run(on endpoint: Endpoint) async {
        await withDiscardingTaskGroup { group in
            for await connection in endpoint.incomingConnections {
                group.addTask { await self.serve(connection: connection) }
            }
        }
    }
}
