import Foundation
import NIOCore
import NIOPosix

/// A user-space UDP forwarder on `[::1]` that delays every datagram by a fixed time in each
/// direction: a slow path for relay tests and benchmarks (a netem stand-in that needs no root).
///
/// One client: datagrams arriving on ``address`` go to the upstream after `delay`; datagrams from
/// the upstream go back, after `delay`, to the last client address seen.
public final class UDPDelayForwarder: Sendable {
    /// Where clients send (the slowed stand-in for the upstream).
    public let address: SocketAddress
    private let front: any Channel
    private let back: any Channel

    /// Shared between the two channels' handlers.
    ///
    /// `@unchecked Sendable`: `client` is guarded by `lock`; the channels are set once before the
    /// first datagram can arrive (the back channel is bound first, the front last).
    final class Route: @unchecked Sendable {
        let lock = NSLock()
        var client: SocketAddress?
        var front: (any Channel)?
        var back: (any Channel)?
        let upstream: SocketAddress
        let delay: TimeAmount
        init(upstream: SocketAddress, delay: TimeAmount) { self.upstream = upstream; self.delay = delay }
    }

    final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let route: Route
        let towardsUpstream: Bool
        init(route: Route, towardsUpstream: Bool) { self.route = route; self.towardsUpstream = towardsUpstream }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = Self.unwrapInboundIn(data)
            let route = self.route
            let target: SocketAddress?
            let channel: (any Channel)?
            if towardsUpstream {
                route.lock.withLock { route.client = envelope.remoteAddress }
                target = route.upstream
                channel = route.back
            } else {
                target = route.lock.withLock { route.client }
                channel = route.front
            }
            guard let target, let channel else { return }
            let bytes = envelope.data
            channel.eventLoop.scheduleTask(in: route.delay) {
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: bytes), promise: nil)
            }
        }
    }

    private init(address: SocketAddress, front: any Channel, back: any Channel) {
        self.address = address
        self.front = front
        self.back = back
    }

    /// Starts forwarding to `upstream` with `delay` each way.
    public static func start(upstream: SocketAddress, delay: TimeAmount, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> UDPDelayForwarder {
        let route = Route(upstream: upstream, delay: delay)
        // Whole datagrams of any size: on [::1] STOQ sends 65,488-byte datagrams (its path MTU),
        // and NIO's default 2048-byte receive buffer would cut them.
        let whole = FixedSizeRecvByteBufferAllocator(capacity: 65_536)
        let back = try await DatagramBootstrap(group: group)
            .channelOption(.recvAllocator, value: whole)
            .channelInitializer { $0.pipeline.addHandler(Forward(route: route, towardsUpstream: false)) }
            .bind(host: "::1", port: 0).get()
        route.back = back
        let front = try await DatagramBootstrap(group: group)
            .channelOption(.recvAllocator, value: whole)
            .channelInitializer { $0.pipeline.addHandler(Forward(route: route, towardsUpstream: true)) }
            .bind(host: "::1", port: 0).get()
        route.front = front
        return UDPDelayForwarder(address: front.localAddress!, front: front, back: back)
    }

    /// Stops forwarding.
    public func close() async {
        try? await front.close()
        try? await back.close()
    }
}
