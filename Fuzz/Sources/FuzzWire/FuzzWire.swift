import FuzzSupport
import STOQ

/// libFuzzer target: STOQ wire frames and core messages, and the ROUTING_GOSSIP payload on its own
/// (its adverts are deep inside a frame; fed directly, the fuzzer reaches them at once), and the
/// upload messages (0x18–0x1B).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    STOQMessage.fuzz(input)
    RoutingGossipMessage.fuzz(input)
    UploadMessage.fuzz(input)
    return 0
}

@_cdecl("FuzzWire_main")
public func fuzzWireMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzWire)
}
