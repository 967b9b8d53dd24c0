import FuzzSupport
import STOQ

/// libFuzzer target: datagrams into a sans-IO server endpoint (header decoding, first-packet checks, ngtcp2).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDatagram(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    Endpoint.fuzzDatagram(bytes)
    return 0
}

@_cdecl("FuzzDatagram_main")
public func fuzzDatagramMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzDatagram)
}
