import STOQExchange

extension NodeRouter {
    /// The ``NodeService`` that answers ROUTING_GOSSIP (0x11) with this router (a router with
    /// ``security`` refuses it: unsigned gossip), for the node runtime to register beside its
    /// other services.
    package var gossipService: any NodeService { RoutingService(router: self) }

    /// The services of this router: ROUTING_GOSSIP (0x11) and signed ROUTING_ADVERTS (0x26).
    package var gossipServices: [any NodeService] { [RoutingService(router: self), SignedRoutingService(router: self)] }
}
