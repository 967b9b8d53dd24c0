import FuzzSupport
import STOQ

/// libFuzzer target: STOQEdge name records and invalidations.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEdgeNames(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    NameRecord.fuzz(bytes)
    NameOwnerBinding.fuzz(bytes)
    return 0
}

@_cdecl("FuzzEdgeNames_main")
public func fuzzEdgeNamesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzEdgeNames)
}
