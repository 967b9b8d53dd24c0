import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket push of the HTTPS listener: `wss://HOST:PORT/ws/name/<name>` over HTTP/1.1
/// receives one text frame per message of ``HTTPResponder/watch(name:)``.
enum HTTPSWebSocket {
    /// The longest name accepted in a WebSocket path, in bytes after percent-decoding.
    static let maxNameBytes = 255
    /// The largest frame a client may send (pings and close frames; clients have nothing else to say).
    static let maxFrameBytes = 4096

    /// The published name in a `/ws/name/<name>` target (percent-decoded, query dropped), or nil
    /// when the target is not one, the name is empty, too long, or holds a `/` or control byte.
    static func watchedName(target: String) -> String? {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        let prefix = "/ws/name/"
        guard path.hasPrefix(prefix) else { return nil }
        let encoded = path.dropFirst(prefix.count)
        guard !encoded.isEmpty, encoded.utf8.count <= maxNameBytes * 3 else { return nil }
        guard let bytes = percentDecode(Array(encoded.utf8)), !bytes.isEmpty, bytes.count <= maxNameBytes,
              !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "/") })
        else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func percentDecode(_ input: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        var i = 0
        while i < input.count {
            if input[i] == UInt8(ascii: "%") {
                guard i + 2 < input.count, let hi = hex(input[i + 1]), let lo = hex(input[i + 2]) else { return nil }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(input[i])
                i += 1
            }
        }
        return out
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// The upgrader of one HTTP/1.1 connection: accepts `/ws/name/<name>` when the responder can
    /// watch the name, then replaces the connection's HTTP handler with the push handler.
    static func upgrader(shared: HTTPSServerShared, activity: NIOLoopBound<HTTPSConnectionActivity>) -> NIOWebSocketServerUpgrader {
        // The stream found in `shouldUpgrade`, handed to `upgradePipelineHandler`; both run on the
        // connection's event loop.
        let pending = NIOLoopBound(HTTPSPendingWatch(), eventLoop: activity.eventLoop)
        return NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameBytes,
            automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                guard head.method == .GET, let name = watchedName(target: head.uri), let stream = shared.responder.watch(name: name) else {
                    // Not upgraded: the request reaches the exchange handler, which answers 404.
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                pending.value.stream = stream
                var headers = HTTPHeaders()
                headers.add(name: "date", value: HTTPSDate.string())
                return channel.eventLoop.makeSucceededFuture(headers)
            },
            upgradePipelineHandler: { channel, _ in
                let stream = pending.value.stream
                pending.value.stream = nil
                activity.value.webSocket = true
                return channel.pipeline.removeHandler(name: HTTPSExchangeHandler.name).flatMapThrowing {
                    guard let stream else { throw ChannelError.inappropriateOperationForState }
                    try channel.pipeline.syncOperations.addHandler(HTTPSWebSocketPushHandler(stream: stream))
                }
            }
        )
    }
}

/// Holds a watch between the upgrade decision and the upgrade.
final class HTTPSPendingWatch {
    var stream: AsyncStream<String>?
}

@available(*, unavailable)
extension HTTPSPendingWatch: Sendable {}

/// Sends each message of a watch as a text frame; answers pings and closes cleanly.
final class HTTPSWebSocketPushHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var stream: AsyncStream<String>?
    private var task: Task<Void, Never>?
    private var closeSent = false

    init(stream: AsyncStream<String>) { self.stream = stream }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let stream else { return }
        self.stream = nil
        let channel = context.channel
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        task = Task {
            for await message in stream {
                let frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: message))
                do { try await channel.writeAndFlush(frame).get() } catch { return }
            }
            // The watch ended (the node stops or drops the name): say goodbye properly.
            channel.eventLoop.execute { bound.value.sendClose(channel: channel, code: .goingAway) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { task?.cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            guard frame.fin else { return close(context: context, code: .protocolError) }
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // Echo the close (RFC 6455 §5.5.1) and end the TCP connection once it is out.
            let channel = context.channel
            if closeSent {
                channel.close(promise: nil)
            } else {
                closeSent = true
                var data = frame.unmaskedData
                let code = data.readSlice(length: 2) ?? context.channel.allocator.buffer(capacity: 0)
                let echo = WebSocketFrame(fin: true, opcode: .connectionClose, data: code)
                context.writeAndFlush(wrapOutboundOut(echo)).whenComplete { _ in channel.close(promise: nil) }
            }
        case .text, .binary, .continuation, .pong:
            break  // Nothing to hear from clients; frames are bounded by the decoder.
        default:
            close(context: context, code: .protocolError)
        }
    }

    private func close(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        sendClose(channel: context.channel, code: code)
    }

    fileprivate func sendClose(channel: any Channel, code: WebSocketErrorCode) {
        guard !closeSent else { return }
        closeSent = true
        var data = channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        // Wait briefly for the client's close, then end the connection anyway.
        channel.writeAndFlush(frame).whenComplete { _ in
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension HTTPSWebSocketPushHandler: Sendable {}
