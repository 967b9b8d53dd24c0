import FuzzSupport
import STOQ

/// libFuzzer target: sealed private content (issue 15): the sealed content index (`STQE`) and
/// the content key wrapped for a reader (grant extension 1, version 2 tickets).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSealed(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    SealedIndex.fuzz(bytes)
    ReaderKeyEnvelope.fuzz(bytes)
    return 0
}

@_cdecl("FuzzSealed_main")
public func fuzzSealedMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzSealed)
}
