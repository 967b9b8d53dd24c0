import FuzzSupport
import STOQ

/// libFuzzer target: the edge's request frames over stoq/1 — name resolve/publish/invalidate
/// (with the signed records they carry) and HAVE/WANT bitfields.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEdgeProtocol(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    NameProtocol.fuzz(input)
    HaveProtocol.fuzz(input)
    return 0
}

@_cdecl("FuzzEdgeProtocol_main")
public func fuzzEdgeProtocolMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzEdgeProtocol)
}
