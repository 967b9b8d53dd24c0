import FuzzSupport
import STOQ

/// libFuzzer target: STOQ wire frames and core messages.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    STOQMessage.fuzz(fuzzInput(data, size))
    return 0
}

@_cdecl("FuzzWire_main")
public func fuzzWireMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzWire)
}
