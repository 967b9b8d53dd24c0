import FuzzSupport
import STOQ

/// libFuzzer target: STOQ wire frames and core messages; the payloads of the upload (0x18–0x1B),
/// edge registry (0x1C–0x1F) and renewal (0x20–0x21) messages; and the ROUTING_GOSSIP payload on
/// its own (its adverts are deep inside a frame; fed directly, the fuzzer reaches them at once).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    STOQMessage.fuzz(input)
    RoutingGossipMessage.fuzz(input)
    RoutingAdvertMessage.fuzz(input)
    EdgeRegistryMessage.fuzz(input)
    RenewalMessage.fuzz(input)
    UploadMessage.fuzz(input)
    return 0
}

@_cdecl("FuzzWire_main")
public func fuzzWireMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzWire)
}
