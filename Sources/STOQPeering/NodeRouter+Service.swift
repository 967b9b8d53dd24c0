import STOQExchange

extension NodeRouter {
    /// The ``NodeService`` that answers ROUTING_GOSSIP (0x11) with this router, for the node
    /// runtime to register beside its other services.
    package var gossipService: any NodeService { RoutingService(router: self) }
}
